"""Gates, scoring, judge short-circuit, keep rules, chatml/preference export and reports on real
SQLite databases (candidate texts written here stand in for teacher outputs)."""

import json

import pytest

from qc_assets.fastdistill.generation import GenerationConfig
from qc_assets.fastdistill.reports import manifest, percentile, quality_report, stage_timing, write_stage_reports
from qc_assets.fastdistill.scoring import exec_rows, gate_rows, judge_rows, score_rows
from qc_assets.fastdistill.select_export import KeepRules, preference_pairs, select_rows, sft_rows
from qc_assets.fastdistill.text2sql_data import synthetic_dataset
from resources.doubles.http_server import free_port
from resources.llm import DecodeParams


@pytest.fixture()
def record(tmp_path):
    recs = synthetic_dataset(tmp_path, seed=2, per_template=1)
    rec = next(r for r in recs if r["gold_sql"].startswith("SELECT COUNT(*) FROM cities"))
    return {**rec, "sample_id": "s1", "split": "train"}


def candidates(record, texts, recipe="sql"):
    return [
        {
            **record,
            "candidate_id": f"s1:{k}",
            "candidate_index": k,
            "recipe": recipe,
            "teacher_fingerprint": "t",
            "teacher_text": text,
            "teacher_error": None if text is not None else "HTTP 500",
        }
        for k, text in enumerate(texts)
    ]


def pipeline_rows(record, texts, recipe="sql"):
    return score_rows(exec_rows(gate_rows(candidates(record, texts, recipe), 2000), timeout_s=1.0, max_rows=100))


def test_gates_in_cost_order_and_scores(record):
    texts = [
        f"```sql\n{record['gold_sql']};\n```",
        "SELECT COUNT(*) FROM cities",
        "I think 3.",
        None,
        "SELECT nope FROM cities",
        "DELETE FROM cities",
    ]
    rows = pipeline_rows(record, texts)
    assert [r["reject_reason"] for r in rows] == [None, None, "not_select", "generation_error", None, "not_select"]
    assert [r["exec_pass"] for r in rows] == [True, True, False, False, False, False]
    assert rows[0]["gold_match"] and not rows[1]["gold_match"]
    assert rows[4]["exec_error_class"] == "no_such_column"
    assert [r["score"] for r in rows] == [1.0, 0.3, 0.0, 0.0, 0.0, 0.0]
    assert rows[3]["sql"] is None  # a failed request is never turned into an empty answer


def test_select_export_and_pairs(record):
    rows = select_rows(
        pipeline_rows(record, ["SELECT COUNT(*) FROM cities", record["gold_sql"], "no idea"]), KeepRules()
    )
    assert [r["kept"] for r in rows] == [False, True, False]
    assert [r["keep_reject_reason"] for r in rows] == ["gold_mismatch", None, "not_select"]
    sft = sft_rows(rows)
    assert len(sft) == 1
    assert [m["role"] for m in sft[0]["messages"]] == ["system", "user", "assistant"]
    assert sft[0]["messages"][-1]["content"] == record["gold_sql"]
    assert record["question"] in sft[0]["messages"][1]["content"]
    pairs = preference_pairs(rows)
    assert len(pairs) == 1
    assert pairs[0]["chosen"] == record["gold_sql"] and pairs[0]["rejected"] == "no idea"
    assert pairs[0]["chosen_score"] > pairs[0]["rejected_score"]
    dev_rows = [{**r, "split": "dev"} for r in rows]  # held-out inputs are never exported
    assert sft_rows(dev_rows) == [] and preference_pairs(dev_rows) == []
    loose = select_rows(
        pipeline_rows(record, ["SELECT COUNT(*) FROM cities", "SELECT COUNT(*) FROM cities"]),
        KeepRules(require_gold_match=False, max_per_input=1),
    )
    assert [r["kept"] for r in loose] == [True, False]
    assert loose[1]["keep_reject_reason"] == "not_best_of_input"
    with pytest.raises(ValueError, match="max_per_input"):
        KeepRules(max_per_input=0)


def test_rationale_recipe_splits_and_exports_both(record):
    text = f"### RATIONALE\nCount rows of cities in one country.\n### ANSWER\n{record['gold_sql']}"
    rows = select_rows(pipeline_rows(record, [text], "rationale"), KeepRules())
    assert rows[0]["rationale"] == "Count rows of cities in one country." and rows[0]["sql"] == record["gold_sql"]
    sft = sft_rows(rows)
    assert sft[0]["rationale"] == rows[0]["rationale"] and sft[0]["answer"] == record["gold_sql"]
    assert sft[0]["messages"][-1]["content"].startswith("### RATIONALE\n")
    assert "### RATIONALE" in sft[0]["messages"][0]["content"]


class CountingLLM:
    def __init__(self, llm):
        self.llm, self.conversations = llm, 0

    @property
    def fingerprint(self):
        return self.llm.fingerprint

    def chat(self, conversations, params):
        self.conversations += len(conversations)
        return self.llm.chat(conversations, params)


def test_judge_only_sees_executed_candidates(record, tmp_path):
    from resources.llm.openai_backend import OpenAIChatLLM

    port = free_port()  # nothing listens there
    judge = CountingLLM(OpenAIChatLLM(f"http://127.0.0.1:{port}/v1", "judge", max_retries=0, timeout_s=2))
    rows = exec_rows(gate_rows(candidates(record, [record["gold_sql"], "nonsense", "SELECT x FROM y"]), 2000), 1.0, 100)
    judged, info = judge_rows(
        judge, rows, DecodeParams(max_new_tokens=4), tmp_path / "j.jsonl", GenerationConfig(max_in_flight=1)
    )
    assert judge.conversations == 1 and info["judged"] == 1
    assert [r["judge_score"] for r in judged] == [None, None, None]  # the judge request failed: no score
    assert score_rows(judged)[0]["score"] == 1.0


def test_reports(tmp_path, record):
    rows = select_rows(pipeline_rows(record, [record["gold_sql"], "SELECT nope FROM cities", "x"]), KeepRules())
    q = quality_report(rows)
    assert (q["total"], q["kept"], q["rejected"]) == (3, 1, 2)
    assert q["p_keep"] == pytest.approx(1 / 3) and q["exec_pass_rate"] == pytest.approx(1 / 3)
    assert q["exec_error_counts"] == {"no_such_column": 1}
    assert q["reject_reason_counts"] == {"exec_no_such_column": 1, "not_select": 1}
    m = manifest(rows, "candidate_id")
    assert m["count"] == 3 and m["min_sample_id"] == "s1:0" and m["max_sample_id"] == "s1:2"
    assert m["field_hash"] == manifest(list(reversed(rows)), "candidate_id")["field_hash"]
    assert m["field_hash"] != manifest(rows[:2], "candidate_id")["field_hash"]
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 90) is None
    timing = stage_timing([0.1, 0.2, 0.3, 0.4, 1.0], wall_s=2.0)
    assert timing["p95"] == pytest.approx(0.88) and timing["count"] == 5
    reports = write_stage_reports(tmp_path / "select", rows, timing, "candidate_id")
    on_disk = json.loads((tmp_path / "select" / "timing_report.json").read_text())
    assert on_disk == reports["timing_report"] and on_disk["total"]["wall_s"] == 2.0
