"""`fused_sft_checkpoint` on a real Dagster instance with the tiny Qwen3-VL student: one student over
two missions, promotion on a passing gate, refusal on a failing one, no silent guidance fallback,
and the promoted checkpoint served through the Stage-A backend and the student chat loader."""

import json

import dagster as dg
import pytest
from support.fusion import MISSION, distill_rows, stage_a_records

from qc_assets.student.assets import FusedSFTConfig, fused_sft_checkpoint
from qc_assets.student.checks import asset_checks
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl, read_jsonl
from resources.training.resource import StudentTrainingResource

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
OUT = "fused_sft_checkpoint"
OTHER = "RRU安装检查"
# Small decode budgets: the tiny random model's answers are meaningless, only the code path matters.
SMALL_YAML = """
guidance: initial
missions: {{挡风板安装检查: 2.0}}
sources:
  - {{name: stageb_teacher, type: distill_chatml, ratio: 0.5}}
  - {{name: stage_a_summary, type: stage_a_summaries, ratio: 0.5}}
lora: {{last_k: 1, max_steps: 3, batch_size: 2}}
eval: {{max_groups: 2, stage_a_images: 1, max_new_tokens: 6, n_bootstrap: 200, min_improvement: {min_improvement}}}
"""


def write_two_missions(root, images) -> dict:
    out = {}
    for mission in (MISSION, OTHER):
        records = stage_a_records(images, mission)
        atomic_write_jsonl(root / "stage_a_summaries" / mission / "records.jsonl", records)
        atomic_write_jsonl(root / "distill_chatml" / mission / "distill_chatml.jsonl", distill_rows(records, mission))
        out[mission] = records
    return out


def small_config(tmp_path, min_improvement=0.0, **overrides) -> FusedSFTConfig:
    path = tmp_path / f"fusion-{min_improvement}.yaml"
    path.write_text(SMALL_YAML.format(min_improvement=min_improvement), encoding="utf-8")
    return FusedSFTConfig(config_file=str(path), **overrides)


def materialize(root, images, model_dir, config: FusedSFTConfig):
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [fused_sft_checkpoint, *asset_checks],
            instance=instance,
            resources={
                "storage": StorageResource(data_root=str(root), images_root=str(images)),
                "student": StudentTrainingResource(model_path=str(model_dir)),
            },
            run_config=dg.RunConfig({OUT: config}),
            raise_on_error=False,
        )


def test_one_student_promoted_on_pass_refused_on_fail_and_served(tmp_path, sample_images, tiny_vlm_dir):
    records = write_two_missions(tmp_path, sample_images)
    held = [records[MISSION][0]["record_id"], records[MISSION][-1]["record_id"]]
    atomic_write_jsonl(tmp_path / "stage_b_guidance" / MISSION / "splits.jsonl", [{"run_id": "r1", "eval": held}])

    # 1. passes (equal scores on the random model sit inside the interval): promoted to current
    result = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path))
    assert result.success
    (mat,) = result.asset_materializations_for_node(OUT)
    meta = {k: v.value for k, v in mat.metadata.items()}
    first = meta["run_id"]
    run_dir = tmp_path / OUT / "runs" / first
    for name in (
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
        "chat_template.jinja",
        "fusion_report.json",
        "train_log.jsonl",
        "eval.json",
        "loss.png",
    ):
        assert (run_dir / name).is_file(), name
    assert meta["promoted"] is True and (tmp_path / OUT / "current").resolve() == run_dir.resolve()
    assert meta["guidance"] == {m: "initial (config guidance: initial)" for m in (MISSION, OTHER)}
    report = json.loads((run_dir / "fusion_report.json").read_text(encoding="utf-8"))
    assert report["missions"] == sorted([MISSION, OTHER])
    # per-mission pools; held-out groups of MISSION never reach training
    held_groups = {r["group_id"] for r in records[MISSION] if r["record_id"] in held}
    n_held = sum(r["group_id"] in held_groups for r in records[MISSION])
    assert report["dropped"][f"stageb_teacher/{MISSION}"] == {"held_out_group": n_held}
    pools = {s["name"]: s for s in report["sources"]}
    # mission weight 2 vs 1 inside each source
    assert pools[f"stageb_teacher/{MISSION}"]["target_ratio"] == pytest.approx(
        2 * pools[f"stageb_teacher/{OTHER}"]["target_ratio"]
    )
    ev = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    assert (
        ev["missions"][MISSION]["held_out_records"] == held and "run r1" in ev["missions"][MISSION]["held_out_source"]
    )
    assert ev["missions"][MISSION]["fused"]["stage_b/n_groups"] == 2 and set(ev["missions"]) == {MISSION, OTHER}
    assert meta["dagster/row_count"] == report["rows"] > 0 and meta["seed"] == 0
    assert meta["model_fingerprint"].startswith(tiny_vlm_dir.name) and len(meta["preview"]) <= 500
    assert f"| {OTHER} | stage_b/verdict_accuracy |" in meta["eval_table"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"fused_sft_eval_gate": True, "fused_sft_checkpoint_loads": True}

    # 2. the promoted checkpoint serves: Stage-A through TransformersVLM, a verdict prompt through the loader
    _serves(tmp_path / OUT / "current", sample_images, records[MISSION][0])

    # 2b. the same request again reuses run 1: nothing retrained, no new run folder, no new decision
    again = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path))
    (mat,) = again.asset_materializations_for_node(OUT)
    assert mat.metadata["run_id"].value == first and mat.metadata["fusion/reused"].value is True
    assert mat.metadata["inputs_key"].value == meta["inputs_key"] and meta["fusion/reused"] is False
    assert "reused" in mat.metadata["preview"].value
    assert [p.name for p in (tmp_path / OUT / "runs").iterdir()] == [first]
    assert len(read_jsonl(tmp_path / OUT / "promotions.jsonl")) == 1

    # 3. demanding an improvement the random student cannot show: refused, current stays on run 1
    result = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path, min_improvement=0.5))
    (mat,) = result.asset_materializations_for_node(OUT)
    second = mat.metadata["run_id"].value
    assert second != first and mat.metadata["promoted"].value is False
    assert "REFUSED" in mat.metadata["preview"].value
    assert (tmp_path / OUT / "runs" / second / "config.json").is_file()  # kept for inspection
    assert (tmp_path / OUT / "current").resolve() == run_dir.resolve()
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["fused_sft_eval_gate"].passed and not result.success
    assert "not promoted" in checks["fused_sft_eval_gate"].metadata["actual"].text
    log = read_jsonl(tmp_path / OUT / "promotions.jsonl")
    assert [(r["run_id"], r["promoted"], r["current"]) for r in log] == [(first, True, first), (second, False, first)]
    assert not list((tmp_path / OUT / "runs").glob(".staging-*"))


