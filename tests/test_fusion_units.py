"""Fusion config, source loading, mixing, LoRA target naming and the bootstrap gate (no model)."""

import doctest
from pathlib import Path

import pytest
from support.fusion import MISSION, distill_rows, stage_a_records, write_inputs

from qc_assets import stats
from qc_assets.student import evaluate, mixing
from qc_assets.student.config import EvalGateConfig, FusionConfig, FusionRunConfig, SourceConfig, load_fusion_config
from qc_assets.student.sources import discover_missions, load_source, validate_chatml
from resources.training import lora_policy as policy
from resources.training.spec import LoraTrainingSpec

REPO = Path(__file__).resolve().parents[1]


def test_example_config_loads_and_roundtrips():
    cfg = load_fusion_config(REPO / "configs" / "fusion.example.yaml")
    assert [s.type for s in cfg.sources] == ["distill_chatml", "stage_a_summaries"]
    assert cfg.lora.last_k == 2 and cfg.eval.confidence == 0.95 and cfg.guidance == "best"
    assert cfg.missions == {"BBU接地线检查": 1.0, "RRU安装检查": 1.0}
    assert FusionConfig(**{**cfg.__dict__}).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("sources:\n  - {name: a, type: distill_chatml, ratio: 0}\n", "ratio must be a number > 0"),
        ("sources:\n  - {name: a, type: distill_chatml, ratio: -1}\n", "ratio must be a number > 0"),
        ("sources:\n  - {name: a, type: parquet_dump, ratio: 1}\n", "unknown type 'parquet_dump'"),
        ("sources:\n  - {name: a, type: chatml_file, path: nope.jsonl}\n", "does not exist"),
        ("sources:\n  - {name: a, type: distill_chatml}\n  - {name: a, type: stage_a_summaries}\n", "unique"),
        ("sources:\n  - {name: a, type: distill_chatml, weight: 2}\n", "unknown keys ['weight']"),
        ("lora: {last_k: -1}\n", "lora.last_k must be an integer >= 0"),
        ("eval: {confidence: 1.5}\n", "eval.confidence must be in"),
        ("eval: {tolerance: 0.05}\n", "unknown keys ['tolerance']"),
        ("guidance: latest\n", "guidance must be one of"),
        ("missions: {BBU接地线检查: 0}\n", "mission weights must be numbers > 0"),
        ("sources:\n  - {name: a, type: mission_corpus}\n", "unknown type 'mission_corpus'"),
        ("lora: {warmup_ratio: 1.0}\n", "lora.warmup_ratio"),
        ("sources: []\n", "at least one source"),
    ],
)
def test_bad_yaml_is_refused_with_a_clear_message(tmp_path, yaml_text, message):
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_fusion_config(path)
    assert message in str(err.value)


def test_missing_config_file_and_relative_chatml_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_fusion_config(tmp_path / "absent.yaml")
    (tmp_path / "chat.jsonl").write_text('{"messages": []}\n', encoding="utf-8")
    (tmp_path / "f.yaml").write_text("sources:\n  - {name: c, type: chatml_file, path: chat.jsonl}\n", encoding="utf-8")
    assert load_fusion_config(tmp_path / "f.yaml").sources[0].path == str(tmp_path / "chat.jsonl")


def test_mix_is_deterministic_and_reports_realised_ratios():
    pools = {"a": [f"a{i}" for i in range(50)], "b": [f"b{i}" for i in range(5)], "c": []}
    ratios = {"a": 3.0, "b": 1.0, "c": 1.0}
    rows, reports = mixing.mix(pools, ratios, total_rows=40, seed=7)
    again, _ = mixing.mix(pools, ratios, total_rows=40, seed=7)
    other, _ = mixing.mix(pools, ratios, total_rows=40, seed=8)
    assert rows == again and rows != other and len(rows) == 40
    by = {r.name: r for r in reports}
    # the empty source is reported and its share goes to the others
    assert by["c"].realised == 0 and by["c"].note == "empty source" and by["c"].target_ratio == pytest.approx(0.2)
    assert (by["a"].realised, by["b"].realised) == (30, 10)
    assert by["a"].realised_ratio == pytest.approx(0.75) and by["b"].realised_ratio == pytest.approx(0.25)
    assert by["b"].upsampled and by["b"].unique == 5 and not by["a"].upsampled
    assert len(set(r for r in rows if r.startswith("a"))) == 30  # without replacement while the pool lasts
    assert sorted(r for r in rows if r.startswith("b")) == sorted(pools["b"] * 2)


