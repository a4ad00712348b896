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
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qc_assets.missions import DOMAINS, Mission
from qc_assets.stage_a import prompts
from qc_assets.stage_a.discovery import (DEFAULT_GROUP_ID_PATTERN, NESTED_MODES, Group, ImageFile, Skipped,
                                        compile_group_id_pattern, discover)
from qc_assets.stage_a.build import build_records
from qc_assets.stage_a.gt_reasons import attach_fail_reasons, read_fail_reasons
from qc_assets.stage_a.records import is_degenerate
from qc_assets.stage_a.sampling import sample_groups
from resources.store import append_jsonl, atomic_write_json, atomic_write_jsonl, iter_jsonl
from resources.vlm import (StreamingVisionModel, VisionDecode, VisionLanguageModel, VisionOutput, VisionPrompt,
                          VLMRequestError)

MODES = ("per_group", "per_image")


PRODUCTION_MAX_NEW_TOKENS = 1024  # the seed's default (scripts/stage_a.sh): a full cabinet summary fits


@dataclass(frozen=True)
class StageAConfig:
    """Stage-A's one config class: the asset's run config is derived from it (qc_assets/run_config.py)."""

    mode: str = field(default="per_group", metadata={
        "help": "per_group: batches never mix groups; per_image: flat image batches (local backends)"})
    batch_size: int = field(default=8, metadata={"help": "images per generate call (local backends)"})
    pass_cap: int | None = field(default=None, metadata={"help": "max pass groups (drawn with sample_seed); none = all"})
    fail_cap: int | None = field(default=None, metadata={"help": "max fail groups (drawn with sample_seed); none = all"})
    sample_seed: int = field(default=42, metadata={
        "help": "draws the pass/fail caps; not in the resume key, so a new draw summarises only new photos"})
    seed: int = field(default=42, metadata={"help": "decode seed (sampled decoding); part of the resume key"})
    max_new_tokens: int = field(default=PRODUCTION_MAX_NEW_TOKENS, metadata={
        "help": "summary length budget in tokens; an answer cut by it is counted as truncated"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (the setting for regression checks)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling when temperature > 0"})
    repetition_penalty: float = field(default=1.05, metadata={"help": "discourages looping summaries"})
    max_truncated_share: float = field(default=0.01, metadata={
        "help": "stage_a_truncation_share warns above this share of summaries cut at max_new_tokens"})
    max_truncated_share_blocking: float = field(default=0.10, metadata={
        "help": "stage_a_truncation_share fails (blocking downstream) above this share"})
    group_id_pattern: str = field(default=DEFAULT_GROUP_ID_PATTERN, metadata={
        "help": "regex on a group folder's name; capture group 1 is the group id, a name that does not match "
                "is its own id"})
    nested: str = field(default="include", metadata={
        "help": "photos in sub-folders of a group folder: include (part of the group) or skip (listed)"})
    dataset: str | None = field(default=None, metadata={
        "help": "bbu | rru: the domain knowledge pack (stage_a/packs/<dataset>.md); none = the mission's domain"})
    prompt_profile: str = field(default=prompts.DEFAULT_PROFILE, metadata={
        "help": f"summary prompt profile, one of {sorted(prompts.PROFILES)}"})
    postprocess: bool = field(default=False, metadata={
        "help": "clean summaries (junk prefix, repeats, punctuation, one line); the raw text stays in the log"})
    add_gt_fail_reason: bool = field(default=False, metadata={
        "help": "attach reviewers' fail reasons from excel_path to fail records as gt_fail_reason_text"})
    excel_path: str | None = field(default=None, metadata={"help": "the reviewers' .xlsx (first sheet)"})
    excel_group_column: str = field(default="group_id", metadata={"help": "header of the group id column"})
    excel_reason_column: str = field(default="fail_reason", metadata={"help": "header of the fail reason column"})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.decode  # validates the decode settings now, not mid-run
        for name in ("max_truncated_share", "max_truncated_share_blocking"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_truncated_share_blocking < self.max_truncated_share:
            raise ValueError(f"max_truncated_share_blocking ({self.max_truncated_share_blocking}) must be >= "
                             f"max_truncated_share ({self.max_truncated_share})")
        compile_group_id_pattern(self.group_id_pattern)
        if self.nested not in NESTED_MODES:
            raise ValueError(f"nested must be one of {NESTED_MODES}, got {self.nested!r}")
        if self.dataset is not None and self.dataset not in DOMAINS:
            raise ValueError(f"dataset must be one of {DOMAINS} or unset, got {self.dataset!r}")
        if self.prompt_profile not in prompts.PROFILES:
            raise ValueError(f"prompt_profile must be one of {sorted(prompts.PROFILES)}, got {self.prompt_profile!r}")
        if self.add_gt_fail_reason and not self.excel_path:
            raise ValueError("add_gt_fail_reason needs excel_path (the reviewers' .xlsx export)")

    @property
    def decode(self) -> VisionDecode:
        return VisionDecode(self.max_new_tokens, self.temperature, self.top_p, self.repetition_penalty, self.seed)

    def to_dict(self) -> dict:
        return asdict(self)


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
    truncated: int = 0  # summarised photos whose answer was cut at max_new_tokens
    completion_tokens: list[int] = field(default_factory=list)  # per summarised photo, for the histogram
    postprocess_rules: dict[str, int] = field(default_factory=dict)  # rule -> photos it changed
    gt_reasons: dict = field(default_factory=dict)  # attached, fail_without_reason, unmatched_sheet_ids
    prompt: prompts.StageAPrompt | None = None

    @property
    def images_per_second(self) -> float:
        return self.summarised_now / self.generate_seconds if self.generate_seconds else 0.0

    @property
    def summaries(self) -> int:
        return len(self.completion_tokens)

    @property
    def truncated_share(self) -> float:
        return self.truncated / self.summaries if self.summaries else 0.0


def run_key(vlm: VisionLanguageModel, mission: Mission, decode: VisionDecode, prompt_hash: str) -> str:
    """Everything that changes a summary: weights, prompt, decode params and the image budget.

    The group sample (`sample_seed`) is not in it: drawing other groups reuses every photo already done.
    """
    payload = json.dumps([vlm.fingerprint, prompt_hash, decode.as_dict(), mission.max_pixels], sort_keys=True)
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
    if inbox and config.add_gt_fail_reason:
        raise ValueError("inbox summaries take no ground-truth fail reasons (inbox groups have no reviewer "
                         "decision yet): set add_gt_fail_reason: false")
    # read before any model call, so a wrong path or header fails in seconds, not after the photos
    reasons = (read_fail_reasons(config.excel_path, config.excel_group_column, config.excel_reason_column)
               if config.add_gt_fail_reason else None)
    found = discover(images_root, mission.name, inbox=inbox, group_id_pattern=config.group_id_pattern,
                     nested=config.nested)
    if inbox:
        if config.pass_cap is not None or config.fail_cap is not None:
            raise ValueError(f"inbox summaries take no caps (every inbox group needs a verdict), got "
                             f"pass_cap={config.pass_cap}, fail_cap={config.fail_cap}")
        kept, left_out = list(found.groups), []
    else:
        kept, left_out = sample_groups(found.groups, config.pass_cap, config.fail_cap, config.sample_seed)
    skipped = list(found.skipped)
    skipped += [Skipped(img.path, f"not sampled (cap, sample_seed {config.sample_seed})")
                for g in left_out for img in g.images]

    prompt_spec = prompts.build_prompt(mission, config.dataset, config.prompt_profile)
    key = run_key(vlm, mission, config.decode, prompt_spec.hash)
    log_path = out_dir / "summaries.jsonl"
    done = {(row["image"], row["sha256"]): row for row in iter_jsonl(log_path) if row["run_key"] == key}
    todo = [(g, img) for g in kept for img in g.images if (img.path, img.sha256) not in done]
    total = sum(len(g.images) for g in kept)
    shape = (f"streamed, {vlm.max_in_flight} in flight" if isinstance(vlm, StreamingVisionModel)
             else f"{config.mode}, batch {config.batch_size}")
    log(f"{mission.name}: {len(kept)} groups, {total} images; {total - len(todo)} already summarised, "
        f"{len(todo)} to do ({shape}, max_pixels {mission.max_pixels}, max_new_tokens {config.max_new_tokens})")

    system, user = prompt_spec.system, prompt_spec.user

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

    provenance = {"model_fingerprint": vlm.fingerprint, "prompt_hash": prompt_spec.hash,
                  "prompt_profile": prompt_spec.profile, "dataset": prompt_spec.dataset,
                  "decode": config.decode.as_dict(), "postprocess": config.postprocess, "run_key": key}
    built = build_records(kept, done, provenance, config.postprocess)
    records = built.records
    gt = {}
    if reasons is not None:
        attached = attach_fail_reasons(records, reasons)
        gt = {"attached": attached.attached, "fail_without_reason": attached.fail_without_reason,
              "unmatched_sheet_ids": attached.unmatched_sheet_ids}
    skipped += built.empty
    atomic_write_jsonl(out_dir / "records.jsonl", records)
    atomic_write_jsonl(out_dir / "skipped.jsonl", [{"path": s.path, "reason": s.reason} for s in skipped])
    degenerate = sum(is_degenerate(t) for r in records for t in r["per_image"].values())
    result = StageAResult(records, skipped, found.image_count, len(todo), total - len(todo), seconds, key, degenerate,
                          built.truncated, built.completion_tokens, dict(built.rules_fired), gt, prompt_spec)
    # what the checks need and the run config does not reach: the thresholds this run was held to
    atomic_write_json(out_dir / "run.json", {
        "run_key": key, "config": config.to_dict(), "summaries": result.summaries, "truncated": result.truncated,
        "truncated_share": round(result.truncated_share, 6), "max_new_tokens": config.max_new_tokens,
        "max_truncated_share": config.max_truncated_share,
        "max_truncated_share_blocking": config.max_truncated_share_blocking})
    if result.truncated:
        log(f"{result.truncated}/{result.summaries} summaries were cut at max_new_tokens={config.max_new_tokens}")
    return result


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
