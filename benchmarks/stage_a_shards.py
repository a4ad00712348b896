"""Sharded Stage-A: wall time for 1, 2 and 4 shards, each shard in its own worker process.

    python -m benchmarks.stage_a_shards

Each shard runs as a shard step does: a fresh process that builds its backend and calls `run_shard`
on its part of one plan; the parent plans before and merges after (qc_assets/stage_a/sharding.py,
the same code the Dagster shard steps call). Two backends:

- the tiny local model (random-weight Qwen3-VL, cpu, one torch thread per worker): on a machine with
  C cores, the speed-up can reach min(shards, C);
- `ScriptedVLMServerDouble` (resources/doubles/vlm_server.py), a test double of an OpenAI-compatible
  server with a fixed latency per request and a capacity (requests it works on at once), each shard
  keeping one request in flight: the speed-up follows the shard count up to the double's capacity.

"summarise" is from the first shard's start to the last shard's end (what more GPUs shorten); "wall"
adds the plan, the workers' start (imports, model load) and the merge. Writes the section
"## Stage-A shards (one worker per shard)" of docs/benchmarks.md.
"""

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks.report import DOC, command_line, write_section
from benchmarks.stage_a_streaming import server_process
from qc_assets.cli.sample_data import write_sample_images
from qc_assets.missions import get_mission
from qc_assets.stage_a.runner import StageAConfig
from qc_assets.stage_a.sharding import load_plan, merge_shards, plan_stage_a, run_shard
from resources.vlm import VisionDecode, VisionPrompt

MISSION = get_mission("BBU接地线检查")


def _backend(spec: dict):
    if spec["kind"] == "tiny":
        import torch

        torch.set_num_threads(1)  # one core per worker, as one GPU per worker
        from resources.vlm.transformers_backend import TransformersVLM

        return TransformersVLM(spec["model_dir"], "cpu", "float32")
    from resources.vlm.openai_backend import OpenAIVisionModel

    return OpenAIVisionModel(spec["url"], "double", max_in_flight=1)


def _worker(spec: dict, config: dict, out: str, shard: int, times, barrier) -> None:
    vlm = _backend(spec)
    plan = load_plan(out)
    # load the weights (or the client) before the clock starts, then start every shard at once: the
    # summarise column is the generation itself, not the workers' staggered imports
    first = plan.groups[0].images[0]
    vlm.generate(
        [VisionPrompt(str(Path(plan.mission_dir) / first.path), "warm-up", "warm-up", MISSION.max_pixels)],
        VisionDecode(max_new_tokens=1),
    )
    barrier.wait()
    started = time.time()
    run_shard(plan, shard, MISSION, vlm, StageAConfig(**config), out, log=lambda _: None)
    times[shard] = (started, time.time())


def run(images: Path, out: Path, spec: dict, config: dict, shards: int) -> tuple[int, int, float, float]:
    """(photos summarised, photos of the largest shard, summarise seconds, wall seconds) for one sharded
    run from an empty out dir."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = StageAConfig(**config, shards=shards)
    started = time.perf_counter()
    fingerprint = _backend(spec).fingerprint  # cheap: no weights load
    plan = plan_stage_a(images, MISSION, fingerprint, cfg, out)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, as a step process is
    with ctx.Manager() as manager:
        times, barrier = manager.dict(), ctx.Barrier(shards)
        procs = [
            ctx.Process(target=_worker, args=(spec, cfg.to_dict(), str(out), s, times, barrier)) for s in range(shards)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"a shard worker failed: exit codes {[p.exitcode for p in procs]}")
        spans = dict(times)
    result = merge_shards(plan, cfg, out, fingerprint, MISSION, log=lambda _: None)
    wall = time.perf_counter() - started
    summarise = max(end for _, end in spans.values()) - min(start for start, _ in spans.values())
    return result.summarised_now, max(m["assigned"] for m in result.shard_results), summarise, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups-per-label", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--latency-s", type=float, default=0.2)
    parser.add_argument("--capacity", type=int, default=3)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--work", type=Path, default=Path("data/bench/shards"))
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    from resources.vlm.resource import smoke_model_dir
    from resources.vlm.tiny_qwen3vl import build_tiny_qwen3vl

    load_before = os.getloadavg()[0]
    model_dir = str(build_tiny_qwen3vl(smoke_model_dir()))
    images = write_sample_images(args.work / "images", groups_per_label=args.groups_per_label)
    counts = [int(n) for n in args.shards.split(",")]
    # batch 1 and per_image batches: every photo is its own generate call, whichever shard takes it
    config = {
        "mode": "per_image",
        "batch_size": 1,
        "max_new_tokens": args.max_new_tokens,
        "max_truncated_share_blocking": 1.0,
        "sharding_mode": "per_image",
    }
    rows = []
    tiny = {"kind": "tiny", "model_dir": model_dir}
    for n in counts:
        rows.append(("tiny Qwen3-VL, cpu", n, *run(images, args.work / "out", tiny, config, n)))
    with server_process(args.latency_s, args.capacity) as url:
        for n in counts:
            rows.append(
                (
                    f"server double, {args.latency_s * 1000:.0f} ms, capacity {args.capacity}",
                    n,
                    *run(images, args.work / "out", {"kind": "double", "url": url}, config, n),
                )
            )
    base = {backend: summ for backend, n, _, _, summ, _ in rows if n == counts[0]}
    base_wall = {backend: wall for backend, n, _, _, _, wall in rows if n == counts[0]}
    lines = [
        "## Stage-A shards (one worker per shard)",
        "",
        f"One mission, {rows[0][2]} photos, `sharding_mode: per_image`, batch 1, {args.max_new_tokens} new tokens "
        "(greedy); each shard in its own spawned process calling `run_shard` (what a Dagster shard step runs), "
        "plan before and merge after in the parent. *summarise*: the workers, warmed up (weights loaded, one "
        "1-token call), start together; from then to the last shard's end; *wall*: plan + worker start "
        "(imports, model load, warm-up) + summarise + merge. The server rows use "
        "`ScriptedVLMServerDouble`, a test double with a fixed latency per request, at most "
        f"{args.capacity} requests worked on at once, and no model; each shard keeps one request in flight.",
        "",
        "| backend | shards = workers | photos | largest shard | summarise s | speed-up | wall s | wall speed-up |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {backend} | {n} | {count} | {largest} | {summ:.1f} | {base[backend] / summ:.2f}x | {wall:.1f} | "
            f"{base_wall[backend] / wall:.2f}x |"
            for backend, n, count, largest, summ, wall in rows
        ],
        "",
        f"One run each. Machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before the run: the tiny "
        "model's speed-up is bounded by the free cores, the double's by its capacity; both by the largest "
        "shard (a hash split is even only on average).",
        "",
        "Command:",
        "",
        "```bash",
        f"HF_HUB_OFFLINE=1 .venv/bin/{command_line('benchmarks.stage_a_shards', args, skip=('work', 'doc'))}",
        "```",
        "",
    ]
    section = "\n".join(lines)
    write_section(args.doc, section)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
