"""FastDistill run configuration: one frozen dataclass recorded per run (run_config.json).

The first stage records it; later stages of the same run read it back, so a run is replayable
from its folder and every stage sees the same settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

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
    """LoRA SFT of the text student on a run's export (TRL SFTTrainer), then base vs student on the dev split."""

    base_model_path: str = field(default="", metadata={
        "help": "HF folder, or folder holding gguf_file; empty = the embedded SmolLM2 GGUF"})
    gguf_file: str = field(default="", metadata={"help": "GGUF file name inside base_model_path"})
    device: str = field(default="cpu", metadata={"help": "training and eval device, e.g. cuda"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 (bf16 mixed precision) or float16"})
    steps: int = field(default=8, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=2, metadata={"help": "rows per step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "peak AdamW learning rate"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warmup share before cosine decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    max_length: int = field(default=384, metadata={"help": "tokens kept per row"})
    eval_max_new_tokens: int = field(default=64, metadata={"help": "greedy decode budget per dev answer"})
    seed: int = field(default=0, metadata={"help": "seeds LoRA init and data order"})
    cpu_threads: int = field(default=0, metadata={
        "help": "torch intra-op threads for training and eval decode; 0 = torch default, 1 is fastest on a busy CPU"})

    def __post_init__(self) -> None:
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        for name in ("steps", "batch_size", "lora_r", "lora_alpha", "max_length", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.gguf_file and not self.base_model_path:
            raise ValueError(f"gguf_file {self.gguf_file!r} needs base_model_path (the folder that holds it)")

