"""Command-line entry point for GRPO (the asset `grpo_checkpoint` runs the same code in Dagster).

`python -m qc_assets.student.grpo_cli --data-root data --out-dir <dir> --model-path <Qwen3-VL checkpoint>
--device cuda --dtype bfloat16` trains on every mission's train split and evaluates on the held-out
groups afterwards. Without `--guidance initial` it fails when a mission has no Stage-B guidance.
`--last-k` (default 4), `--label-weight` (1.0) and `--format-weight` (0.2) are the proposal's defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

from qc_assets.student.grpo import run_grpo
from qc_assets.student.preference_config import GRPORunConfig
from resources.training.spec import LoraTrainingSpec

_KINDS = {"int": int, "float": float, "str": str, "bool": lambda v: v in ("1", "true", "yes")}


def _flag_fields():
    """(field, default, in the lora block?) for every flag: the run config's own fields and the LoRA spec's,
    flat on the command line (`--last-k`, `--label-weight`); projections keep their default."""
    default_lora = GRPORunConfig().lora
    for f in fields(GRPORunConfig):
        if f.name != "lora":
            yield f, f.default, False
    for f in fields(LoraTrainingSpec):
        if f.name != "projections":
            yield f, getattr(default_lora, f.name), True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="GRPO of the student over every mission (TRL GRPOTrainer + LoRA)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out-dir", required=True, help="runs/<run_id>/ is written under it")
    p.add_argument("--model-path", required=True, help="Qwen3-VL checkpoint folder (the student's base)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--images-root", default="", help="default: <data-root>/images")
    p.add_argument("--mission", action="append", help="limit to these missions (repeatable); default: all")
    for f, default, _ in _flag_fields():
        kind = _KINDS[f.type if isinstance(f.type, str) else f.type.__name__]
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default, help=f.metadata["help"])
    return p


def config_from_args(args: argparse.Namespace) -> GRPORunConfig:
    own = {f.name: getattr(args, f.name) for f, _, in_lora in _flag_fields() if not in_lora}
    lora = {f.name: getattr(args, f.name) for f, _, in_lora in _flag_fields() if in_lora}
    return GRPORunConfig(**own, lora=replace(GRPORunConfig().lora, **lora))


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from resources.training.student import VLStudent

    cfg = config_from_args(args)
    student = VLStudent(args.model_path, args.device, args.dtype)
    summary = run_grpo(
        cfg,
        student,
        data_root=Path(args.data_root),
        images_root=Path(args.images_root or Path(args.data_root) / "images"),
        out_root=Path(args.out_dir),
        missions=args.mission,
    )
    print(f"GRPO done: {summary['run_dir']}; eval gate {'passed' if summary['eval']['passed'] else 'failed'}")
    return summary


if __name__ == "__main__":
    main()
