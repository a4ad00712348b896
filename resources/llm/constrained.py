"""The verdict contract as decoding constraints, one per engine family.

Line 1 is exactly `通过` or `不通过`; line 2 is `理由: <non-empty text>`. Constrained decoding emits
the canonical ASCII colon plus a space; the parser also accepts the full-width `：` in free text.
The reason must start with a CJK ideograph (U+4E00..U+9FFF): the Stage-B parser requires a Chinese
reason, and a first character that is neither blank nor Latin also rules out an empty reason and
leaked role words at its start.
Engines get the same contract in the syntax they understand: a regex (vLLM / SGLang structured
outputs), a GBNF grammar (llama.cpp server) or a forced prefix (transformers, see
`VERDICT_PREFIXES`).
"""

from __future__ import annotations

VERDICT_FIRST_LINES: tuple[str, ...] = ("通过", "不通过")
REASON_PREFIX = "理由: "
# The transformers backend forces one of these, then lets the model write the reason up to a newline.
VERDICT_PREFIXES: tuple[str, ...] = tuple(f"{line}\n{REASON_PREFIX}" for line in VERDICT_FIRST_LINES)

CJK_FIRST, CJK_LAST = "\u4e00", "\u9fff"
# Literal characters rather than \u escapes: every engine's regex/GBNF dialect reads UTF-8 literally.
VERDICT_REGEX = f"(通过|不通过)\\n理由: [{CJK_FIRST}-{CJK_LAST}][^\\n]*"

VERDICT_GBNF = f"""root ::= verdict "\\n理由: " reason
verdict ::= "通过" | "不通过"
reason ::= [{CJK_FIRST}-{CJK_LAST}] [^\\n]*
"""

# Engines that take a grammar instead of a regex look the regex up here; an unknown regex is an error
# rather than a silently unconstrained request.
REGEX_TO_GBNF: dict[str, str] = {VERDICT_REGEX: VERDICT_GBNF}


def reason_may_start_with(piece: str) -> bool:
    """Whether decoded text `piece` can open a reason under VERDICT_REGEX."""
    return bool(piece) and CJK_FIRST <= piece[0] <= CJK_LAST


def gbnf_for_regex(regex: str) -> str:
    try:
        return REGEX_TO_GBNF[regex]
    except KeyError:
        raise ValueError(
            f"no GBNF grammar is registered for regex {regex!r}; known regexes: {sorted(REGEX_TO_GBNF)}"
        ) from None


def prefixes_for_regex(regex: str) -> tuple[str, ...]:
    """Forced prefixes the transformers backend uses to honour `regex` (only the verdict contract)."""
    if regex != VERDICT_REGEX:
        raise ValueError(
            f"the transformers backend can only constrain to VERDICT_REGEX {VERDICT_REGEX!r}, got {regex!r}"
        )
    return VERDICT_PREFIXES
