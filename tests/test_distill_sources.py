"""`distill_chatml`'s answer source: Stage-B's selected candidates of the kept epoch (no teacher call)
or a second teacher pass, against `FaultInjectionServer` (a test-only OpenAI-shaped server on
127.0.0.1 whose hit counter shows whether the teacher was asked). Test groups are never exported."""

import dagster as dg
import pytest
from test_distill_asset import MISSION, OUT, checks_of, materialize, write_stage_a, write_stage_b

from qc_assets.distill.assets import DistillAssetConfig, distill_chatml
from qc_assets.distill.checks import asset_checks
from qc_assets.distill.sources import choose_source
from qc_assets.stage_b.prompts import build_messages
from resources.llm.openai_backend import OpenAIChatLLM
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl, read_jsonl

PASS_TEXT, FAIL_TEXT = "通过\n理由: 挡风板齐全", "不通过\n理由: 缺少挡风板"


def selection(epoch: int, pool: str, gid: str, label: str, version: int, raw: str | None, model: str) -> dict:
    chosen = (
        None
        if raw is None
        else {
            "raw": raw,
            "verdict": None,
            "reason": None,
            "temperature": 0.7,
            "top_p": 0.95,
            "seed": 7,
            "sample": 1,
            "max_new_tokens": 64,
            "regex": None,
            "model": model,
            "finish_reason": "stop",
        }
    )
    return {
        "run_id": "run-0001",
        "epoch": epoch,
        "pool": pool,
        "guidance_version": version,
        "record_id": f"rid-{gid}",
        "group_id": gid,
        "label": label,
        "selected": chosen,
    }


def write_selections(root, version: int, model: str) -> None:
    """Epoch 1 (older) got g2 right; epoch 2, the one that kept the guidance: g0 right, g1 wrong, g2 no
    majority. g3 is on the test side: its test_kept row must never be exported."""
    atomic_write_jsonl(
        root / "stage_b_guidance" / MISSION.name / "selections.jsonl",
        [
            selection(1, "train", "g2", "pass", version, PASS_TEXT, model),
            selection(2, "train", "g0", "pass", version, PASS_TEXT, model),
            selection(2, "selection", "g1", "fail", version, PASS_TEXT, model),
            selection(2, "train", "g2", "pass", version, None, model),
            selection(2, "test_kept", "g3", "fail", version, FAIL_TEXT, model),
        ],
    )


def teacher(server, model: str) -> LLMResource:
    return LLMResource(backend="openai", base_url=server.base_url, model=model, max_retries=0)


def test_selections_are_distilled_without_a_teacher_call(fault_server, tmp_path):
    fault_server.script("distill-sel", ["ok"])
    records = write_stage_a(tmp_path, n_groups=4)
    guidance = write_stage_b(tmp_path, test_ids=("rid-g3",))
    write_selections(tmp_path, guidance.version, OpenAIChatLLM(fault_server.base_url, "distill-sel").fingerprint)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(tmp_path, instance, teacher(fault_server, "distill-sel"), DistillAssetConfig(n_samples=2))
    assert result.success
    assert fault_server.hits["distill-sel"] == 0  # Stage-B already asked the teacher
    meta = {k: v.value for k, v in result.asset_materializations_for_node(OUT)[0].metadata.items()}
    assert meta["distill/source"] == "selections" and meta["distill/source_reason"].startswith("auto:")
    assert meta["distill/teacher_calls"] == 0 and meta["distill/teacher_calls_saved"] == 3 * 2
    assert meta["distill/answers"] == 3 and meta["distill/held_out_test_records"] == 1
    assert meta["distill/rejected_label_mismatch"] == 1 and meta["distill/rejected_no_selection"] == 1
    rows = read_jsonl(tmp_path / OUT / MISSION.name / "distill_chatml.jsonl")
    assert [(r["group_id"], r["messages"][-1]["content"]) for r in rows] == [("g0", PASS_TEXT)]  # one row per group
    assert rows[0]["messages"][:2] == build_messages(MISSION, guidance, records[0])
    assert checks_of(result)["distill_chatml_label_agreement"].passed


