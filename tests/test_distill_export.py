"""Exported rows: the prompt is the production Stage-B prompt byte for byte and holds no label; the
pandera schema accepts good rows (and an empty corpus) and rejects bad ones; files round-trip."""

import hashlib
import json

import polars as pl
import pytest
from pandera.errors import SchemaErrors

from qc_assets.distill.config import DistillConfig
from qc_assets.distill.export import CHATML_JSONL, CHATML_PARQUET, chatml_rows, pair_rows, write_outputs
from qc_assets.distill.schema import rows_frame, validate_frame
from qc_assets.distill.select import hard_records, judge_answers, preference_pairs
from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_messages
from resources.store import read_jsonl

MISSION = get_mission("挡风板安装检查")
GUIDANCE = Guidance.initial(MISSION)


def record(group: str, label: str, text: str = "空槽位挡风板齐全，安装到位") -> dict:
    return {
        "record_id": f"rid-{group}-{label}",
        "group_id": group,
        "mission": MISSION.name,
        "label": label,
        "images": [f"{group}/1.jpg"],
        "per_image": {"image_1": text, "image_2": "机柜整体照片"},
        "image_sha256": [hashlib.sha256(f"{group}{i}".encode()).hexdigest() for i in (1, 2)],
    }


def build(records, raws, config=None, factor: int = 1):
    """Rows and pairs for `raws[record_id] = [answer texts by sample]`."""
    config = config or DistillConfig()
    by_id = {r["record_id"]: r for r in records}
    answers = [
        {
            "record_id": rid,
            "group_id": by_id[rid]["group_id"],
            "label": by_id[rid]["label"],
            "sample": s,
            "seed": s,
            "raw": raw,
            "error": None,
        }
        for rid, texts in raws.items()
        for s, raw in enumerate(texts)
    ]
    judged = judge_answers(answers, config)
    prompts = {rid: build_messages(MISSION, GUIDANCE, rec) for rid, rec in by_id.items()}
    hard = hard_records(records, set(), config)
    rows = chatml_rows(judged, by_id, prompts, GUIDANCE, "teacher:test", hard, factor)
    pairs = pair_rows(preference_pairs(judged), by_id, prompts, GUIDANCE, "teacher:test")
    return rows, pairs, judged


def dumps(messages) -> bytes:
    return json.dumps(messages, ensure_ascii=False).encode("utf-8")


def test_prompt_is_the_production_prompt_byte_for_byte_and_holds_no_label(tmp_path):
    recs = [record("g1", "pass"), record("g1", "fail", "两个空槽位缺少挡风板")]  # a resubmitted group
    rows, pairs, _ = build(
        recs,
        {"rid-g1-pass": ["通过\n理由: 挡风板齐全"], "rid-g1-fail": ["不通过\n理由: 缺少挡风板", "通过\n理由: 齐全"]},
    )
    write_outputs(tmp_path, rows, pairs, [])
    from_jsonl = read_jsonl(tmp_path / CHATML_JSONL)
    from_parquet = pl.read_parquet(tmp_path / CHATML_PARQUET).to_dicts()
    by_id = {r["record_id"]: r for r in recs}
    for exported in (rows, from_jsonl, from_parquet):
        assert len(exported) == 2
        for row in exported:
            expected = build_messages(MISSION, GUIDANCE, by_id[row["record_id"]])
            assert dumps(row["messages"][:2]) == dumps(expected)
            assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    (pair,) = pairs
    assert dumps(pair["prompt"]) == dumps(build_messages(MISSION, GUIDANCE, by_id["rid-g1-fail"]))
    # The prompt does not depend on the label: flipping it leaves every byte unchanged ...
    flipped = {**by_id["rid-g1-pass"], "label": "fail"}
    (pass_row,) = [r for r in rows if r["record_id"] == "rid-g1-pass"]
    assert dumps(build_messages(MISSION, GUIDANCE, flipped)) == dumps(pass_row["messages"][:2])
    # ... and no spelling of it appears in the system or user turn.
    for row in rows:
        prompt = row["messages"][0]["content"] + row["messages"][1]["content"]
        for leak in ("pass", "fail", "label", "人工审核结果", "审核结果:"):
            assert leak not in prompt


def test_rows_carry_lineage_and_hard_cases_are_repeated():
    recs = [record("g1", "pass"), record("g2", "fail", "缺少挡风板")]
    rows, _, _ = build(recs, {"rid-g1-pass": ["通过\n理由: 齐全"], "rid-g2-fail": ["不通过\n理由: 缺少"]}, factor=3)
    fail_rows = [r for r in rows if r["label"] == "fail"]
    assert [r["copy"] for r in fail_rows] == [0, 1, 2] and {r["weight"] for r in fail_rows} == {3}
    (pass_row,) = [r for r in rows if r["label"] == "pass"]
    assert pass_row["weight"] == 1 and not pass_row["hard_case"]
    assert pass_row["guidance_version"] == GUIDANCE.version and pass_row["guidance_hash"] == GUIDANCE.content_hash()
    assert pass_row["image_sha256"] == recs[0]["image_sha256"] and pass_row["record_id"] == "rid-g1-pass"
    assert validate_frame(rows_frame(rows)).height == 4


def test_schema_accepts_an_empty_corpus(tmp_path):
    write_outputs(tmp_path, [], [], [])
    frame = pl.read_parquet(tmp_path / CHATML_PARQUET)
    assert frame.height == 0 and validate_frame(frame).height == 0


@pytest.mark.parametrize(
    "breakage, failing_check",
    [
        (lambda r: r.update(label="maybe"), "isin"),
        (lambda r: r["messages"][-1].update(content="通过"), "assistant_obeys_verdict_contract"),
        (lambda r: r["messages"][-1].update(content="不通过\n理由: 缺少"), "assistant_obeys_verdict_contract"),
        (
            lambda r: r.update(messages=[r["messages"][1], r["messages"][0], r["messages"][2]]),
            "roles_are_system_user_assistant",
        ),
        (lambda r: r.update(image_sha256=["not-a-hash"]), "non_empty_list_of_sha256"),
        (lambda r: r.update(copy=1), "copy_below_weight"),
    ],
)
def test_schema_rejects_a_bad_row(breakage, failing_check):
    rows, _, _ = build([record("g1", "pass")], {"rid-g1-pass": ["通过\n理由: 齐全"]})
    good = rows_frame(rows)
    assert validate_frame(good).height == 1
    bad = json.loads(json.dumps(rows[0], ensure_ascii=False))
    breakage(bad)
    with pytest.raises(SchemaErrors, match=failing_check):
        validate_frame(rows_frame([bad]))