def _serves(current, images, record):
    from qc_assets.missions import get_mission
    from qc_assets.stage_b.guidance import Guidance
    from qc_assets.stage_b.prompts import build_messages
    from resources.llm import ChatLLM, DecodeParams, OutputConstraint
    from resources.training.student_chat import load_student_chat
    from resources.vlm import VisionDecode, VisionPrompt
    from resources.vlm.transformers_backend import TransformersVLM

    photo = images / MISSION / record["images"][0]
    (out,) = TransformersVLM(str(current)).generate(
        [VisionPrompt(str(photo), "系统", "描述图片")], VisionDecode(max_new_tokens=4)
    )
    assert out.text and out.completion_tokens > 0
    llm = load_student_chat(str(current))
    assert isinstance(llm, ChatLLM) and llm.fingerprint.startswith("student:")
    mission = get_mission(MISSION)
    (answers,) = llm.chat(
        [build_messages(mission, Guidance.initial(mission), record)],
        DecodeParams(max_new_tokens=5, n=2, temperature=1.0, seed=1),
    )
    assert len(answers) == 2 and all(a.ok and a.completion_tokens > 0 for a in answers)
    with pytest.raises(ValueError, match="constrained decoding"):
        llm.chat([[{"role": "user", "content": "x"}]], DecodeParams(constraint=OutputConstraint(regex="通过")))
    with pytest.raises(ValueError, match="no student checkpoint"):
        load_student_chat(str(current.parent / "runs" / "absent"))


def test_missing_guidance_fails_unless_config_says_initial(tmp_path, sample_images, tiny_vlm_dir):
    write_two_missions(tmp_path, sample_images)
    result = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path, guidance="best"))
    assert not result.success
    text = _failure_text(result)
    assert "no usable Stage-B guidance" in text and "guidance: initial" in text
    assert not (tmp_path / OUT / "runs").exists()


def test_corrupt_guidance_is_refused_too(tmp_path):
    from qc_assets.missions import get_mission
    from qc_assets.student.runs import resolve_guidance

    mission = get_mission(MISSION)
    (tmp_path / "guidance").mkdir()
    (tmp_path / "guidance" / "best.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="no usable Stage-B guidance"):
        resolve_guidance(tmp_path, mission, "best")
    guidance, how = resolve_guidance(tmp_path, mission, "initial")
    assert how.startswith("initial") and guidance.version == 0


def _failure_text(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    err, parts = failure.step_failure_data.error, []
    while err is not None:
        parts.append(err.message)
        err = err.cause
    return " ".join(parts)


def test_all_sources_empty_and_smoke_model_are_clear_failures(tmp_path, sample_images, tiny_vlm_dir):
    result = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path, max_steps=1))
    assert "no mission has Stage-A records or distill rows" in _failure_text(result)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [fused_sft_checkpoint],
            instance=instance,
            raise_on_error=False,
            resources={"storage": StorageResource(data_root=str(tmp_path)), "student": StudentTrainingResource()},
        )
    assert "QC_STUDENT_SMOKE_MODEL=1" in _failure_text(result)


def test_a_crashed_run_leaves_no_staging_and_keeps_current(tmp_path, sample_images, tiny_vlm_dir):
    import shutil

    from qc_assets.student.config import FusionConfig
    from qc_assets.student.sft import promote, run_fusion
    from resources.training.student import VLStudent

    write_two_missions(tmp_path, sample_images)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    shutil.copy(tiny_vlm_dir / "config.json", broken / "config.json")  # config but no weights or tokenizer
    out = tmp_path / OUT
    (out / "runs" / "good").mkdir(parents=True)
    promote(out, "good")
    with pytest.raises(OSError):
        run_fusion(
            FusionConfig(guidance="initial"),
            VLStudent(str(broken)),
            data_root=tmp_path,
            images_root=sample_images,
            out_root=out,
            log=lambda m: None,
        )
    assert [p.name for p in (out / "runs").iterdir()] == ["good"]
    assert (out / "current").resolve() == (out / "runs" / "good").resolve()
