"""The Stage-B verdict contract: two lines, parsed strictly.

Line 1 is exactly `通过` or `不通过` (surrounding whitespace allowed); line 2 is `理由:` or `理由：`
followed by a non-empty reason. Anything else is `format_ok=False, verdict=None`. Lines are compared
whole, never searched: `通过` is a substring of `不通过`, and the earlier system matched the word
"assistant" anywhere in the text.

The same contract as a decoding constraint (`VERDICT_CONSTRAINT`), in the form each engine family
applies: a regex (vLLM / SGLang structured outputs), a GBNF grammar (llama.cpp) or forced prefixes
plus a first-character rule for the reason (transformers). Constrained decoding emits the canonical
ASCII colon plus a space; the parser also accepts the full-width `：` in free text. The reason must
start with a CJK ideograph (U+4E00..U+9FFF): the parser requires a Chinese reason, and a first
character that is neither blank nor Latin also rules out an empty reason and leaked role words at its
start. The backends apply the constraint they are given and know nothing of verdicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resources.llm import OutputConstraint

PASS_LINE = "通过"
FAIL_LINE = "不通过"
REASON_PREFIXES = ("理由:", "理由：")
CJK_FIRST, CJK_LAST = "\u4e00", "\u9fff"
CJK_CLASS = f"[{CJK_FIRST}-{CJK_LAST}]"
_LINE_TO_VERDICT = {PASS_LINE: "pass", FAIL_LINE: "fail"}
_VERDICT_TO_LINE = {v: k for k, v in _LINE_TO_VERDICT.items()}

# Chat-template leakage: a reason that names a role or a special token is a broken answer.
_ROLE_WORDS = re.compile(r"(?i)(?<![a-z])(assistant|user|system)(?![a-z])|<\|im_(start|end)\|>|<\|endoftext\|>")
_CJK = re.compile(CJK_CLASS)

# Literal characters rather than \u escapes: every engine's regex/GBNF dialect reads UTF-8 literally.
VERDICT_REGEX = f"({PASS_LINE}|{FAIL_LINE})\\n理由: {CJK_CLASS}[^\\n]*"
VERDICT_GBNF = f"""root ::= verdict "\\n理由: " reason
verdict ::= "{PASS_LINE}" | "{FAIL_LINE}"
reason ::= {CJK_CLASS} [^\\n]*
"""
# The transformers backend forces one of these, then lets the model write the reason up to a newline.
VERDICT_PREFIXES: tuple[str, ...] = tuple(f"{line}\n理由: " for line in (PASS_LINE, FAIL_LINE))
VERDICT_CONSTRAINT = OutputConstraint(
    regex=VERDICT_REGEX, gbnf=VERDICT_GBNF, prefixes=VERDICT_PREFIXES, line_start=CJK_CLASS
)


@dataclass(frozen=True)
class Verdict:
    verdict: str | None  # "pass" | "fail" | None when the text breaks the contract
    reason: str | None
    format_ok: bool
    raw: str | None


def _bad(raw: str | None) -> Verdict:
    return Verdict(verdict=None, reason=None, format_ok=False, raw=raw)


def parse_verdict(text: str | None) -> Verdict:
    """Parse a two-line verdict strictly.

    >>> parse_verdict("不通过\\n理由: 缺少挡风板").verdict
    'fail'
    >>> parse_verdict("不通过").format_ok
    False
    """
    if text is None or not isinstance(text, str):
        return _bad(text if isinstance(text, str) else None)
    lines = text.strip().replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if len(lines) != 2:
        return _bad(text)
    first, second = lines[0].strip(), lines[1].strip()
    verdict = _LINE_TO_VERDICT.get(first)
    if verdict is None:
        return _bad(text)
    prefix = next((p for p in REASON_PREFIXES if second.startswith(p)), None)
    if prefix is None:
        return _bad(text)
    reason = second[len(prefix) :].strip()
    if not reason or _ROLE_WORDS.search(reason) or not _CJK.search(reason):
        return _bad(text)
    if re.sub(r"[\W_]+", "", reason) in _LINE_TO_VERDICT:
        # "理由: 通过。" restates a verdict instead of giving a reason.
        return _bad(text)
    return Verdict(verdict=verdict, reason=reason, format_ok=True, raw=text)


def format_verdict(verdict: str, reason: str) -> str:
    """The canonical two-line answer; raises ValueError if it would not parse back."""
    if verdict not in _VERDICT_TO_LINE:
        raise ValueError(f"verdict must be 'pass' or 'fail', got {verdict!r}")
    reason = (reason or "").strip()
    text = f"{_VERDICT_TO_LINE[verdict]}\n理由: {reason}"
    parsed = parse_verdict(text)
    if not parsed.format_ok:
        raise ValueError(f"reason {reason!r} breaks the verdict contract (one line, Chinese, no role words)")
    return text
