"""Stage-A through the `openai` VLM backend: images/s against the size of the in-flight pool.

    python -m benchmarks.stage_a_streaming

The server is `ScriptedVLMServerDouble` (a test double with a fixed latency per request and no model),
run in its own process, so this measures the client side only: the production runner + `OpenAIVisionModel` (AsyncOpenAI,
base64 images, one fsynced resume-log append per answer) at batch_size 8 throughout, to show that
throughput follows the pool and not the batch size, and what the client sustains with a server that
answers at once. Writes the section "## Stage-A over an OpenAI-compatible server (client side)".
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai  # noqa: F401  (imported here, before any timing: the SDK takes seconds to import)

from benchmarks.report import DOC, write_section
from qc_assets.cli.sample_data import write_sample_images
from qc_assets.missions import get_mission
from qc_assets.stage_a.runner import StageAConfig, run_stage_a
from resources.vlm.openai_backend import OpenAIVisionModel

MISSION = get_mission("BBU接地线检查")


def run(images: Path, out: Path, url: str, in_flight: int) -> tuple[int, float]:
    shutil.rmtree(out, ignore_errors=True)
    vlm = OpenAIVisionModel(url, "double", max_in_flight=in_flight)
    started = time.perf_counter()
    result = run_stage_a(images, MISSION, vlm, StageAConfig(batch_size=8, max_new_tokens=32), out, log=lambda _: None)
    return result.summarised_now, time.perf_counter() - started


@contextlib.contextmanager
def server_process(latency_s: float, capacity: int = 0) -> Iterator[str]:
    """The double in its own process, so its work does not share the client's interpreter."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resources.doubles.vlm_server",
            "--delay-s",
            str(latency_s),
            "--capacity",
            str(capacity),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the server double did not start (exit {proc.poll()}): {url!r}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def peak_in_flight(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as response:
        return json.loads(response.read())["max_in_flight"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups-per-label", type=int, default=20)
    parser.add_argument("--latency-s", type=float, default=0.1)
    parser.add_argument("--in-flight", default="1,4,16,64")
    parser.add_argument("--work", type=Path, default=Path("data/bench/streaming"))
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    images = write_sample_images(args.work / "images", groups_per_label=args.groups_per_label)
    pools = [int(n) for n in args.in_flight.split(",")]
    rows = []
    for latency, pool_sizes in ((args.latency_s, pools), (0.0, pools[-1:])):
        with server_process(latency) as url:
            for pool in pool_sizes:
                count, wall = run(images, args.work / "out", url, pool)
                rows.append((f"{latency * 1000:.0f} ms", pool, peak_in_flight(url), count, count / wall))
    command = "python -m benchmarks.stage_a_streaming " + " ".join(sys.argv[1:])
    lines = [
        "## Stage-A over an OpenAI-compatible server (client side)",
        "",
        f"`run_stage_a` with the `openai` backend (AsyncOpenAI, images as base64 data URLs, each answer appended "
        f"and fsynced as it finishes), batch_size 8 in every row, {rows[0][3]} photos of one mission. The server "
        "is `ScriptedVLMServerDouble` in its own process, a test double with a fixed latency and no model: these "
        "numbers are the client's pool and overhead, not a VLM's speed.",
        "",
        "| server latency | max_in_flight | most requests seen at once | images | images/s |",
        "|---|---|---|---|---|",
        *[f"| {lat} | {pool} | {seen} | {count} | {ips:.1f} |" for lat, pool, seen, count, ips in rows],
        "",
        f"Throughput follows the pool, not the batch size: {rows[len(pools) - 1][4] / rows[0][4]:.1f}x from "
        f"{pools[0]} to {pools[-1]} requests in flight (one run). Machine: {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} before the run.",
        "",
        "Command:",
        "",
        "```bash",
        f"HF_HUB_OFFLINE=1 .venv/bin/{command.strip()}",
        "```",
        "",
    ]
    section = "\n".join(lines)
    write_section(args.doc, section)
    print(section)


if __name__ == "__main__":
    main()
