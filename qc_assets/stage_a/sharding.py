"""Stage-A in shards: plan -> N shards (any order, any worker, any host) -> one canonical merge.

- `plan_stage_a` discovers and samples the mission once, fixes the run key and writes `plan.json`
  (atomically) under `<out_dir>/shards/`; it loads no model.
- `run_shard` summarises the plan's photos that hash to its shard and are not yet in any log,
  appending to its own log (`summaries.jsonl` itself when there is one shard, else
  `summaries.shard-<i>-of-<n>.jsonl`), then writes its marker `shard-<i>-of-<n>.json` (atomically).
- `merge_shards` refuses to start unless every shard's marker names this plan, folds the shard logs
  into `summaries.jsonl`, and rebuilds `records.jsonl`, `skipped.jsonl` and `run.json` from the plan's
  groups in discovery order, so the records equal a one-shard run's, whatever the shard count.

Assignment is a stable hash (sha256) of the group id (`per_group`) or of the photo's path relative
to the mission folder (`per_image`): it depends on neither the worker nor the order shards run in.
`config` is always the stage's `StageAConfig` (runner.py, which imports this module: not imported
here, so the two modules form no cycle). Resume is per photo: every log of the mission (the main
one and any shard's, of any shard count) is read before a shard starts, so a photo summarised once
under the run key is never summarised again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qc_assets.missions import Mission
from qc_assets.stage_a import prompts
from qc_assets.stage_a.build import build_records
from qc_assets.stage_a.discovery import Group, ImageFile, Skipped, discover
from qc_assets.stage_a.generate import describe, key_for, run_key, summarise
from qc_assets.stage_a.gt_reasons import attach_fail_reasons, read_fail_reasons
from qc_assets.stage_a.records import is_degenerate
from qc_assets.stage_a.sampling import sample_groups
from resources.store import append_jsonl, atomic_write_json, atomic_write_jsonl, iter_jsonl
from resources.vlm import VisionLanguageModel, VisionOutput, VisionPrompt

SHARDING_MODES = ("per_group", "per_image")
SHARD_DIR = "shards"
MAIN_LOG = "summaries.jsonl"


class ShardNotFinished(RuntimeError):
    """The merge found a shard without a finished marker for this plan."""


def shard_of(key: str, shards: int) -> int:
    """A stable shard for a key (a group id or an image path): the same on every host and Python run."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % shards


def assign(group: Group, image: ImageFile, shards: int, sharding_mode: str) -> int:
    if sharding_mode not in SHARDING_MODES:
        raise ValueError(f"sharding_mode must be one of {SHARDING_MODES}, got {sharding_mode!r}")
    return shard_of(group.group_id if sharding_mode == "per_group" else image.path, shards)


def shard_log(out_dir: Path, shard: int, shards: int) -> Path:
    return out_dir / (MAIN_LOG if shards == 1 else f"summaries.shard-{shard}-of-{shards}.jsonl")


def marker_path(out_dir: Path, shard: int, shards: int) -> Path:
    return out_dir / SHARD_DIR / f"shard-{shard}-of-{shards}.json"


def read_done(out_dir: Path, key: str) -> dict:
    """(image, sha256) -> log row under `key`, from the main log and every shard log of any shard count."""
    done = {}
    for path in [out_dir / MAIN_LOG, *sorted(out_dir.glob("summaries.shard-*.jsonl"))]:
        done.update({(r["image"], r["sha256"]): r for r in iter_jsonl(path) if r["run_key"] == key})
    return done


@dataclass
class StageAPlan:
    mission: str
    mission_dir: str
    inbox: bool
    run_key: str
    prompt_hash: str
    shards: int
    sharding_mode: str
    groups: list[Group]  # kept groups, discovery order: the records' canonical order
    skipped: list[Skipped]
    discovered_images: int
    plan_id: str = ""

    def items(self, shard: int) -> list[tuple[Group, ImageFile]]:
        return [
            (g, img)
            for g in self.groups
            for img in g.images
            if assign(g, img, self.shards, self.sharding_mode) == shard
        ]

    def to_json(self) -> dict:
        groups = [
            {
                "label": g.label,
                "group_id": g.group_id,
                "folders": list(g.folders),
                "images": [[i.path, i.sha256, i.width, i.height] for i in g.images],
            }
            for g in self.groups
        ]
        return {
            "mission": self.mission,
            "mission_dir": self.mission_dir,
            "inbox": self.inbox,
            "run_key": self.run_key,
            "prompt_hash": self.prompt_hash,
            "shards": self.shards,
            "sharding_mode": self.sharding_mode,
            "groups": groups,
            "skipped": [[s.path, s.reason] for s in self.skipped],
            "discovered_images": self.discovered_images,
        }

    @classmethod
    def from_json(cls, raw: dict) -> StageAPlan:
        groups = [
            Group(
                raw["mission"],
                g["label"],
                g["group_id"],
                tuple(ImageFile(*i) for i in g["images"]),
                tuple(g["folders"]),
            )
            for g in raw["groups"]
        ]
        plan = cls(
            raw["mission"],
            raw["mission_dir"],
            raw["inbox"],
            raw["run_key"],
            raw["prompt_hash"],
            raw["shards"],
            raw["sharding_mode"],
            groups,
            [Skipped(*s) for s in raw["skipped"]],
            raw["discovered_images"],
        )
        plan.plan_id = raw["plan_id"]
        return plan


