"""How Stage-A asks a backend for summaries: the resume key, and one pass over a list of photos.

`summarise` is what every shard runs (one shard = the whole mission when `shards` is 1): a streaming
backend (an OpenAI-compatible server) gets every photo at once through its bounded in-flight pool
and each answer is saved as it arrives; a local backend gets batches shaped by `mode` and
`batch_size`. `config` is the stage's `StageAConfig` (only its decode, mode and batch size are read).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator

from qc_assets.missions import Mission
from qc_assets.stage_a.discovery import Group, ImageFile
from resources.vlm import StreamingVisionModel, VisionDecode, VisionLanguageModel, VLMRequestError

Item = tuple[Group, ImageFile]


def run_key(vlm: VisionLanguageModel, mission: Mission, decode: VisionDecode, prompt_hash: str) -> str:
    """Everything that changes a summary: weights, prompt, decode params and the image budget.

    The group sample (`sample_seed`) is not in it: drawing other groups reuses every photo already done.
    Neither is the device nor the shard count: the same photo on another GPU is the same summary.
    """
    return key_for(vlm.fingerprint, mission, decode, prompt_hash)


def key_for(fingerprint: str, mission: Mission, decode: VisionDecode, prompt_hash: str) -> str:
    """`run_key` from the model's fingerprint alone (the plan step loads no model)."""
    payload = json.dumps([fingerprint, prompt_hash, decode.as_dict(), mission.max_pixels], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def describe(vlm: VisionLanguageModel, config) -> str:
    return (
        f"streamed, {vlm.max_in_flight} in flight"
        if isinstance(vlm, StreamingVisionModel)
        else f"{config.mode}, batch {config.batch_size}"
    )


def summarise(
    vlm: VisionLanguageModel,
    todo: list[Item],
    config,
    prompt: Callable,
    save: Callable,
    log: Callable[[str], None],
    first_batch: Callable | None = None,
) -> float:
    """Generate a summary for every item of `todo`, calling `save(items, outputs, seconds)` as they finish.

    `first_batch(items, outputs)` (verify_inputs) sees the first batch that finished. Returns the
    generation seconds (local: the sum of batch times; streamed: the wall time of the stream).
    """
    if isinstance(vlm, StreamingVisionModel):
        return _stream(vlm, todo, config, prompt, save, log, first_batch)
    seconds = 0.0
    for n_batch, batch in enumerate(_batches(todo, config), start=1):
        started = time.perf_counter()
        outputs = vlm.generate([prompt(img) for _, img in batch], config.decode)
        elapsed = time.perf_counter() - started
        seconds += elapsed
        save(batch, outputs, [elapsed] * len(batch))
        if n_batch == 1 and first_batch is not None:
            first_batch(batch, outputs)
        log(f"batch {n_batch}: {len(batch)} images in {elapsed:.2f}s")
    return seconds


def _stream(vlm: StreamingVisionModel, todo, config, prompt, save, log, first_batch) -> float:
    """Every image through the backend's bounded in-flight pool; each answer is saved as it finishes.

    Requests that still fail after the backend's retries are collected and raised together at the
    end, after every other answer has been saved, so a re-run asks only for those.
    """
    started = time.perf_counter()
    failures: list[tuple[str, str]] = []
    answered, reported = 0, first_batch is None
    for finished in vlm.stream([prompt(img) for _, img in todo], config.decode):
        ok = [r for r in finished if r.error is None]
        for r in finished:
            if r.error is not None:
                failures.append((todo[r.index][1].path, r.error))
                log(f"failed: {todo[r.index][1].path}: {r.error}")
        if ok:  # what finished together is saved together: one fsync
            save([todo[r.index] for r in ok], [r.output for r in ok], [r.seconds for r in ok])
            if not reported:
                first_batch([todo[r.index] for r in ok], [r.output for r in ok])
                reported = True
        before, answered = answered, answered + len(finished)
        if answered // 50 > before // 50 or answered == len(todo):
            log(f"{answered}/{len(todo)} answers, {len(failures)} failed, {time.perf_counter() - started:.1f}s")
    if failures:
        raise VLMRequestError(failures, len(todo))
    return time.perf_counter() - started


def _batches(todo: list[Item], config) -> Iterator[list[Item]]:
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
