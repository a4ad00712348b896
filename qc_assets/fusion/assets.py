"""Dagster wiring for `fused_sft_checkpoint`: fusion config + storage + student model -> LoRA adapter,
evaluated against its base model behind a blocking regression gate."""

import json
from typing import Optional

import dagster as dg
from pydantic import Field

from qc_assets.fusion.config import FusionConfig, fusion_config_from_dict, load_fusion_config
from qc_assets.fusion.evaluate import GATED_METRICS, gate_table
from qc_assets.fusion.mixing import report_table
from qc_assets.fusion.runner import (ADAPTER_DIR, EVAL_FILE, LOSS_PLOT, REPORT_FILE, FusionResult, NoTrainingData,
                                     run_fusion)
from qc_assets.gpu_steps import GPU_OP_TAGS, GPU_POOL
from qc_assets.partitions import mission_partitions
from qc_assets.plots import png_markdown
from resources.storage import StorageResource
from resources.vlm.resource import VLMResource, smoke_model_dir

ASSET_NAME = "fused_sft_checkpoint"


class FusedSFTConfig(dg.Config):
    config_file: str = Field(default="", description="fusion YAML (see configs/fusion.example.yaml); empty = defaults")
    max_steps: Optional[int] = Field(default=None, description="override lora.max_steps")
    seed: Optional[int] = Field(default=None, description="override the mix and training seeds")
    tolerance: Optional[float] = Field(default=None, description="override eval.tolerance of the gate")

    def to_fusion_config(self) -> FusionConfig:
        base = load_fusion_config(self.config_file) if self.config_file else FusionConfig()
        data = base.to_dict()
        if self.max_steps is not None:
            data["lora"]["max_steps"] = self.max_steps
        if self.seed is not None:
            data["seed"] = self.seed
            data["lora"]["seed"] = self.seed
        if self.tolerance is not None:
            data["eval"]["tolerance"] = self.tolerance
        return fusion_config_from_dict(data)


def student_path(vlm: VLMResource) -> tuple[str, str]:
    """(model folder, note): the configured checkpoint, or the tiny smoke model built on first use."""
    if vlm.model_path:
        return vlm.model_path, ""
    from resources.vlm.tiny_qwen3vl import SMOKE_MODEL_NOTE, build_tiny_qwen3vl

    return str(build_tiny_qwen3vl(smoke_model_dir())), SMOKE_MODEL_NOTE


@dg.asset(
    name=ASSET_NAME,
    deps=[dg.AssetKey("distill_chatml"), dg.AssetKey("stage_a_summaries")],
    partitions_def=mission_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    group_name="qc",
    kinds={"pytorch"},
    description="LoRA SFT of the student on a seeded mix of chatml sources, gated against its base model.",
)
def fused_sft_checkpoint(context: dg.AssetExecutionContext, config: FusedSFTConfig, storage: StorageResource,
                         vlm: VLMResource) -> dg.MaterializeResult:
    from resources.vlm.transformers_backend import model_fingerprint

    mission = context.partition_key
    cfg = config.to_fusion_config()
    out_dir = storage.asset_dir(ASSET_NAME, mission)
    try:
        model_path, note = student_path(vlm)
        fingerprint = model_fingerprint(model_path, vlm.dtype)
    except (OSError, ValueError) as e:
        raise dg.Failure(f"could not prepare the student model: {e}", metadata={"model_path": vlm.model_path}) from e
    try:
        result = run_fusion(mission, cfg, data_root=storage.root(), images_root=storage.images(),
                            model_path=model_path, device=vlm.device, dtype=vlm.dtype, out_dir=out_dir,
                            log=context.log.info)
    except NoTrainingData as e:
        raise dg.Failure(str(e), metadata={"sources": dg.MetadataValue.json(
            [s["name"] for s in cfg.to_dict()["sources"]])}) from e
    except OSError as e:
        raise dg.Failure(f"fusion I/O or model loading failed for {mission}: {e}",
                         metadata={"out_dir": dg.MetadataValue.path(str(out_dir))}) from e
    return dg.MaterializeResult(metadata=_metadata(result, cfg, fingerprint, note))


