"""llama.cpp compiled for a portable target vs for this CPU (native), on the embedded SmolLM2 GGUF.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.llama_cpp_builds --prompts 4 --rounds 3 --threads 1

`make install` builds llama-cpp-python for the portable target (AVX2/FMA/F16C/BMI2, no AVX-512, no
AMX); `make install LLAMA_CPU=native` builds with -march=native (AMX still off). This builds the
native wheel the same way (deploy/llama_cpp/build.sh, cached), installs it into a scratch folder,
and measures both builds with `benchmarks.llm_cpu_backends.measure` (the same Stage-B prompts,
prefill, decode and constrained rollouts), one child process per build and round, the builds
interleaved, medians. Writes the section "## llama.cpp build: portable vs native" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.report import DOC, command_line, write_section
from resources.llm.llama_cpp_build import compiled_features

TITLE = "## llama.cpp build: portable vs native"
ROOT = Path(__file__).resolve().parents[1]
_CHILD = """
import json, sys
from benchmarks.llm_cpu_backends import build, measure, stage_b_prompts
from resources.llm import DecodeParams
from resources.llm.llama_cpp_build import library_system_info
prompts, threads, max_tokens = stage_b_prompts(int(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
llm = build("llama_cpp", threads, 1)
llm.chat(prompts[:1], DecodeParams(max_new_tokens=2))
print(json.dumps({**measure(llm, prompts, max_tokens), "system_info": library_system_info().strip()}))
"""


def native_site(work: Path, version: str) -> Path:
    cache = Path(os.environ.get("LLAMA_CACHE", Path.home() / ".cache" / "qc-llama-cpp"))
    wheel = subprocess.run(
        [
            "bash",
            str(ROOT / "deploy" / "llama_cpp" / "build.sh"),
            "wheel",
            version,
            "native",
            str(cache),
            sys.executable,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    site = work / "native-site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel], check=True
    )
    return site


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_child(site: Path | None, args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site) if site else "", str(ROOT)]))}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(args.prompts), str(args.threads), str(args.max_tokens)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def render(rows: dict, args, version: str) -> str:
    lines = [
        TITLE,
        "",
        f"llama-cpp-python {version} on this machine's CPU ({cpu_model()}, {os.cpu_count()} cores, shared with "
        f"other work while it ran), SmolLM2-135M Q4_1, {args.prompts} Stage-B verdict prompts, {args.threads} "
        f"thread(s), answers up to {args.max_tokens} tokens, {args.rounds} interleaved rounds (a fresh process "
        "per build and round); medians.",
        "",
        "| build | compiled CPU features | prefill tok/s | decode tok/s | Stage-B rollouts/min |",
        "|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("prefill_tok_s", "decode_tok_s", "rollouts_per_min")}
        features = " ".join(f for f, on in compiled_features(runs[0]["system_info"]).items() if on)
        lines.append(
            f"| {name} | {features} | {med['prefill_tok_s']:.0f} | {med['decode_tok_s']:.1f} | "
            f"{med['rollouts_per_min']:.1f} |"
        )
        rows[name] = med
    p, n = rows["portable"], rows["native"]
    lines += [
        "",
        f"native / portable: {n['prefill_tok_s'] / p['prefill_tok_s']:.2f}x prefill, "
        f"{n['decode_tok_s'] / p['decode_tok_s']:.2f}x decode, "
        f"{n['rollouts_per_min'] / p['rollouts_per_min']:.2f}x Stage-B rollouts.",
        "",
        "```bash",
        "HF_HUB_OFFLINE=1 .venv/bin/" + command_line("benchmarks.llama_cpp_builds", args, skip=("doc",)),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    import llama_cpp

    with tempfile.TemporaryDirectory() as tmp:
        site = native_site(Path(tmp), llama_cpp.__version__)
        rows: dict[str, list[dict]] = {"portable": [], "native": []}
        for _ in range(args.rounds):
            for name, where in (("portable", None), ("native", site)):
                rows[name].append(run_child(where, args))
                print(name, json.dumps({k: v for k, v in rows[name][-1].items() if k != "system_info"}), flush=True)
    write_section(args.doc, render(rows, args, llama_cpp.__version__))


if __name__ == "__main__":
    main()
