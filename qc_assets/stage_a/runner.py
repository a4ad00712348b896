"""Stage-A: summarise every usable photo of a mission, resumably, and write the records.

Each finished batch is appended (fsynced) to `summaries.jsonl`, keyed by the run key (model
fingerprint + prompt hash + decode params + the mission's image budget) and each image's path and
sha256. A backend that streams (an OpenAI-compatible server) gets every image at once through its
bounded in-flight pool, and each answer is appended as it finishes; `mode` and `batch_size` shape
only the local backends' batches. A re-run, after a crash or with new groups, summarises only images
that have no row under the current key. `records.jsonl` and `skipped.jsonl` are then rebuilt from
that log and replaced atomically, with `run.json` (the settings and truncation count the checks read).

The group sample (`pass_cap` / `fail_cap`, drawn with `sample_seed`) is not part of the key, so
drawing other groups summarises only photos that were never summarised; the decode `seed` is.
Every log row keeps the backend's `finish_reason`; an answer cut at `max_new_tokens` ("length") is
counted on its record (build.py) and by the `*_truncation_share` checks.

With `shards` > 1 the photos are split over shards by a stable hash (sharding.py): each shard keeps
its own log, and the merge folds them into `summaries.jsonl` and writes the same records a one-shard
run writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qc_assets.missions import DOMAINS, Mission
from qc_assets.stage_a import prompts
from qc_assets.stage_a.discovery import DEFAULT_GROUP_ID_PATTERN, NESTED_MODES, compile_group_id_pattern
from qc_assets.stage_a.sharding import SHARDING_MODES, StageAResult, merge_shards, plan_stage_a, run_shard
from resources.vlm import VisionDecode, VisionLanguageModel

MODES = ("per_group", "per_image")


PRODUCTION_MAX_NEW_TOKENS = 1024  # the seed's default (scripts/stage_a.sh): a full cabinet summary fits


@dataclass(frozen=True)
class StageAConfig:
    """Stage-A's one config class: the asset's run config is derived from it (qc_assets/run_config.py)."""

    mode: str = field(
        default="per_group",
        metadata={"help": "per_group: batches never mix groups; per_image: flat image batches (local backends)"},
    )
    batch_size: int = field(default=8, metadata={"help": "images per generate call (local backends)"})
    pass_cap: int | None = field(
        default=None, metadata={"help": "max pass groups (drawn with sample_seed); none = all"}
    )
    fail_cap: int | None = field(
        default=None, metadata={"help": "max fail groups (drawn with sample_seed); none = all"}
    )
    sample_seed: int = field(
        default=42,
        metadata={"help": "draws the pass/fail caps; not in the resume key, so a new draw summarises only new photos"},
    )
    seed: int = field(default=42, metadata={"help": "decode seed (sampled decoding); part of the resume key"})
    max_new_tokens: int = field(
        default=PRODUCTION_MAX_NEW_TOKENS,
        metadata={"help": "summary length budget in tokens; an answer cut by it is counted as truncated"},
    )
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (the setting for regression checks)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling when temperature > 0"})
    repetition_penalty: float = field(default=1.05, metadata={"help": "discourages looping summaries"})
    max_truncated_share: float = field(
        default=0.01,
        metadata={"help": "stage_a_truncation_share warns above this share of summaries cut at max_new_tokens"},
    )
    max_truncated_share_blocking: float = field(
        default=0.10, metadata={"help": "stage_a_truncation_share fails (blocking downstream) above this share"}
    )
    group_id_pattern: str = field(
        default=DEFAULT_GROUP_ID_PATTERN,
        metadata={
            "help": "regex on a group folder's name; capture group 1 is the group id, a name that does not match "
            "is its own id"
        },
    )
    nested: str = field(
        default="include",
        metadata={"help": "photos in sub-folders of a group folder: include (part of the group) or skip (listed)"},
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "bbu | rru: the domain knowledge pack (stage_a/packs/<dataset>.md); none = the mission's domain"
        },
    )
    prompt_profile: str = field(
        default=prompts.DEFAULT_PROFILE, metadata={"help": f"summary prompt profile, one of {sorted(prompts.PROFILES)}"}
    )
    postprocess: bool = field(
        default=False,
        metadata={
            "help": "clean summaries (junk prefix, repeats, punctuation, one line); the raw text stays in the log"
        },
    )
    add_gt_fail_reason: bool = field(
        default=False,
        metadata={"help": "attach reviewers' fail reasons from excel_path to fail records as gt_fail_reason_text"},
    )
    excel_path: str | None = field(default=None, metadata={"help": "the reviewers' .xlsx (first sheet)"})
    excel_group_column: str = field(default="group_id", metadata={"help": "header of the group id column"})
    excel_reason_column: str = field(default="fail_reason", metadata={"help": "header of the fail reason column"})
    shards: int = field(
        default=1,
        metadata={
            "help": "parallel shard steps (each in the gpu pool: one GPU or worker each); the records equal one "
            "shard's whatever the count"
        },
    )
    sharding_mode: str = field(
        default="per_group",
        metadata={
            "help": "per_group: a shard takes whole groups (hash of the group id); per_image: single photos (hash of "
            "the photo's path)"
        },
    )
    verify_inputs: bool = field(
        default=False, metadata={"help": "shard 0 logs the first batch's image hashes, patch grids and token counts"}
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        _ = self.decode  # validates the decode settings now, not mid-run
        for name in ("max_truncated_share", "max_truncated_share_blocking"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_truncated_share_blocking < self.max_truncated_share:
            raise ValueError(
                f"max_truncated_share_blocking ({self.max_truncated_share_blocking}) must be >= "
                f"max_truncated_share ({self.max_truncated_share})"
            )
        compile_group_id_pattern(self.group_id_pattern)
        if self.nested not in NESTED_MODES:
            raise ValueError(f"nested must be one of {NESTED_MODES}, got {self.nested!r}")
        if self.dataset is not None and self.dataset not in DOMAINS:
            raise ValueError(f"dataset must be one of {DOMAINS} or unset, got {self.dataset!r}")
        if self.prompt_profile not in prompts.PROFILES:
            raise ValueError(f"prompt_profile must be one of {sorted(prompts.PROFILES)}, got {self.prompt_profile!r}")
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, got {self.shards}")
        if self.sharding_mode not in SHARDING_MODES:
            raise ValueError(f"sharding_mode must be one of {SHARDING_MODES}, got {self.sharding_mode!r}")
        if self.add_gt_fail_reason and not self.excel_path:
            raise ValueError("add_gt_fail_reason needs excel_path (the reviewers' .xlsx export)")

    @property
    def decode(self) -> VisionDecode:
        return VisionDecode(self.max_new_tokens, self.temperature, self.top_p, self.repetition_penalty, self.seed)

    def to_dict(self) -> dict:
        return asdict(self)


def run_stage_a(
    images_root: str | Path,
    mission: Mission,
    vlm: VisionLanguageModel,
    config: StageAConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    inbox: bool = False,
) -> StageAResult:
    """Labelled groups, or with `inbox=True` the unlabelled inbox groups (label None, never capped:
    every inbox group needs a verdict). Write the two kinds to different `out_dir`s.

    In one process: the plan, then each of `config.shards` shards in turn, then the merge (the
    Dagster assets run the shards as parallel steps instead; qc_assets/stage_a/sharding.py)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_stage_a(images_root, mission, vlm.fingerprint, config, out_dir, inbox=inbox)
    kept = sum(len(g.images) for g in plan.groups)
    log(
        f"{mission.name}: {len(plan.groups)} groups, {kept} images in {plan.shards} shard(s) "
        f"({plan.sharding_mode}), run key {plan.run_key}"
    )
    for shard in range(plan.shards):
        run_shard(plan, shard, mission, vlm, config, out_dir, log)
    return merge_shards(plan, config, out_dir, vlm.fingerprint, mission, log)
