"""FastDistill run configuration: `FastDistillSettings`, one frozen dataclass recorded per run
(run_config.json), and `TextStudentConfig`, the student stage's settings.

The first stage records it; later stages of the same run read it back, so a run is replayable
from its folder and every stage sees the same settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from qc_assets.fastdistill.prompts import RECIPES
from resources.llm import DecodeParams
from resources.training.spec import ATTENTION_PROJECTIONS, LoraTrainingSpec

SOURCES = ("synthetic", "wikisql", "spider", "records")


@dataclass(frozen=True)
class FastDistillSettings:
    """One FastDistill run's data, teacher, gate, keep-rule and check settings (recorded in run_config.json)."""

    # data
    source: str = field(default="synthetic", metadata={"help": f"input data: one of {SOURCES}"})
    seed: int = field(default=0, metadata={"help": "data generation, split and decode seed"})
    per_template: int = field(default=1, metadata={"help": "synthetic: questions per template and language"})
    dev_fraction: float = field(default=0.25, metadata={"help": "share of inputs held out as the student's dev split"})
    max_train: int = field(default=0, metadata={"help": "cap on train inputs sent to the teacher (0 = all)"})
    max_dev: int = field(default=0, metadata={"help": "cap on held-out dev inputs for the student eval (0 = all)"})
    data_path: str = field(
        default="", metadata={"help": "loaders: questions file (wikisql .jsonl, spider .json, records .jsonl)"}
    )
    tables_path: str = field(default="", metadata={"help": "wikisql: tables .jsonl"})
    db_path: str = field(default="", metadata={"help": "wikisql: .db file; spider: database/ folder"})
    # teacher
    recipe: str = field(
        default="sql", metadata={"help": f"teacher prompt: one of {RECIPES} (rationale = Distilling Step-by-Step)"}
    )
    temperature: float = field(default=0.0, metadata={"help": "teacher sampling temperature; 0 = greedy"})
    top_p: float = field(default=1.0, metadata={"help": "teacher nucleus sampling, in (0, 1]"})
    max_new_tokens: int = field(default=64, metadata={"help": "teacher decode budget per answer"})
    n: int = field(default=1, metadata={"help": "samples per input (Data Distillation); seeds seed + i"})
    max_in_flight: int = field(default=1, metadata={"help": "teacher requests in flight at once"})
    chunk_size: int = field(default=4, metadata={"help": "inputs per teacher chunk (the cache is written per chunk)"})
    max_tokens_in_flight: int = field(
        default=65_536, metadata={"help": "token budget (prompt + max_new_tokens) of the requests in flight"}
    )
    max_attempts: int = field(default=2, metadata={"help": "tries per teacher request before it is recorded failed"})
    teacher_from_run: str = field(
        default="",
        metadata={
            "help": "Born-Again: this earlier run's merged student is the teacher (on the teacher resource's device)"
        },
    )
    # gates
    max_sql_chars: int = field(default=2000, metadata={"help": "rule filter: longer SQL is rejected"})
    exec_timeout_s: float = field(default=2.0, metadata={"help": "seconds one SQL may run in the sandbox"})
    exec_max_rows: int = field(default=10_000, metadata={"help": "rows one SQL may return in the sandbox"})
    exec_workers: int = field(default=1, metadata={"help": "parallel SQL sandbox workers"})
    judge: bool = field(default=False, metadata={"help": "add an LLM judge score (the teacher judges)"})
    judge_max_in_flight: int = field(default=1, metadata={"help": "judge requests in flight at once"})
    # keep rules
    require_exec_pass: bool = field(default=True, metadata={"help": "keep only SQL that executes"})
    require_gold_match: bool = field(default=True, metadata={"help": "keep only SQL whose result equals gold's"})
    min_score: float = field(default=0.0, metadata={"help": "keep only candidates scoring at least this"})
    max_per_input: int = field(default=1, metadata={"help": "distinct kept answers per question"})
    # asset check thresholds
    min_keep_rate: float = field(default=0.05, metadata={"help": "keep_rate check: kept / candidates >= this"})
    min_exec_pass_rate: float = field(
        default=0.2, metadata={"help": "exec_pass_rate check: share of candidates that execute >= this"}
    )

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source != "synthetic" and not self.data_path:
            raise ValueError(f"source={self.source!r} needs data_path")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        for name in ("max_train", "max_dev"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_keep_rate", "min_exec_pass_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        self.decode_params()

    def decode_params(self) -> DecodeParams:
        return DecodeParams(
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=self.seed, n=self.n
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FastDistillSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown run config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


def _text_student_lora() -> LoraTrainingSpec:
    # every decoder block's attention projections of the small text student
    return LoraTrainingSpec(
        last_k=0, projections=ATTENTION_PROJECTIONS, max_steps=8, batch_size=2, learning_rate=2e-3, max_length=384
    )


@dataclass(frozen=True)
class TextStudentConfig:
    """LoRA SFT of the text student on a run's export (TRL SFTTrainer), then base vs student on the dev split.
    Which base model, device, dtype and threads: the `text_student` resource (QC_TEXT_STUDENT_*)."""

    lora: LoraTrainingSpec = field(
        default_factory=_text_student_lora,
        metadata={
            "help": "LoRA and optimiser (resources.training.spec.LoraTrainingSpec); lora.seed also seeds the eval"
        },
    )
    eval_max_new_tokens: int = field(default=64, metadata={"help": "greedy decode budget per dev answer"})

    def __post_init__(self) -> None:
        if not isinstance(self.lora, LoraTrainingSpec):
            raise ValueError(f"lora must be a LoraTrainingSpec, got {type(self.lora).__name__}")
        if (
            isinstance(self.eval_max_new_tokens, bool)
            or not isinstance(self.eval_max_new_tokens, int)
            or self.eval_max_new_tokens < 1
        ):
            raise ValueError(f"eval_max_new_tokens must be an integer >= 1, got {self.eval_max_new_tokens!r}")