def plan_path(out_dir: Path) -> Path:
    return Path(out_dir) / SHARD_DIR / "plan.json"


def plan_stage_a(
    images_root: str | Path, mission: Mission, fingerprint: str, config, out_dir: str | Path, inbox: bool = False
) -> StageAPlan:
    """Discover, sample and key the mission (`fingerprint`: the model's, see `run_key`); write `plan.json`
    and drop the markers of earlier plans. Loads no model."""
    out_dir = Path(out_dir)
    if inbox and config.add_gt_fail_reason:
        raise ValueError(
            "inbox summaries take no ground-truth fail reasons (inbox groups have no reviewer "
            "decision yet): set add_gt_fail_reason: false"
        )
    if config.add_gt_fail_reason:  # read before any model call: a wrong path or header fails in seconds
        read_fail_reasons(config.excel_path, config.excel_group_column, config.excel_reason_column)
    found = discover(
        images_root, mission.name, inbox=inbox, group_id_pattern=config.group_id_pattern, nested=config.nested
    )
    if inbox:
        if config.pass_cap is not None or config.fail_cap is not None:
            raise ValueError(
                f"inbox summaries take no caps (every inbox group needs a verdict), got "
                f"pass_cap={config.pass_cap}, fail_cap={config.fail_cap}"
            )
        kept, left_out = list(found.groups), []
    else:
        kept, left_out = sample_groups(found.groups, config.pass_cap, config.fail_cap, config.sample_seed)
    skipped = list(found.skipped) + [
        Skipped(img.path, f"not sampled (cap, sample_seed {config.sample_seed})") for g in left_out for img in g.images
    ]
    prompt_spec = prompts.build_prompt(mission, config.dataset, config.prompt_profile)
    key = key_for(fingerprint, mission, config.decode, prompt_spec.hash)
    plan = StageAPlan(
        mission.name,
        str(found.mission_dir),
        inbox,
        key,
        prompt_spec.hash,
        config.shards,
        config.sharding_mode,
        kept,
        skipped,
        found.image_count,
    )
    raw = plan.to_json()
    plan.plan_id = hashlib.sha256(json.dumps(raw, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    for old in (out_dir / SHARD_DIR).glob("shard-*.json"):  # a marker speaks for the plan it was written under
        old.unlink()
    atomic_write_json(plan_path(out_dir), {**raw, "plan_id": plan.plan_id})
    return plan


def load_plan(out_dir: str | Path) -> StageAPlan:
    path = plan_path(Path(out_dir))
    if not path.exists():
        raise FileNotFoundError(f"no Stage-A plan at {path}: the plan step writes it before any shard runs")
    return StageAPlan.from_json(json.loads(path.read_text(encoding="utf-8")))


@dataclass
class ShardResult:
    shard: int
    shards: int
    assigned: int  # photos of the plan that hash to this shard
    summarised_now: int
    reused: int
    seconds: float
    device: str = ""

    def to_json(self, plan_id: str) -> dict:
        return {
            "plan_id": plan_id,
            "shard": self.shard,
            "shards": self.shards,
            "assigned": self.assigned,
            "summarised_now": self.summarised_now,
            "reused": self.reused,
            "seconds": round(self.seconds, 4),
            "device": self.device,
        }


def run_shard(
    plan: StageAPlan,
    shard: int,
    mission: Mission,
    vlm: VisionLanguageModel,
    config,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    device: str = "",
) -> ShardResult:
    """Summarise this shard's photos that no log holds yet; then mark the shard finished."""
    out_dir = Path(out_dir)
    if not 0 <= shard < plan.shards:
        raise ValueError(f"shard must be in [0, {plan.shards}), got {shard}")
    prompt_spec = prompts.build_prompt(mission, config.dataset, config.prompt_profile)
    key = run_key(vlm, mission, config.decode, prompt_spec.hash)
    if key != plan.run_key:  # another model or prompt than the plan's: its rows would never be merged
        raise ValueError(
            f"shard {shard} computes run key {key}, the plan has {plan.run_key}: the shard's model "
            f"({vlm.fingerprint}) or settings differ from the plan step's"
        )
    mine = plan.items(shard)
    done = read_done(out_dir, key)
    todo = [(g, img) for g, img in mine if (img.path, img.sha256) not in done]
    log(
        f"{mission.name} shard {shard}/{plan.shards} ({plan.sharding_mode}): {len(mine)} of "
        f"{sum(len(g.images) for g in plan.groups)} images; {len(mine) - len(todo)} already summarised, "
        f"{len(todo)} to do ({describe(vlm, config)}, max_pixels {mission.max_pixels}, "
        f"max_new_tokens {config.max_new_tokens}{', device ' + device if device else ''})"
    )
    log_path = shard_log(out_dir, shard, plan.shards)
    mission_dir = Path(plan.mission_dir)

    def prompt(img: ImageFile) -> VisionPrompt:
        return VisionPrompt(str(mission_dir / img.path), prompt_spec.system, prompt_spec.user, mission.max_pixels)

    def save(items, outputs: list[VisionOutput], seconds: list[float]) -> None:
        # batch_seconds: the batch's wall time (local backends) or the request's own latency (streamed)
        append_jsonl(
            log_path,
            [
                {
                    "run_key": key,
                    "image": img.path,
                    "sha256": img.sha256,
                    "label": g.label,
                    "group_id": g.group_id,
                    "summary": out.text,
                    "prompt_tokens": out.prompt_tokens,
                    "completion_tokens": out.completion_tokens,
                    "finish_reason": out.finish_reason,
                    "batch_seconds": round(sec, 4),
                    "shard": shard,
                }
                for (g, img), out, sec in zip(items, outputs, seconds, strict=True)
            ],
        )

    def verify(items, outputs: list[VisionOutput]) -> None:
        for line in verify_lines(items, outputs, mission.max_pixels):
            log(f"verify_inputs: {line}")

    first = verify if config.verify_inputs and shard == 0 else None
    seconds = summarise(vlm, todo, config, prompt, save, log, first) if todo else 0.0
    result = ShardResult(shard, plan.shards, len(mine), len(todo), len(mine) - len(todo), seconds, device)
    atomic_write_json(marker_path(out_dir, shard, plan.shards), result.to_json(plan.plan_id))
    return result


def vision_grid(width: int, height: int, max_pixels: int, factor: int = 32) -> tuple[int, int]:
    """The (rows, cols) of 16-px patches Qwen3-VL's processor resizes a photo to (its smart_resize:
    sides rounded to multiples of `factor` = patch 16 x merge 2, area at most `max_pixels`)."""
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = (height * width / max_pixels) ** 0.5
        h = max(factor, int(height / beta // factor) * factor)
        w = max(factor, int(width / beta // factor) * factor)
    return h // 16, w // 16


def verify_lines(items, outputs: list[VisionOutput], max_pixels: int) -> list[str]:
    """The seed's verify_inputs: per photo of the first batch, its hash, patch grid and token counts."""
    lines = []
    for (g, img), out in zip(items, outputs, strict=True):
        rows, cols = vision_grid(img.width, img.height, max_pixels)
        lines.append(
            f"{g.key}/{img.path} sha256 {img.sha256[:16]} size {img.width}x{img.height} grid 1x{rows}x{cols} "
            f"prompt_tokens {out.prompt_tokens} completion_tokens {out.completion_tokens}"
        )
    return lines


@dataclass
class StageAResult:
    records: list[dict]
    skipped: list[Skipped]
    discovered_images: int
    summarised_now: int
    reused: int
    generate_seconds: float  # summed over shards: the model time the photos took
    run_key: str
    degenerate: int
    truncated: int = 0  # summarised photos whose answer was cut at max_new_tokens
    completion_tokens: list[int] = field(default_factory=list)  # per summarised photo, for the histogram
    postprocess_rules: dict[str, int] = field(default_factory=dict)  # rule -> photos it changed
    gt_reasons: dict = field(default_factory=dict)  # attached, fail_without_reason, unmatched_sheet_ids
    prompt: prompts.StageAPrompt | None = None
    shard_results: list[dict] = field(default_factory=list)  # each shard's marker

    @property
    def images_per_second(self) -> float:
        return self.summarised_now / self.generate_seconds if self.generate_seconds else 0.0

    @property
    def summaries(self) -> int:
        return len(self.completion_tokens)

    @property
    def truncated_share(self) -> float:
        return self.truncated / self.summaries if self.summaries else 0.0


def finished_shards(plan: StageAPlan, out_dir: Path) -> list[dict]:
    """Every shard's marker for this plan; ShardNotFinished naming the shards that have none."""
    markers, missing = [], []
    for shard in range(plan.shards):
        path = marker_path(out_dir, shard, plan.shards)
        marker = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        if marker is None or marker["plan_id"] != plan.plan_id:
            missing.append(shard)
        else:
            markers.append(marker)
    if missing:
        raise ShardNotFinished(
            f"{plan.mission}: shards {missing} of {plan.shards} have not finished plan "
            f"{plan.plan_id}; the merge reads only finished shards"
        )
    return markers


def fold_shard_logs(out_dir: Path, shards: int) -> int:
    """Append the finished shard logs' rows to the main log (each (run key, image, sha256) once, so a
    fold cut short is finished by the next one), then remove them. Returns the rows appended.

    Only this plan's shard logs: the log of a shard of another shard count whose merge never ran (a
    crashed run) may still be written by that run's retry, so it stays, and `read_done` keeps reading it."""
    if shards == 1:
        return 0  # the one shard wrote the main log itself
    main = out_dir / MAIN_LOG
    seen = {(r["run_key"], r["image"], r["sha256"]) for r in iter_jsonl(main)}
    appended = 0
    for shard in range(shards):
        path = shard_log(out_dir, shard, shards)
        rows = [r for r in iter_jsonl(path) if (r["run_key"], r["image"], r["sha256"]) not in seen]
        appended += append_jsonl(main, rows)
        seen.update((r["run_key"], r["image"], r["sha256"]) for r in rows)
        path.unlink(missing_ok=True)
    return appended


def merge_shards(
    plan: StageAPlan,
    config,
    out_dir: str | Path,
    fingerprint: str,
    mission: Mission,
    log: Callable[[str], None] = print,
) -> StageAResult:
    """The canonical records from finished shards, written atomically (records, skipped, run.json)."""
    out_dir = Path(out_dir)
    markers = finished_shards(plan, out_dir)
    fold_shard_logs(out_dir, plan.shards)
    done = read_done(out_dir, plan.run_key)
    missing = [img.path for g in plan.groups for img in g.images if (img.path, img.sha256) not in done]
    if missing:  # a marker without its rows: the log was removed or edited after the shard finished
        raise ShardNotFinished(
            f"{plan.mission}: {len(missing)} planned photos have no summary under run key "
            f"{plan.run_key} although every shard finished, e.g. {missing[:3]}"
        )
    prompt_spec = prompts.build_prompt(mission, config.dataset, config.prompt_profile)
    provenance = {
        "model_fingerprint": fingerprint,
        "prompt_hash": prompt_spec.hash,
        "prompt_profile": prompt_spec.profile,
        "dataset": prompt_spec.dataset,
        "decode": config.decode.as_dict(),
        "postprocess": config.postprocess,
        "run_key": plan.run_key,
    }
    built = build_records(plan.groups, done, provenance, config.postprocess)
    records, gt = built.records, {}
    if config.add_gt_fail_reason:
        reasons = read_fail_reasons(config.excel_path, config.excel_group_column, config.excel_reason_column)
        attached = attach_fail_reasons(records, reasons)
        gt = {
            "attached": attached.attached,
            "fail_without_reason": attached.fail_without_reason,
            "unmatched_sheet_ids": attached.unmatched_sheet_ids,
        }
    skipped = plan.skipped + built.empty
    atomic_write_jsonl(out_dir / "records.jsonl", records)
    atomic_write_jsonl(out_dir / "skipped.jsonl", [{"path": s.path, "reason": s.reason} for s in skipped])
    now = sum(m["summarised_now"] for m in markers)
    total = sum(len(g.images) for g in plan.groups)
    degenerate = sum(is_degenerate(t) for r in records for t in r["per_image"].values())
    result = StageAResult(
        records,
        skipped,
        plan.discovered_images,
        now,
        total - now,
        sum(m["seconds"] for m in markers),
        plan.run_key,
        degenerate,
        built.truncated,
        built.completion_tokens,
        dict(built.rules_fired),
        gt,
        prompt_spec,
        markers,
    )
    # what the checks need and the run config does not reach: the thresholds this run was held to
    atomic_write_json(
        out_dir / "run.json",
        {
            "run_key": plan.run_key,
            "config": config.to_dict(),
            "summaries": result.summaries,
            "truncated": result.truncated,
            "truncated_share": round(result.truncated_share, 6),
            "max_new_tokens": config.max_new_tokens,
            "max_truncated_share": config.max_truncated_share,
            "max_truncated_share_blocking": config.max_truncated_share_blocking,
            "plan_id": plan.plan_id,
            "shards": markers,
        },
    )
    if result.truncated:
        log(f"{result.truncated}/{result.summaries} summaries were cut at max_new_tokens={config.max_new_tokens}")
    return result
