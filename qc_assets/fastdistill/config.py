"""FastDistill run configuration: one frozen dataclass recorded per run (run_config.json).

The first stage records it; later stages of the same run read it back, so a run is replayable
from its folder and every stage sees the same settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from qc_assets.fastdistill.prompts import RECIPES
from resources.llm import DecodeParams

SOURCES = ("synthetic", "wikisql", "spider", "records")


@dataclass(frozen=True)
class RunConfig:
    # data
    source: str = "synthetic"  # synthetic | wikisql | spider | records
    seed: int = 0  # data generation, split and decode seed
    per_template: int = 1  # synthetic: questions per template and language
    dev_fraction: float = 0.25
    max_train: int = 0  # cap on train inputs sent to the teacher (0 = all)
    max_dev: int = 0  # cap on held-out dev inputs for student eval (0 = all)
    data_path: str = ""  # loaders: questions file (wikisql .jsonl, spider .json, records .jsonl)
    tables_path: str = ""  # wikisql: tables .jsonl
    db_path: str = ""  # wikisql: .db file; spider: database/ folder
    # teacher
    recipe: str = "sql"  # sql | rationale (Distilling Step-by-Step)
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    n: int = 1  # samples per input (Data Distillation)
    max_in_flight: int = 1
    chunk_size: int = 4
    max_tokens_in_flight: int = 65_536
    max_attempts: int = 2
    teacher_from_run: str = ""  # Born-Again: use this earlier run's student as the teacher
    # gates
    max_sql_chars: int = 2000
    exec_timeout_s: float = 2.0
    exec_max_rows: int = 10_000
    exec_workers: int = 1
    judge: bool = False
    judge_max_in_flight: int = 1
    # keep rules
    require_exec_pass: bool = True
    require_gold_match: bool = True
    min_score: float = 0.0
    max_per_input: int = 1
    # asset check thresholds
    min_keep_rate: float = 0.05
    min_exec_pass_rate: float = 0.2

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
        return DecodeParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                            seed=self.seed, n=self.n)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown run config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class StudentConfig:
    steps: int = 8
    batch_size: int = 2
    learning_rate: float = 2e-3
    lora_r: int = 8
    lora_alpha: int = 16
    max_length: int = 384
    eval_max_new_tokens: int = 64
    seed: int = 0
    cpu_threads: int = 0  # torch intra-op threads for training and eval decode; 0 = torch default

    def __post_init__(self) -> None:
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        for name in ("steps", "batch_size", "lora_r", "lora_alpha", "max_length", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
