"""The "## GPU suite" section of docs/benchmarks.md: which steps of benchmarks/gpu_suite.sh ran, how.

    python -m benchmarks.suite_report --results <results.tsv> --device cuda --command "bash benchmarks/gpu_suite.sh"

`results.tsv` rows: step, status, wall seconds, python arguments (written by gpu_suite.sh).
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

from benchmarks.report import DOC, write_section

SECTION = "## GPU suite"


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device")
        props = torch.cuda.get_device_properties(0)
        gib = props.total_memory / 2**30
        return f"{torch.cuda.device_count()} x {props.name} ({gib:.0f} GiB), torch {torch.__version__}"
    return f"CPU only ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def section(rows: list[list[str]], device: str, command: str) -> str:
    lines = [
        SECTION,
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {machine(device)}. "
        "Each step's numbers are in its own section; a step that failed, was missing or timed out "
        "left its section as it was.",
        "",
        "| step | status | wall s | command |",
        "|---|---|---|---|",
    ]
    lines += [f"| {step} | {status} | {seconds} | `python {args}` |" for step, status, seconds, args in rows]
    lines += ["", "Command (from the repository root):", "", "```bash", command.strip(), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    rows = [line.split("\t") for line in args.results.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [row for row in rows if len(row) != 4]
    if bad:
        raise ValueError(f"{args.results}: expected 4 tab-separated fields per row, got {bad[0]!r}")
    text = section(rows, args.device, args.command)
    write_section(args.doc, text)
    print(text)


if __name__ == "__main__":
    main()
