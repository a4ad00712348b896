"""An `OutputConstraint` in the transformers backend's form: forced prefixes, then one line.

Two parts: (1) choose one of the constraint's `prefixes` by the model's own likelihood of each,
greedily or sampled with the row's seed; (2) generate the line after the chosen prefix, its first
token one whose text starts with a character matching `line_start` (when set), and stop at the first
newline. Scoring whole prefixes avoids token-by-token prefix surgery that would break on tokenizers
that merge characters differently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList


class PaddingScorer(Protocol):
    """What prefix scoring needs of a backend (TransformersChatLLM has both); named here so this module
    does not import the backend that imports it."""

    model: torch.nn.Module

    def left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]: ...


class PrefixChooser:
    def __init__(self, llm: PaddingScorer, allowed: Sequence[Sequence[int]]) -> None:
        if not allowed or any(len(a) == 0 for a in allowed):
            raise ValueError(f"allowed prefixes must be non-empty token lists, got {allowed!r}")
        self.llm = llm
        self.allowed = [list(a) for a in allowed]

    def scores(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """(len(prompts), len(allowed)) log-likelihood of each prefix after each prompt."""
        columns = []
        for prefix in self.allowed:
            ids, mask = self.llm.left_pad([list(p) + prefix for p in prompts])
            # Explicit positions: without them left-padded rows would start at position > 0.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.llm.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=len(prefix) + 1
                ).logits
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = torch.tensor(prefix, device=logprobs.device).expand(len(prompts), -1)
            columns.append(logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1))
        return torch.stack(columns, dim=1).cpu()

    def choose(self, prompts: Sequence[Sequence[int]], temperature: float, seed: int) -> list[list[int]]:
        scores = self.scores(prompts)
        if temperature > 0:
            generator = torch.Generator().manual_seed(seed)
            picks = torch.multinomial(torch.softmax(scores / temperature, dim=-1), 1, generator=generator)[:, 0]
        else:
            picks = scores.argmax(dim=-1)
        return [list(self.allowed[int(i)]) for i in picks]


class _AllowOnlyFirstToken(LogitsProcessor):
    def __init__(self, start_len: int, allowed: torch.Tensor) -> None:
        self.start_len = start_len
        self.allowed = allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.start_len:
            return scores
        allowed = self.allowed[self.allowed < scores.shape[-1]].to(scores.device)
        masked = torch.full_like(scores, -float("inf"))
        masked[:, allowed] = scores[:, allowed]
        return masked


class _StopAtNewline(StoppingCriteria):
    def __init__(self, newline_ids: torch.Tensor) -> None:
        self.newline_ids = newline_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.isin(input_ids[:, -1], self.newline_ids.to(input_ids.device))


@dataclass(frozen=True)
class LineConstraint:
    """One line after the prefix: its first token from `allowed_first` (any when None), then up to a
    token in `newline_ids`."""

    newline_ids: frozenset[int]
    allowed_first: frozenset[int] | None

    @classmethod
    def for_tokenizer(cls, tokenizer, line_start: str | None) -> LineConstraint:
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        special = set(tokenizer.all_special_ids)
        newline = {i for i, s in enumerate(pieces) if "\n" in s}
        if line_start is None:
            return cls(newline_ids=frozenset(newline), allowed_first=None)
        # Only whole-character tokens qualify: a byte-fallback piece (decoded as U+FFFD) could be the
        # start of another character, and checking that would need a multi-token automaton.
        first = re.compile(line_start)
        allowed = {i for i, s in enumerate(pieces) if i not in special and s and first.fullmatch(s[0])}
        if not allowed:
            raise ValueError(
                f"the tokenizer has no token that starts with a character matching {line_start!r}; "
                "cannot constrain the line"
            )
        return cls(newline_ids=frozenset(newline), allowed_first=frozenset(allowed))

    def processors(self, start_len: int) -> tuple[LogitsProcessorList, StoppingCriteriaList]:
        newline = torch.tensor(sorted(self.newline_ids), dtype=torch.long)
        first = (
            []
            if self.allowed_first is None
            else [_AllowOnlyFirstToken(start_len, torch.tensor(sorted(self.allowed_first), dtype=torch.long))]
        )
        return LogitsProcessorList(first), StoppingCriteriaList([_StopAtNewline(newline)])
