"""Fusion (SFT) config: which sources of which missions are mixed at which ratios, the LoRA policy
(`lora`: the shared `resources.training.spec.LoraTrainingSpec`), the guidance the eval uses and the
per-mission eval gate.

Dataclasses beside the code they configure (defaults + help + validation in `__post_init__`), and a
YAML loader whose errors name the bad value and what was expected. `configs/fusion.example.yaml`
is the shipped example.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from resources.training.spec import LoraTrainingSpec

SOURCE_TYPES = ("distill_chatml", "stage_a_summaries", "chatml_file")
GUIDANCE_CHOICES = ("best", "initial")


@dataclass(frozen=True)
class SourceConfig:
    name: str = field(metadata={"help": "unique name; keys the realised-ratio report"})
    type: str = field(metadata={"help": f"one of {SOURCE_TYPES}"})
    ratio: float = field(default=1.0, metadata={"help": "relative weight (> 0); normalised over non-empty sources"})
    path: str = field(default="", metadata={"help": "chatml_file only: a JSONL of {messages: [...]} rows"})
    hard_case_factor: int = field(
        default=1,
        metadata={
            "help": "rows marked hard_case (distill_chatml: label = fail and verdict = fail, or the Stage-B majority "
            "was wrong) count this many times in the source's pool (1 = off)"
        },
    )
    sample_without_replacement: bool = field(
        default=False,
        metadata={"help": "never upsample: a quota larger than the pool uses the pool once, and the report says so"},
    )

    def __post_init__(self) -> None:
        if (
            isinstance(self.hard_case_factor, bool)
            or not isinstance(self.hard_case_factor, int)
            or self.hard_case_factor < 1
        ):
            raise ValueError(
                f"source {self.name!r}: hard_case_factor must be an integer >= 1, got {self.hard_case_factor!r}"
            )
        if not isinstance(self.sample_without_replacement, bool):
            raise ValueError(
                f"source {self.name!r}: sample_without_replacement must be true or false, "
                f"got {self.sample_without_replacement!r}"
            )
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"source name must be a non-empty string, got {self.name!r}")
        if self.type not in SOURCE_TYPES:
            raise ValueError(f"source {self.name!r}: unknown type {self.type!r}, expected one of {SOURCE_TYPES}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not self.ratio > 0:
            raise ValueError(f"source {self.name!r}: ratio must be a number > 0, got {self.ratio!r}")
        if self.type == "chatml_file":
            if not self.path:
                raise ValueError(f"source {self.name!r}: type chatml_file needs a path")
            if not Path(self.path).is_file():
                raise ValueError(f"source {self.name!r}: chatml file {self.path!r} does not exist")
        elif self.path:
            raise ValueError(f"source {self.name!r}: path is only used by type chatml_file, not {self.type!r}")


@dataclass(frozen=True)
class EvalGateConfig:
    confidence: float = field(
        default=0.95,
        metadata={"help": "two-sided level of the paired bootstrap interval of (fused - base), per mission and metric"},
    )
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples (seeded with the fusion seed)"})
    min_improvement: float = field(
        default=0.0,
        metadata={
            "help": "a mission blocks when its interval's upper bound is below this: 0 = block only a regression "
            "that noise cannot explain; > 0 demands evidence that the student could be better"
        },
    )
    max_groups: int = field(default=0, metadata={"help": "held-out Stage-B groups per mission; 0 = all"})
    stage_a_images: int = field(default=4, metadata={"help": "held-out photos per mission for Stage-A format validity"})
    max_new_tokens: int = field(default=32, metadata={"help": "greedy decode budget per answer"})

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"eval.confidence must be in [0.5, 1), got {self.confidence!r}")
        if not -1 <= self.min_improvement <= 1:
            raise ValueError(f"eval.min_improvement must be in [-1, 1], got {self.min_improvement!r}")
        for name, low in (("n_bootstrap", 100), ("max_groups", 0), ("stage_a_images", 1), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"eval.{name} must be an integer >= {low}, got {value!r}")


def _default_sources() -> tuple[SourceConfig, ...]:
    return (
        SourceConfig(name="stageb_teacher", type="distill_chatml", ratio=0.5),
        SourceConfig(name="stage_a_summary", type="stage_a_summaries", ratio=0.5),
    )


@dataclass(frozen=True)
class FusionConfig:
    sources: tuple[SourceConfig, ...] = field(
        default_factory=_default_sources, metadata={"help": "chatml sources and their ratios"}
    )
    total_rows: int = field(
        default=0, metadata={"help": "rows in the mixed set; 0 = the sum of the non-empty sources' sizes"}
    )
    seed: int = field(default=0, metadata={"help": "seeds the mix (sampling and shuffle) and the bootstrap"})
    missions: dict = field(
        default_factory=dict,
        metadata={"help": "mission name -> relative weight of its rows; missions not named weigh 1; empty = all equal"},
    )
    guidance: str = field(
        default="best",
        metadata={
            "help": "Stage-B guidance for the eval prompts: best (fail if a mission has none) or initial "
            "(G0 + scaffold)"
        },
    )
    lora: LoraTrainingSpec = field(
        default_factory=LoraTrainingSpec,
        metadata={"help": "LoRA and optimiser of the SFT (resources.training.spec.LoraTrainingSpec)"},
    )
    eval: EvalGateConfig = field(default_factory=EvalGateConfig)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("fusion config needs at least one source")
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {dupes}")
        if self.guidance not in GUIDANCE_CHOICES:
            raise ValueError(f"guidance must be one of {GUIDANCE_CHOICES}, got {self.guidance!r}")
        if not isinstance(self.missions, dict):
            raise ValueError(f"missions must be a mapping of mission name -> weight, got {self.missions!r}")
        bad = {
            k: v
            for k, v in self.missions.items()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
        }
        if bad:
            raise ValueError(f"mission weights must be numbers > 0, got {bad}")
        if isinstance(self.total_rows, bool) or not isinstance(self.total_rows, int) or self.total_rows < 0:
            raise ValueError(f"total_rows must be an integer >= 0, got {self.total_rows!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}, expected some of {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    if cls is FusionConfig and values.get("missions") is None:
        values.pop("missions", None)
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e


# The earlier system's source keys (seed 000), mapped onto ours. `dataset: chat` + `train_jsonl` is a
# chatml file; its `template` and `mode` must be what our chatml path does (chatml, rows as given).
SEED_DATASETS = {"chat": "chatml_file"}
SEED_TEMPLATES = ("chatml",)
SEED_MODES = ("dense",)
UNIMPLEMENTED_SEED_FLAGS = ("augmentation_enabled", "curriculum_enabled")


def seed_source_keys(src: dict, where: str) -> dict:
    """A source block in the seed's keys (`dataset`, `train_jsonl`, `template`, `mode`,
    `augmentation_enabled`, `curriculum_enabled`) as ours; `name`, `ratio` and
    `sample_without_replacement` are the same keys. Flags we do not implement fail when true."""
    src = dict(src)
    for flag in UNIMPLEMENTED_SEED_FLAGS:
        value = src.pop(flag, False)
        if value is not False:
            raise ValueError(
                f"{where}: {flag}: {value!r} is not implemented by this fusion (it would be ignored); "
                f"set {flag}: false or remove it"
            )
    template = src.pop("template", "chatml")
    if template not in SEED_TEMPLATES:
        raise ValueError(f"{where}: template {template!r} is not supported, expected one of {SEED_TEMPLATES}")
    mode = src.pop("mode", "dense")
    if mode not in SEED_MODES:
        raise ValueError(
            f"{where}: mode {mode!r} is not supported, expected one of {SEED_MODES} (rows are trained as given)"
        )
    if "dataset" in src:
        dataset = src.pop("dataset")
        if dataset not in SEED_DATASETS:
            raise ValueError(
                f"{where}: dataset {dataset!r} is not supported, expected one of {sorted(SEED_DATASETS)}"
                f" or our `type` key (one of {SOURCE_TYPES})"
            )
        if "type" in src and src["type"] != SEED_DATASETS[dataset]:
            raise ValueError(
                f"{where}: dataset {dataset!r} means type {SEED_DATASETS[dataset]!r}, but type is {src['type']!r}"
            )
        src["type"] = SEED_DATASETS[dataset]
    if "train_jsonl" in src:
        if "path" in src:
            raise ValueError(f"{where}: give train_jsonl or path, not both")
        src["path"] = src.pop("train_jsonl")
    return src


def fusion_config_from_dict(data: dict, base_dir: Path | None = None) -> FusionConfig:
    """Build a FusionConfig; relative chatml_file paths resolve against `base_dir` (the YAML's folder)."""
    if not isinstance(data, dict):
        raise ValueError(f"fusion config must be a mapping, got {type(data).__name__}")
    data = dict(data)
    raw_sources = data.pop("sources", None)
    if raw_sources is not None:
        if not isinstance(raw_sources, (list, tuple)):
            raise ValueError(f"sources must be a list, got {type(raw_sources).__name__}")
        sources = []
        for i, src in enumerate(raw_sources):
            if isinstance(src, dict):
                src = seed_source_keys(src, f"sources[{i}]")
            if (
                isinstance(src, dict)
                and src.get("path")
                and base_dir is not None
                and not Path(src["path"]).is_absolute()
            ):
                src = {**src, "path": str(base_dir / src["path"])}
            sources.append(_build(SourceConfig, src, f"sources[{i}]"))
        data["sources"] = tuple(sources)
    if "lora" in data:
        data["lora"] = _build(LoraTrainingSpec, data["lora"], "lora")
    if "eval" in data:
        data["eval"] = _build(EvalGateConfig, data["eval"], "eval")
    return _build(FusionConfig, data, "fusion config")


def load_fusion_config(path: str | Path) -> FusionConfig:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fusion config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"fusion config {str(path)!r} is not valid YAML: {e}") from e
    return fusion_config_from_dict(data or {}, base_dir=path.parent)


@dataclass(frozen=True)
class FusionRunConfig:
    """Run config of `fused_sft_checkpoint` (the launchpad form is derived from this class)."""

    config_file: str = field(
        default="",
        metadata={"help": "fusion YAML (see configs/fusion.example.yaml); empty = the defaults of FusionConfig"},
    )
    max_steps: int | None = field(default=None, metadata={"help": "override lora.max_steps of the YAML"})
    seed: int | None = field(default=None, metadata={"help": "override the mix, training and bootstrap seeds"})
    guidance: str | None = field(default=None, metadata={"help": "override guidance: best or initial"})

    def __post_init__(self) -> None:
        if self.guidance is not None and self.guidance not in GUIDANCE_CHOICES:
            raise ValueError(f"guidance must be one of {GUIDANCE_CHOICES}, got {self.guidance!r}")

    def fusion_config(self) -> FusionConfig:
        base = load_fusion_config(self.config_file) if self.config_file else FusionConfig()
        data = base.to_dict()
        if self.max_steps is not None:
            data["lora"]["max_steps"] = self.max_steps
        if self.seed is not None:
            data["seed"] = data["lora"]["seed"] = self.seed
        if self.guidance is not None:
            data["guidance"] = self.guidance
        return fusion_config_from_dict(data)