def test_mix_default_total_and_quota_rounding():
    rows, reports = mixing.mix({"x": list(range(3)), "y": list(range(4))}, {"x": 1, "y": 1}, 0, seed=0)
    assert len(rows) == 7 and sum(r.realised for r in reports) == 7
    assert mixing.quotas({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    with pytest.raises(ValueError, match="ratios must be > 0"):
        mixing.mix({"x": [1]}, {"x": 0}, 0, seed=0)


def test_sources_drop_held_out_groups_and_missing_photos(tmp_path, sample_images):
    records = write_inputs(tmp_path, sample_images)
    held = {records[0]["group_id"]}
    kwargs = dict(mission=MISSION, data_root=tmp_path, images_root=sample_images, exclude_groups=held)
    distill = load_source(SourceConfig(name="d", type="distill_chatml"), **kwargs)
    assert len(distill.examples) == len(records) - 1 and distill.dropped == {"held_out_group": 1}
    assert all(e["images"] == [] and e["group_id"] not in held for e in distill.examples)
    (sample_images / MISSION / records[1]["images"][0]).unlink()
    stage_a = load_source(SourceConfig(name="s", type="stage_a_summaries"), **kwargs)
    n_photos = sum(len(r["images"]) for r in records[1:])
    assert len(stage_a.examples) == n_photos - 1 and stage_a.dropped["missing_image"] == 1
    ex = stage_a.examples[0]
    assert Path(ex["images"][0]).is_file() and ex["messages"][1]["content"][0] == {"type": "image"}
    assert ex["messages"][2]["content"] in ("机柜空槽位挡风板齐全，安装到位", "机柜有两个空槽位缺少挡风板")
    assert discover_missions(tmp_path) == [MISSION]
    missing = load_source(SourceConfig(name="d", type="distill_chatml"), **{**kwargs, "mission": "BBU接地线检查"})
    assert missing.examples == [] and "materialize distill_chatml" in missing.note


def test_chatml_rows_are_validated(sample_images):
    rows = distill_rows(stage_a_records(sample_images))
    assert validate_chatml(rows[0]["messages"], "x") is rows[0]["messages"]
    with pytest.raises(ValueError, match="last message must be the assistant"):
        validate_chatml(rows[0]["messages"][:2], "row 3")
    with pytest.raises(ValueError, match="non-empty string"):
        validate_chatml(rows[0]["messages"][:2] + [{"role": "assistant", "content": " "}], "row 3")


def test_lora_targets_are_the_last_k_blocks_only():
    names = [
        f"model.language_model.layers.{i}.{blk}.{p}"
        for i in range(4)
        for blk, p in (("self_attn", "q_proj"), ("self_attn", "v_proj"), ("mlp", "down_proj"))
    ] + ["model.visual.blocks.3.attn.qkv", "model.visual.merger.linear_fc1", "lm_head"]
    targets = policy.lora_target_modules(names, 2, ["q_proj", "down_proj"])
    assert targets == [
        "model.language_model.layers.2.mlp.down_proj",
        "model.language_model.layers.2.self_attn.q_proj",
        "model.language_model.layers.3.mlp.down_proj",
        "model.language_model.layers.3.self_attn.q_proj",
    ]
    with pytest.raises(ValueError, match="last_k=5 but the language model has 4"):
        policy.lora_target_modules(names, 5, ["q_proj"])
    with pytest.raises(ValueError, match="no language-model projections"):
        policy.lora_target_modules(names, 1, ["qkv"])
    assert policy.is_vision_param("base_model.model.model.visual.merger.linear_fc1.weight")


def _scores(correct: list[float]) -> dict:
    items = {m: list(correct) for m in evaluate.GATED_METRICS}
    return {**{m: sum(v) / len(v) if v else 0.0 for m, v in items.items()}, "items": items}


def test_bootstrap_gate_blocks_a_real_regression_and_passes_noise():
    cfg = EvalGateConfig()
    base = _scores([1, 1, 1, 1, 1, 1, 1, 1])
    gate = evaluate.mission_gate("m", base, _scores([0, 0, 0, 0, 0, 0, 0, 1]), cfg, seed=0)
    assert not gate["passed"] and len(gate["failures"]) == 3 and gate["rows"][0]["high"] < 0
    # one flipped answer out of eight is within the noise: the interval reaches 0
    noisy = evaluate.mission_gate("m", base, _scores([1, 1, 1, 1, 1, 1, 1, 0]), cfg, seed=0)
    assert noisy["passed"] and noisy["rows"][0]["low"] < 0 <= noisy["rows"][0]["high"]
    # equal models pass by default, fail when an improvement is demanded
    assert evaluate.mission_gate("m", base, base, cfg, seed=0)["passed"]
    assert not evaluate.mission_gate("m", base, base, EvalGateConfig(min_improvement=0.1), seed=0)["passed"]
    empty = evaluate.mission_gate("m", _scores([]), _scores([]), cfg, seed=0)
    assert not empty["passed"] and "no held-out items" in empty["failures"][0]
    assert "| m | stage_b/verdict_accuracy | 8 | 1.000 | 0.125 |" in evaluate.gate_table([gate])
    with pytest.raises(ValueError, match="must be paired"):
        stats.paired_group_bootstrap([1, 0], [1], 100, 0)


def test_stage_a_format_validity():
    assert evaluate.stage_a_format_valid("机柜空槽位挡风板齐全，安装到位")
    for bad in (None, "", "  ", "好好好好好好", "第一行\n第二行", "ab"):
        assert not evaluate.stage_a_format_valid(bad)


def test_held_out_records_prefer_stage_b_split(tmp_path, sample_images):
    from resources.store import atomic_write_jsonl

    records = stage_a_records(sample_images)
    with pytest.raises(ValueError, match="no Stage-B held-out split"):
        evaluate.held_out_records(records, tmp_path / "stage_b", seed=0)
    held, note = evaluate.held_out_records(records, tmp_path / "stage_b", seed=0, seeded_fallback=True)
    assert held and "seeded split" in note and "guidance: initial" in note
    atomic_write_jsonl(
        tmp_path / "stage_b" / "splits.jsonl",
        [{"run_id": "r1", "eval": [records[0]["record_id"]]}, {"run_id": "r2", "eval": [records[-1]["record_id"]]}],
    )
    held, note = evaluate.held_out_records(records, tmp_path / "stage_b", seed=0)
    assert held == [records[-1]] and "run r2" in note


def test_doctests():
    for module in (policy, evaluate, stats):
        assert doctest.testmod(module).failed == 0


def test_run_config_is_derived_and_overrides_the_yaml():
    from qc_assets.run_config import to_domain
    from qc_assets.student.assets import FusedSFTConfig

    fields = FusedSFTConfig.model_fields
    assert set(fields) == {"config_file", "max_steps", "seed", "guidance"}
    cfg = to_domain(
        FusedSFTConfig(config_file=str(REPO / "configs" / "fusion.example.yaml"), max_steps=3, guidance="initial"),
        FusionRunConfig,
    ).fusion_config()
    assert cfg.lora.max_steps == 3 and cfg.guidance == "initial" and cfg.sources[0].name == "stageb_teacher"
    with pytest.raises(ValueError, match="guidance must be one of"):
        FusionRunConfig(guidance="latest")


def test_lora_config_validation():
    with pytest.raises(ValueError, match="dropout"):
        LoraTrainingSpec(dropout=1.0)
    with pytest.raises(ValueError, match="projections"):
        LoraTrainingSpec(projections=())


def test_definitions_with_the_fusion_asset_load():
    import dagster as dg

    from qc_assets.student.assets import assets
    from qc_assets.student.checks import asset_checks
    from qc_assets.student.jobs import jobs
    from resources.storage import StorageResource
    from resources.training.resource import StudentTrainingResource

    defs = dg.Definitions(
        assets=assets,
        asset_checks=asset_checks,
        jobs=jobs,
        resources={"storage": StorageResource(), "student": StudentTrainingResource()},
    )
    dg.Definitions.validate_loadable(defs)
    spec = defs.resolve_assets_def("fused_sft_checkpoint")
    key = dg.AssetKey("fused_sft_checkpoint")
    assert set(spec.asset_deps[key]) == {
        dg.AssetKey("distill_chatml"),
        dg.AssetKey("stage_a_summaries"),
        dg.AssetKey("stage_b_guidance"),
    }
    assert spec.partitions_def is None and spec.op.pool == "gpu"
    blocking = {c.name: c.blocking for a in asset_checks for c in a.check_specs}
    assert blocking == {"fused_sft_eval_gate": True, "fused_sft_checkpoint_loads": True}
    assert defs.resolve_job_def("student_job")


def test_student_resource_refuses_the_smoke_model_unless_asked(tmp_path, monkeypatch):
    from resources.training.resource import StudentTrainingResource

    with pytest.raises(ValueError, match="QC_STUDENT_SMOKE_MODEL=1"):
        StudentTrainingResource().get_student()
    with pytest.raises(ValueError, match="no student checkpoint at"):
        StudentTrainingResource(model_path=str(tmp_path)).get_student()
    with pytest.raises(ValueError, match="student dtype must be one of"):
        StudentTrainingResource(model_path=str(tmp_path), dtype="fp8").get_student()


def test_student_resource_builds_the_smoke_model_only_when_asked(tmp_path, monkeypatch):
    from resources.training.resource import StudentTrainingResource
    from resources.vlm.tiny_qwen3vl import SMOKE_MODEL_NOTE

    monkeypatch.setenv("QC_DATA_ROOT", str(tmp_path))
    student = StudentTrainingResource(smoke_model=True).get_student()
    assert student.note == SMOKE_MODEL_NOTE and student.model_path.startswith(str(tmp_path))
    assert StudentTrainingResource(model_path=student.model_path).get_student().note == ""


def test_inputs_key_changes_with_any_input_and_a_changed_photo(tmp_path):
    import os

    from qc_assets.missions import get_mission
    from qc_assets.stage_b.guidance import Guidance
    from qc_assets.student.config import FusionConfig
    from qc_assets.student.sft import inputs_key

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"one")
    mission = get_mission("挡风板安装检查")
    plan = {
        mission.name: {
            "held": [{"record_id": "r1"}],
            "guidance": Guidance.initial(mission),
            "guidance_source": "initial",
        }
    }
    rows = [{"messages": [{"role": "user", "content": "x"}], "images": [str(photo)]}]
    key = inputs_key(FusionConfig(guidance="initial"), "m1", plan, rows)
    assert key == inputs_key(FusionConfig(guidance="initial"), "m1", plan, rows)
    assert key != inputs_key(FusionConfig(guidance="initial", seed=1), "m1", plan, rows)
    assert key != inputs_key(FusionConfig(guidance="initial"), "m2", plan, rows)
    assert key != inputs_key(FusionConfig(guidance="initial"), "m1", plan, rows + rows)
    other_plan = {mission.name: {**plan[mission.name], "held": [{"record_id": "r2"}]}}
    assert key != inputs_key(FusionConfig(guidance="initial"), "m1", other_plan, rows)
    photo.write_bytes(b"two!")  # a replaced photo: new size and mtime
    os.utime(photo, ns=(1, 1))
    assert key != inputs_key(FusionConfig(guidance="initial"), "m1", plan, rows)