def _metadata(result: FusionResult, cfg: FusionConfig, fingerprint: str, note: str) -> dict:
    gate = result.eval["gate"]
    plot = result.out_dir / LOSS_PLOT
    preview = (f"gate {'passed' if gate['passed'] else 'FAILED'}; loss {result.losses[0]:.3f} -> "
               f"{result.losses[-1]:.3f}; " + ", ".join(f"{r.name} {r.realised_ratio:.2f}" for r in result.sources))
    meta = {
        "dagster/row_count": result.rows,
        "mission": result.mission,
        "model_fingerprint": fingerprint,
        "model_note": note,
        "seed": cfg.seed,
        "run_id": result.run_id,
        "preview": dg.MetadataValue.md(preview[:480]),
        "sources": dg.MetadataValue.md(report_table(result.sources)),
        "empty_sources": dg.MetadataValue.json(result.empty_sources),
        "source_notes": dg.MetadataValue.json({r.name: r.note for r in result.sources if r.note}),
        "eval_table": dg.MetadataValue.md(gate_table(gate)),
        "loss_plot": dg.MetadataValue.md(png_markdown(plot.read_bytes(), "loss curve")),
        "loss_plot_path": dg.MetadataValue.path(str(plot)),
        "adapter_path": dg.MetadataValue.path(str(result.out_dir / ADAPTER_DIR)),
        "held_out_source": result.eval["held_out_source"],
        "lora_targets": dg.MetadataValue.json(result.targets),
        "fusion/adapter_bytes": result.adapter_bytes,
        "fusion/trainable_params": result.trainable_params,
        "fusion/total_params": result.total_params,
        "fusion/first_loss": result.losses[0],
        "fusion/final_loss": result.losses[-1],
        "fusion/steps": len(result.losses),
        "fusion/train_seconds": round(result.train_seconds, 2),
        "fusion/gate_passed": gate["passed"],
        "fusion/guidance_version": result.guidance_version if result.guidance_version is not None else -1,
        "config": dg.MetadataValue.json(cfg.to_dict()),
    }
    for r in result.sources:
        meta[f"fusion/realised_ratio/{r.name}"] = r.realised_ratio
    for side in ("base", "fused"):
        for m in GATED_METRICS:
            meta[f"{side}/{m}"] = result.eval[side][m]
    meta["stage_b/eval_groups"] = result.eval["fused"]["stage_b/n_groups"]
    return meta


def _read_json(storage: StorageResource, mission: str, name: str) -> Optional[dict]:
    path = storage.root() / ASSET_NAME / mission / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@dg.asset_check(asset=fused_sft_checkpoint, blocking=True,
                description="Fused model is not worse than its base beyond the tolerance on held-out groups.")
def fused_sft_eval_gate(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return eval_gate_result(storage, context.partition_key)


def eval_gate_result(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    doc = _read_json(storage, mission, EVAL_FILE)
    if doc is None:
        return dg.AssetCheckResult(passed=False, metadata={"expected": EVAL_FILE, "actual": "missing"})
    gate = doc["gate"]
    return dg.AssetCheckResult(passed=bool(gate["passed"]), metadata={
        "expected": f"every gated metric >= base - {gate['tolerance']}, >= 1 held-out group",
        "actual": "ok" if gate["passed"] else "failed: " + ", ".join(gate["failures"]),
        "eval_table": dg.MetadataValue.md(gate_table(gate)),
        "eval_groups": doc["fused"]["stage_b/n_groups"], "run_id": doc["run_id"]})


@dg.asset_check(asset=fused_sft_checkpoint, blocking=True,
                description="The saved adapter's files exist and it loads onto the base model and merges.")
def fused_sft_adapter_loads(context: dg.AssetCheckExecutionContext, storage: StorageResource,
                            vlm: VLMResource) -> dg.AssetCheckResult:
    from resources.training.lora_sft_vl import load_adapter

    adapter = storage.root() / ASSET_NAME / context.partition_key / ADAPTER_DIR
    report = _read_json(storage, context.partition_key, REPORT_FILE)
    expected = ["adapter_config.json", "adapter_model.safetensors"]
    missing = [n for n in expected if not (adapter / n).is_file()]
    if missing or report is None:
        return dg.AssetCheckResult(passed=False, metadata={
            "expected": expected + [REPORT_FILE], "actual": f"missing: {missing or [REPORT_FILE]}"})
    try:
        load_adapter(report["base_model_path"], adapter, merge=True, dtype=vlm.dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        return dg.AssetCheckResult(passed=False, metadata={"expected": "adapter loads and merges",
                                                           "actual": f"{type(e).__name__}: {e}"[:1000]})
    return dg.AssetCheckResult(passed=True, metadata={"expected": "adapter loads and merges", "actual": "ok",
                                                      "adapter_path": dg.MetadataValue.path(str(adapter))})


assets = [fused_sft_checkpoint]
asset_checks = [fused_sft_eval_gate, fused_sft_adapter_loads]
