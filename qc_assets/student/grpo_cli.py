"""Command-line entry point for GRPO (the asset `grpo_checkpoint` runs the same code in Dagster).

`python -m qc_assets.student.grpo_cli --data-root data --out-dir <dir> --model-path <Qwen3-VL checkpoint>
--device cuda --dtype bfloat16` trains on every mission's train split and evaluates on the held-out
groups afterwards. Without `--guidance initial` it fails when a mission has no Stage-B guidance.
`--last-k` (default 4), `--label-weight` (1.0) and `--format-weight` (0.2) are the proposal's defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from qc_assets.student.grpo import run_grpo
from qc_assets.student.preference_config import GRPORunConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="GRPO of the student over every mission (TRL GRPOTrainer + LoRA)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out-dir", required=True, help="runs/<run_id>/ is written under it")
    p.add_argument("--model-path", required=True, help="Qwen3-VL checkpoint folder (the student's base)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--images-root", default="", help="default: <data-root>/images")
    p.add_argument("--mission", action="append", help="limit to these missions (repeatable); default: all")
    for f in fields(GRPORunConfig):
        if f.name != "projections":
            kind = {"int": int, "float": float, "str": str, "bool": lambda v: v in ("1", "true", "yes")}[
                f.type if isinstance(f.type, str) else f.type.__name__]
            p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default, help=f.metadata["help"])
    return p


def config_from_args(args: argparse.Namespace) -> GRPORunConfig:
    return GRPORunConfig(**{f.name: getattr(args, f.name) for f in fields(GRPORunConfig) if f.name != "projections"})


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from resources.training.student import VLStudent

    cfg = config_from_args(args)
    student = VLStudent(args.model_path, args.device, args.dtype)
    summary = run_grpo(cfg, student, data_root=Path(args.data_root),
                       images_root=Path(args.images_root or Path(args.data_root) / "images"),
                       out_root=Path(args.out_dir), missions=args.mission)
    print(f"GRPO done: {summary['run_dir']}; eval gate {'passed' if summary['eval']['passed'] else 'failed'}")
    return summary


if __name__ == "__main__":
    main()
