"""Optional cleanup of Stage-A summaries after generation (the seed's RRU/BBU postprocess).

Each rule is a plain function `text -> text`; `clean` applies them in order and names the ones that
changed something, so the asset can count every rule that fired. The raw model text stays in the
resume log (`summaries.jsonl`); only the records carry the cleaned text.
"""

from __future__ import annotations

import re
import unicodedata

_CJK = "\u4e00-\u9fff"
# The seed's right-padding symptom: an English run such as `CoreApplication...` before the Chinese
# summary. A long Latin word is the sign; short tokens (BBU, RRU, GPS) are domain words and stay.
_JUNK_PREFIX = re.compile(rf"^[^{_CJK}]*?[A-Za-z]{{8,}}[^{_CJK}]*(?=[{_CJK}])")
# A phrase that starts with a Chinese character, repeated back to back (optionally with a separator).
_REPEAT = re.compile(rf"([{_CJK}][^\n]{{1,30}}?)(?:[，,、；;\s]*\1)+")
_TO_FULL_WIDTH = {",": "，", ";": "；", ":": "：", "!": "！", "?": "？", "(": "（", ")": "）"}
_HALF_AFTER_CJK = re.compile(rf"(?<=[{_CJK}])([,;:!?()])|([()])(?=[{_CJK}])")
_FULL_WIDTH_ALNUM = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")


def strip_junk_prefix(text: str) -> str:
    return _JUNK_PREFIX.sub("", text, count=1)


def collapse_repeats(text: str) -> str:
    return _REPEAT.sub(r"\1", text)


def normalise_punctuation(text: str) -> str:
    """Half-width punctuation next to Chinese becomes full-width; full-width letters and digits half-width."""
    text = _FULL_WIDTH_ALNUM.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    return _HALF_AFTER_CJK.sub(lambda m: _TO_FULL_WIDTH[m.group(1) or m.group(2)], text)


def one_line(text: str) -> str:
    """The first non-empty line: the summary contract is one line, a second one is chatter."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


RULES = {
    "junk_prefix": strip_junk_prefix,
    "repeated_phrase": collapse_repeats,
    "punctuation": normalise_punctuation,
    "one_line": one_line,
}


def clean(text: str) -> tuple[str, list[str]]:
    """(cleaned text, names of the rules that changed it), rules applied in RULES order."""
    fired = []
    for name, rule in RULES.items():
        after = rule(text)
        if after != text:
            fired.append(name)
        text = after
    return text.strip(), fired
