"""End to end through the real OpenAI-compatible client and `ScriptedRuleFollowingServer` (a named test
double): the rule the loop learns and keeps is the rule production verdicts apply to new submissions."""

from dataclasses import replace

from support.stage_b_data import CORRECT, GOOD, HARMFUL, LOOSE, MISSION, keyword_records
from test_stage_b_learns import CONFIG, quiet

from qc_assets.stage_a.records import record_id
from qc_assets.stage_b.guidance import GuidanceStore
from qc_assets.stage_b.loop import run_stage_b
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.run import run_verdicts
from qc_assets.verdicts.table import read_table


def inbox(group_id: str, summary: str) -> dict:
    return {
        "group_id": group_id,
        "mission": MISSION.name,
        "label": None,
        "images": [f"待审核/{group_id}/1.jpg"],
        "per_image": {"image_1": summary},
        "record_id": record_id(MISSION.name, None, group_id),
        "image_sha256": [group_id.ljust(64, "0")],
        "truncated_images": 0,
        "truncated_keys": [],
    }


def test_the_kept_rule_decides_new_submissions(scripted_server, tmp_path):
    scripted_server.script_reflector([{"operations": [CORRECT]}, {"operations": [HARMFUL]}])
    stage_b_dir = tmp_path / "stage_b_guidance"
    result = run_stage_b(
        keyword_records(n_groups=80),
        MISSION,
        scripted_server.client(),
        replace(CONFIG, min_test_groups=20),
        stage_b_dir,
        log=quiet,
    )
    store = GuidanceStore(stage_b_dir / "guidance")
    kept = store.load(store.pointer("best"))
    assert kept.version == result.kept_version == 1 and CORRECT["text"] in [it.text for it in kept.items]

    records = [inbox("new-loose", LOOSE), inbox("new-good", GOOD[0])]
    ids = dict.fromkeys((r["group_id"] for r in records), 0)
    config = VerdictConfig(constrained=False)
    (tmp_path / "images").mkdir()

    run_verdicts(
        records,
        ids,
        MISSION,
        store.load(0),
        scripted_server.client(),
        config,
        tmp_path / "v0",
        tmp_path / "images",
        log=quiet,
    )
    under_baseline = {r["group_id"]: r["verdict"] for r in read_table(tmp_path / "v0")}
    assert under_baseline == {"new-loose": "pass", "new-good": "pass"}, "the baseline has no rule on 松动"

    run_verdicts(
        records, ids, MISSION, kept, scripted_server.client(), config, tmp_path / "kept", tmp_path / "images", log=quiet
    )
    rows = {r["group_id"]: r for r in read_table(tmp_path / "kept")}
    assert rows["new-loose"]["verdict"] == "fail" and rows["new-good"]["verdict"] == "pass"
    assert {r["guidance_version"] for r in rows.values()} == {1}
    assert {r["guidance_hash"] for r in rows.values()} == {kept.content_hash()}
    assert not any(r["needs_review"] for r in rows.values())
