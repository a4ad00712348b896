"""GRPO reward functions, TRL style: `(completions, **columns) -> list[float]`, one float per completion.

The rewards use the Stage-B verdict parser, so training and production read answers the same way:
- `format_reward`: 0.2 for a well-formed two-line answer whose reason does not copy one of the row's
  `summaries` (the contract: cite 图片_i, never copy a summary; `reason_copies_summary`), else 0.
- `label_reward`: 1.0 when the answer is well formed and its verdict equals the row's `label`, else 0;
  a malformed answer earns nothing for its verdict (otherwise the policy learns that a bare `不通过`
  pays).
Completions may be plain strings (standard format) or `[{"role": "assistant", "content": ...}]`
(conversational format); a completion that is None (a failed generation) scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from qc_assets.stage_b.filters import reason_copies_summary
from qc_assets.stage_b.verdict import parse_verdict

LABELS = ("pass", "fail")


def completion_text(completion) -> str | None:
    """The answer text of a TRL completion in either format.

    >>> completion_text([{"role": "assistant", "content": "通过"}])
    '通过'
    """
    if completion is None or isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        if isinstance(content, list):  # multimodal content parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else None
    raise ValueError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


class FormatReward:
    """`weight` for a well-formed two-line verdict, 0 otherwise.

    >>> FormatReward(0.2)(["不通过\\n理由: 缺少挡风板", "不通过"])
    [0.2, 0.0]
    """

    def __init__(self, weight: float = 0.2):
        if not weight > 0:
            raise ValueError(f"format reward weight must be > 0, got {weight}")
        self.weight = weight
        self.__name__ = "format_reward"

    def __call__(
        self, completions: Sequence, summaries: Sequence[Sequence[str]] | None = None, **columns
    ) -> list[float]:
        # without a `summaries` column there is nothing a reason could copy
        rows = summaries if summaries is not None else [()] * len(completions)
        if len(rows) != len(completions):
            raise ValueError(f"{len(rows)} summary lists for {len(completions)} completions")
        out = []
        for c, texts in zip(completions, rows, strict=True):
            parsed = parse_verdict(completion_text(c))
            out.append(self.weight if parsed.format_ok and not reason_copies_summary(parsed.reason, texts) else 0.0)
        return out


class LabelReward:
    """`weight` when a well-formed answer's verdict equals the row's label; gated on format.

    >>> LabelReward(1.0)(["通过\\n理由: 接地线连接正常", "通过", "不通过\\n理由: 缺少接地线"],
    ...                  label=["pass", "pass", "pass"])
    [1.0, 0.0, 0.0]
    """

    def __init__(self, weight: float = 1.0):
        if not weight > 0:
            raise ValueError(f"label reward weight must be > 0, got {weight}")
        self.weight = weight
        self.__name__ = "label_reward"

    def __call__(self, completions: Sequence, label: Sequence[str] | None = None, **columns) -> list[float]:
        if label is None:
            raise ValueError("label_reward needs the dataset's `label` column")
        if len(label) != len(completions):
            raise ValueError(f"{len(label)} labels for {len(completions)} completions")
        bad = sorted({lab for lab in label if lab not in LABELS})
        if bad:
            raise ValueError(f"labels must be one of {LABELS}, got {bad}")
        out = []
        for c, lab in zip(completions, label, strict=True):
            parsed = parse_verdict(completion_text(c))
            out.append(self.weight if parsed.format_ok and parsed.verdict == lab else 0.0)
        return out


format_reward = FormatReward(0.2)
label_reward = LabelReward(1.0)


def default_reward_funcs(label_weight: float = 1.0, format_weight: float = 0.2) -> list:
    """[label_reward, format_reward], summed by TRL with unit weights; the proposal's defaults are
    1.0 label + 0.2 format."""
    return [LabelReward(label_weight), FormatReward(format_weight)]
