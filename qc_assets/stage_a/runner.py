"""Stage-A: summarise every usable photo of a mission, resumably, and write the records.

Each finished batch is appended (fsynced) to `summaries.jsonl`, keyed by the run key (model
fingerprint + prompt hash + decode params + the mission's image budget) and each image's path and
sha256. A backend that streams (an OpenAI-compatible server) gets every image at once through its
bounded in-flight pool, and each answer is appended as it finishes; `mode` and `batch_size` shape
only the local backends' batches. A re-run, after a crash or with new groups, summarises only images
that have no row under the current key. `records.jsonl` and `skipped.jsonl` are then rebuilt from
that log and replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qc_assets.missions import Mission
from qc_assets.stage_a import prompts
from qc_assets.stage_a.discovery import Group, ImageFile, Skipped, discover
from qc_assets.stage_a.records import CONTRACT_VERSION, image_keys, is_degenerate, record_id
from qc_assets.stage_a.sampling import sample_groups
from resources.store import append_jsonl, atomic_write_jsonl, iter_jsonl
from resources.vlm import (StreamingVisionModel, VisionDecode, VisionLanguageModel, VisionOutput, VisionPrompt,
                          VLMRequestError)

MODES = ("per_group", "per_image")


@dataclass(frozen=True)
class StageAConfig:
    """Stage-A's one config class: the asset's run config is derived from it (qc_assets/run_config.py)."""

    mode: str = field(default="per_group", metadata={
        "help": "per_group: batches never mix groups; per_image: flat image batches (local backends)"})
    batch_size: int = field(default=8, metadata={"help": "images per generate call (local backends)"})
    pass_cap: int | None = field(default=None, metadata={"help": "max pass groups (seeded sample); none = all"})
    fail_cap: int | None = field(default=None, metadata={"help": "max fail groups (seeded sample); none = all"})
    seed: int = field(default=42, metadata={"help": "seeds the group caps and sampled decoding"})
    max_new_tokens: int = field(default=48, metadata={"help": "summary length budget in tokens"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (the setting for regression checks)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling when temperature > 0"})
    repetition_penalty: float = field(default=1.05, metadata={"help": "discourages looping summaries"})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.decode  # validates the decode settings now, not mid-run

    @property
    def decode(self) -> VisionDecode:
        return VisionDecode(self.max_new_tokens, self.temperature, self.top_p, self.repetition_penalty, self.seed)


@dataclass
class StageAResult:
    records: list[dict]
    skipped: list[Skipped]
    discovered_images: int
    summarised_now: int
    reused: int
    generate_seconds: float
    run_key: str
    degenerate: int

    @property
    def images_per_second(self) -> float:
        return self.summarised_now / self.generate_seconds if self.generate_seconds else 0.0


def run_key(vlm: VisionLanguageModel, mission: Mission, decode: VisionDecode) -> str:
    """Everything that changes a summary: weights, prompt, decode params and the image budget."""
    payload = json.dumps([vlm.fingerprint, prompts.prompt_hash(mission), decode.as_dict(), mission.max_pixels],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
    every inbox group needs a verdict). Write the two kinds to different `out_dir`s."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = discover(images_root, mission.name, inbox=inbox)
    if inbox:
        if config.pass_cap is not None or config.fail_cap is not None:
            raise ValueError(f"inbox summaries take no caps (every inbox group needs a verdict), got "
                             f"pass_cap={config.pass_cap}, fail_cap={config.fail_cap}")
        kept, left_out = list(found.groups), []
    else:
        kept, left_out = sample_groups(found.groups, config.pass_cap, config.fail_cap, config.seed)
    skipped = list(found.skipped)
    skipped += [Skipped(img.path, f"not sampled (cap, seed {config.seed})") for g in left_out for img in g.images]

    key = run_key(vlm, mission, config.decode)
    log_path = out_dir / "summaries.jsonl"
    done = {(row["image"], row["sha256"]): row for row in iter_jsonl(log_path) if row["run_key"] == key}
    todo = [(g, img) for g in kept for img in g.images if (img.path, img.sha256) not in done]
    total = sum(len(g.images) for g in kept)
    shape = (f"streamed, {vlm.max_in_flight} in flight" if isinstance(vlm, StreamingVisionModel)
             else f"{config.mode}, batch {config.batch_size}")
    log(f"{mission.name}: {len(kept)} groups, {total} images; {total - len(todo)} already summarised, "
        f"{len(todo)} to do ({shape}, max_pixels {mission.max_pixels})")

    system, user = prompts.system_prompt(), prompts.user_prompt(mission)

    def prompt(img: ImageFile) -> VisionPrompt:
        return VisionPrompt(str(found.mission_dir / img.path), system, user, mission.max_pixels)

    def save(items: list[tuple[Group, ImageFile]], outputs: list[VisionOutput], seconds: list[float]) -> None:
        # batch_seconds: the batch's wall time (local backends) or the request's own latency (streamed)
        rows = [
            {"run_key": key, "image": img.path, "sha256": img.sha256, "label": g.label, "group_id": g.group_id,
             "summary": out.text, "prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
             "finish_reason": out.finish_reason, "batch_seconds": round(sec, 4)}
            for (g, img), out, sec in zip(items, outputs, seconds, strict=True)
        ]
        append_jsonl(log_path, rows)
        done.update({(r["image"], r["sha256"]): r for r in rows})

    if isinstance(vlm, StreamingVisionModel):
        seconds = _stream(vlm, todo, config, prompt, save, log)
    else:
        seconds = 0.0
        for n_batch, batch in enumerate(_batches(todo, config), start=1):
            started = time.perf_counter()
            outputs = vlm.generate([prompt(img) for _, img in batch], config.decode)
            elapsed = time.perf_counter() - started
            seconds += elapsed
            save(batch, outputs, [elapsed] * len(batch))
            log(f"batch {n_batch}: {len(batch)} images in {elapsed:.2f}s")

    records, empty = _build_records(kept, done, mission, vlm, config, key)
    skipped += empty
    atomic_write_jsonl(out_dir / "records.jsonl", records)
    atomic_write_jsonl(out_dir / "skipped.jsonl", [{"path": s.path, "reason": s.reason} for s in skipped])
    degenerate = sum(is_degenerate(t) for r in records for t in r["per_image"].values())
    return StageAResult(records, skipped, found.image_count, len(todo), total - len(todo), seconds, key, degenerate)


def _stream(vlm: StreamingVisionModel, todo, config: StageAConfig, prompt, save, log) -> float:
    """Every image through the backend's bounded in-flight pool; each answer is saved as it finishes.

    Requests that still fail after the backend's retries are collected and raised together at the
    end, after every other answer has been saved, so a re-run asks only for those.
    """
    started = time.perf_counter()
    failures: list[tuple[str, str]] = []
    answered = 0
    for finished in vlm.stream([prompt(img) for _, img in todo], config.decode):
        ok = [r for r in finished if r.error is None]
        for r in finished:
            if r.error is not None:
                failures.append((todo[r.index][1].path, r.error))
                log(f"failed: {todo[r.index][1].path}: {r.error}")
        if ok:  # what finished together is saved together: one fsync
            save([todo[r.index] for r in ok], [r.output for r in ok], [r.seconds for r in ok])
        before, answered = answered, answered + len(finished)
        if answered // 50 > before // 50 or answered == len(todo):
            log(f"{answered}/{len(todo)} answers, {len(failures)} failed, {time.perf_counter() - started:.1f}s")
    if failures:
        raise VLMRequestError(failures, len(todo))
    return time.perf_counter() - started


def _batches(todo: list[tuple[Group, ImageFile]], config: StageAConfig) -> Iterator[list]:
    if config.mode == "per_image":
        for i in range(0, len(todo), config.batch_size):
            yield todo[i : i + config.batch_size]
        return
    by_group: dict[str, list] = {}
    for item in todo:
        by_group.setdefault(item[0].key, []).append(item)
    for items in by_group.values():
        for i in range(0, len(items), config.batch_size):
            yield items[i : i + config.batch_size]


def _build_records(kept, done, mission, vlm, config, key) -> tuple[list[dict], list[Skipped]]:
    """One record per kept group; an image whose summary came back empty is listed, not kept."""
    records, empty = [], []
    for g in kept:
        pairs = []
        for img in g.images:
            text = done[(img.path, img.sha256)]["summary"].strip()
            if text:
                pairs.append((img, text))
            else:
                empty.append(Skipped(img.path, "model returned an empty summary"))
        if not pairs:
            continue
        records.append({
            "group_id": g.group_id,
            "mission": g.mission,
            "label": g.label,
            "images": [img.path for img, _ in pairs],
            "per_image": dict(zip(image_keys(len(pairs)), (text for _, text in pairs))),
            "record_id": record_id(g.mission, g.label, g.group_id),
            "image_sha256": [img.sha256 for img, _ in pairs],
            "model_fingerprint": vlm.fingerprint,
            "prompt_hash": prompts.prompt_hash(mission),
            "decode": config.decode.as_dict(),
            "run_key": key,
            "contract_version": CONTRACT_VERSION,
        })
    return records, empty
