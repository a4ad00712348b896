"""What the model self-check costs: one child process that loads the model and decodes a few tokens.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.self_check_cost --rounds 5

Times `resources.self_check.run_self_check` for the embedded SmolLM2 GGUF on llama.cpp (the LLM and
teacher default) and for the tiny Qwen3-VL smoke model on transformers (the VLM default), each run
from scratch `--rounds` times (the once-per-process memo cleared), medians. Writes the section
"## Self-check" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.report import DOC, command_line, write_section
from resources import self_check
from resources.llm.smollm2 import smollm2_gguf_path

TITLE = "## Self-check"


def timed(backend: str, argv: list[str]) -> float:
    self_check._PASSED.clear()
    started = time.perf_counter()
    self_check.run_self_check(backend, argv)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    from resources.vlm.tiny_qwen3vl import build_tiny_qwen3vl

    gguf = smollm2_gguf_path()
    with tempfile.TemporaryDirectory() as tmp:
        vlm_dir = build_tiny_qwen3vl(Path(tmp) / "tiny")
        probes = {
            "LLM: SmolLM2-135M Q4_1 on llama.cpp": (
                "llama_cpp",
                self_check.llm_probe("llama_cpp", str(gguf.parent), gguf.name, "cpu", "float32", 0),
            ),
            "VLM: tiny Qwen3-VL on transformers (cpu, float32)": (
                "transformers",
                self_check.vlm_probe(str(vlm_dir), "cpu", "float32"),
            ),
        }
        times = {name: [] for name in probes}
        for _ in range(args.rounds):
            for name, (backend, argv) in probes.items():
                times[name].append(timed(backend, argv))
                print(name, f"{times[name][-1]:.2f}s", flush=True)
    lines = [
        TITLE,
        "",
        f"The self-check a resource runs before its local model first loads in a process "
        f"(resources/self_check.py): a child process that imports the backend, loads the model, prefills "
        f"about 200 tokens and decodes 2. On this machine's CPU ({os.cpu_count()} cores, shared with other "
        f"work while it ran), {args.rounds} rounds each, medians; `make demo` pays each once (the teacher "
        "shares the LLM's check).",
        "",
        "| model | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    for name, ts in times.items():
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} |")
    lines += [
        "",
        "Most of the VLM's figure is importing torch and transformers in the child; the model is tiny.",
        "",
        "```bash",
        "HF_HUB_OFFLINE=1 .venv/bin/" + command_line("benchmarks.self_check_cost", args, skip=("doc",)),
        "```",
        "",
    ]
    write_section(args.doc, "\n".join(lines))


if __name__ == "__main__":
    main()