def test_teacher_source_when_stage_b_ran_another_model_never_asks_about_test_groups(fault_server, tmp_path):
    fault_server.script("distill-teach", ["ok"])  # always 通过: kept for g0 and g2
    write_stage_a(tmp_path, n_groups=4)
    guidance = write_stage_b(tmp_path, test_ids=("rid-g3",))
    write_selections(tmp_path, guidance.version, "llama_cpp:smollm2:0000")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(
            tmp_path, instance, teacher(fault_server, "distill-teach"), DistillAssetConfig(n_samples=1)
        )
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node(OUT)[0].metadata.items()}
    assert meta["distill/source"] == "teacher" and "is not the teacher" in meta["distill/source_reason"]
    assert meta["distill/stage_b_model"] == "llama_cpp:smollm2:0000"
    assert meta["distill/teacher_calls"] == 3 == fault_server.hits["distill-teach"]  # g0..g2, never g3
    assert meta["distill/teacher_calls_saved"] == 0 and meta["distill/held_out_test_records"] == 1
    out = tmp_path / OUT / MISSION.name
    assert {r["record_id"] for r in read_jsonl(out / "teacher_answers.jsonl")} == {"rid-g0", "rid-g1", "rid-g2"}
    assert {r["group_id"] for r in read_jsonl(out / "distill_chatml.jsonl")} == {"g0", "g2"}


def test_selections_requested_from_another_model_fail_clearly(fault_server, tmp_path):
    write_stage_a(tmp_path, n_groups=4)
    guidance = write_stage_b(tmp_path, test_ids=("rid-g3",))
    write_selections(tmp_path, guidance.version, "llama_cpp:smollm2:0000")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        with pytest.raises(dg.Failure, match="source: selections needs Stage-B to have run with the teacher"):
            dg.materialize(
                [distill_chatml, *asset_checks],
                partition_key=MISSION.name,
                instance=instance,
                resources={
                    "storage": StorageResource(data_root=str(tmp_path)),
                    "teacher_llm": teacher(fault_server, "distill-x"),
                },
                run_config=dg.RunConfig({OUT: DistillAssetConfig(source="selections")}),
            )


def test_a_stage_b_run_without_its_split_is_refused(fault_server, tmp_path):
    write_stage_a(tmp_path, n_groups=2)
    write_stage_b(tmp_path)
    (tmp_path / "stage_b_guidance" / MISSION.name / "splits.jsonl").unlink()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        with pytest.raises(dg.Failure, match="splits.jsonl has no split for Stage-B run 'run-0001'"):
            dg.materialize(
                [distill_chatml],
                partition_key=MISSION.name,
                instance=instance,
                resources={
                    "storage": StorageResource(data_root=str(tmp_path)),
                    "teacher_llm": teacher(fault_server, "distill-x"),
                },
                run_config=dg.RunConfig({OUT: DistillAssetConfig()}),
            )


@pytest.mark.parametrize(
    "requested, stage_b, expected",
    [
        ("auto", "m", "selections"),
        ("auto", "other", "teacher"),
        ("auto", None, "teacher"),
        ("teacher", "m", "teacher"),
        ("selections", "m", "selections"),
    ],
)
def test_choose_source(requested, stage_b, expected):
    assert choose_source(requested, stage_b, "m").source == expected


@pytest.mark.parametrize("stage_b_regex, expected", [(True, "selections"), (False, "teacher"), (None, "teacher")])
def test_auto_takes_selections_under_constrained_decoding_only_if_stage_b_decoded_so(stage_b_regex, expected):
    choice = choose_source("auto", "m", "m", constrained=True, stage_b_regex=stage_b_regex)
    assert choice.source == expected
    assert choose_source("auto", "m", "m", constrained=False, stage_b_regex=stage_b_regex).source == "selections"
