"""Reasoning models' think blocks: how to turn them off, and how to take them out of an answer.

Qwen3-style chat templates open a completion with `<think>...</think>` unless the template is
rendered with `enable_thinking=False`. Backends ask for that where the engine takes chat-template
arguments (`THINKING_OFF`), and every backend builds its `Completion` text through
`split_think_block`, so a think block that comes back anyway never reaches a parser; the raw text
stays in `Completion.extra["raw_text"]`.
"""

from __future__ import annotations

import re

THINKING_MODES = ("off", "on", "omit")
# Sent as `chat_template_kwargs` (vLLM, SGLang, llama-server) or passed to `apply_chat_template`.
THINKING_OFF = {"enable_thinking": False}
THINKING_ON = {"enable_thinking": True}

# A leading think block, possibly after whitespace; a template that pre-fills `<think>` in the prompt
# leaves only the closing tag in the completion, so the opening tag is optional; an opening tag
# anywhere but at the start means the block is not leading.
_LEADING_THINK = re.compile(r"\A\s*(?:<think>)?((?:(?!<think>).)*?)</think>\s*", re.DOTALL)


def chat_template_kwargs(mode: str) -> dict | None:
    """The chat-template arguments for a thinking mode; None for "omit" (send nothing, for servers
    that reject unknown request fields)."""
    if mode not in THINKING_MODES:
        raise ValueError(f"thinking must be one of {THINKING_MODES}, got {mode!r}")
    return {"off": THINKING_OFF, "on": THINKING_ON, "omit": None}[mode]


def split_think_block(text: str | None) -> tuple[str | None, dict]:
    """(answer, extra): the text without a leading think block, and, when one was cut, the raw text
    and the reasoning under `raw_text` / `reasoning`. Text without a block comes back unchanged."""
    if not text:
        return text, {}
    match = _LEADING_THINK.match(text)
    if match is None:
        return text, {}
    return text[match.end() :], {"raw_text": text, "reasoning": match.group(1).strip()}
