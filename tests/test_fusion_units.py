"""Fusion config, source loading, mixing, LoRA target naming and the regression gate (no model)."""

import doctest
from pathlib import Path

import pytest

from fusion_fixtures import MISSION, distill_rows, stage_a_records, write_inputs
from qc_assets.fusion import evaluate, mixing, policy
from qc_assets.fusion.config import FusionConfig, LoraSFTConfig, SourceConfig, load_fusion_config
from qc_assets.fusion.sources import load_source, validate_chatml

REPO = Path(__file__).resolve().parents[1]


def test_example_config_loads_and_roundtrips():
    cfg = load_fusion_config(REPO / "configs" / "fusion.example.yaml")
    assert [s.type for s in cfg.sources] == ["distill_chatml", "mission_corpus", "stage_a_summaries"]
    assert cfg.lora.last_k == 2 and cfg.eval.tolerance == 0.05
    assert FusionConfig(**{**cfg.__dict__}).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("yaml_text, message", [
    ("sources:\n  - {name: a, type: distill_chatml, ratio: 0}\n", "ratio must be a number > 0"),
    ("sources:\n  - {name: a, type: distill_chatml, ratio: -1}\n", "ratio must be a number > 0"),
    ("sources:\n  - {name: a, type: parquet_dump, ratio: 1}\n", "unknown type 'parquet_dump'"),
    ("sources:\n  - {name: a, type: chatml_file, path: nope.jsonl}\n", "does not exist"),
    ("sources:\n  - {name: a, type: distill_chatml}\n  - {name: a, type: stage_a_summaries}\n", "unique"),
    ("sources:\n  - {name: a, type: distill_chatml, weight: 2}\n", "unknown keys ['weight']"),
    ("lora: {last_k: 0}\n", "lora.last_k must be an integer >= 1"),
    ("eval: {tolerance: 1.5}\n", "eval.tolerance must be in"),
    ("sources: []\n", "at least one source"),
])
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
    (tmp_path / "f.yaml").write_text("sources:\n  - {name: c, type: chatml_file, path: chat.jsonl}\n",
                                     encoding="utf-8")
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
    other = load_source(SourceConfig(name="o", type="mission_corpus"), **kwargs)
    assert other.examples == [] and other.note == "no other mission corpora"
    missing = load_source(SourceConfig(name="d", type="distill_chatml"),
                          **{**kwargs, "mission": "BBU接地线检查"})
    assert missing.examples == [] and "materialize distill_chatml" in missing.note


def test_chatml_rows_are_validated(sample_images):
    rows = distill_rows(stage_a_records(sample_images))
    assert validate_chatml(rows[0]["messages"], "x") is rows[0]["messages"]
    with pytest.raises(ValueError, match="last message must be the assistant"):
        validate_chatml(rows[0]["messages"][:2], "row 3")
    with pytest.raises(ValueError, match="non-empty string"):
        validate_chatml(rows[0]["messages"][:2] + [{"role": "assistant", "content": " "}], "row 3")


def test_lora_targets_are_the_last_k_blocks_only():
    names = ([f"model.language_model.layers.{i}.{blk}.{p}" for i in range(4)
              for blk, p in (("self_attn", "q_proj"), ("self_attn", "v_proj"), ("mlp", "down_proj"))]
             + ["model.visual.blocks.3.attn.qkv", "model.visual.merger.linear_fc1", "lm_head"])
    targets = policy.lora_target_modules(names, 2, ["q_proj", "down_proj"])
    assert targets == ["model.language_model.layers.2.mlp.down_proj", "model.language_model.layers.2.self_attn.q_proj",
                       "model.language_model.layers.3.mlp.down_proj", "model.language_model.layers.3.self_attn.q_proj"]
    with pytest.raises(ValueError, match="last_k=5 but the language model has 4"):
        policy.lora_target_modules(names, 5, ["q_proj"])
    with pytest.raises(ValueError, match="no language-model projections"):
        policy.lora_target_modules(names, 1, ["qkv"])
    assert policy.is_vision_param("base_model.model.model.visual.merger.linear_fc1.weight")


def test_assistant_labels_mask_everything_but_the_reply():
    labels = policy.assistant_labels(3, [10, 11, 2, 5], end_id=2)
    assert labels == [-100, -100, -100, 10, 11, 2, -100]
    with pytest.raises(ValueError, match="no end token"):
        policy.assistant_labels(3, [10, 11], end_id=2)


def test_regression_gate_pass_and_fail_paths():
    base = {m: 0.5 for m in evaluate.GATED_METRICS}
    assert evaluate.regression_gate(base, dict(base), tolerance=0.0)["passed"]
    worse = {**base, "stage_b/verdict_accuracy": 0.4}
    gate = evaluate.regression_gate(base, worse, tolerance=0.05)
    assert not gate["passed"] and gate["failures"] == ["stage_b/verdict_accuracy"]
    assert "| stage_b/verdict_accuracy | 0.500 | 0.400 | -0.100 | NO |" in evaluate.gate_table(gate)
    assert evaluate.regression_gate(base, worse, tolerance=0.1)["passed"]
    with pytest.raises(ValueError, match="missing from fused"):
        evaluate.regression_gate(base, {}, tolerance=0.1)


def test_stage_a_format_validity():
    assert evaluate.stage_a_format_valid("机柜空槽位挡风板齐全，安装到位")
    for bad in (None, "", "  ", "好好好好好好", "第一行\n第二行", "ab"):
        assert not evaluate.stage_a_format_valid(bad)


def test_held_out_records_prefer_stage_b_split(tmp_path, sample_images):
    from resources.store import atomic_write_jsonl

    records = stage_a_records(sample_images)
    held, note = evaluate.held_out_records(records, tmp_path / "stage_b", seed=0)
    assert held and "seeded split" in note
    atomic_write_jsonl(tmp_path / "stage_b" / "splits.jsonl",
                       [{"run_id": "r1", "eval": [records[0]["record_id"]]},
                        {"run_id": "r2", "eval": [records[-1]["record_id"]]}])
    held, note = evaluate.held_out_records(records, tmp_path / "stage_b", seed=0)
    assert held == [records[-1]] and "run r2" in note


def test_doctests():
    for module in (policy, evaluate):
        assert doctest.testmod(module).failed == 0


def test_lora_config_validation():
    with pytest.raises(ValueError, match="dropout"):
        LoraSFTConfig(dropout=1.0)
    with pytest.raises(ValueError, match="projections"):
        LoraSFTConfig(projections=())


def test_definitions_with_the_fusion_asset_load():
    import dagster as dg

    from qc_assets.fusion.assets import assets, asset_checks
    from resources.storage import StorageResource
    from resources.vlm.resource import VLMResource

    defs = dg.Definitions(assets=assets, asset_checks=asset_checks,
                          resources={"storage": StorageResource(), "vlm": VLMResource()})
    dg.Definitions.validate_loadable(defs)
    spec = defs.resolve_assets_def("fused_sft_checkpoint")
    key = dg.AssetKey("fused_sft_checkpoint")
    assert set(spec.asset_deps[key]) == {dg.AssetKey("distill_chatml"), dg.AssetKey("stage_a_summaries")}
    assert spec.partitions_def.name == "missions" and spec.op.pool == "gpu"
    blocking = {c.name: c.blocking for a in asset_checks for c in a.check_specs}
    assert blocking == {"fused_sft_eval_gate": True, "fused_sft_adapter_loads": True}
