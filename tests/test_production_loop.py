"""The production loop end to end under a real Dagster daemon (local SQLite instance): verdicts ->
review -> drift -> automatic re-learning -> re-judging -> mission_health, with no test code deciding
when anything runs after the first learning.

Models that cannot run here are named test doubles: `ScriptedRuleFollowingServer` (a capable LLM: its
student follows the guidance's 「keyword」 rules, its reflector replays prepared edits) and
`ScriptedVLMServerDouble` (a VLM server answering each photo with a scripted summary).

1. A mission learns R1 (松动 fails a group) and judges its inbox (one CLI materialization).
2. New submissions carry a defect no rule covers (锈蚀). A reviewer files 40 judged groups; the sensor
   summarises them and logs the reviews; agreement falls to about half.
3. The drift check would fail, so `relearn_automation` requests `stage_b_guidance` for that mission,
   tagged; the scripted reflector proposes R5 (锈蚀), the gate accepts it, and `qc_verdicts` re-judges the
   groups still waiting: the rusty ones now fail.
4. The reviewer files those too: the machine now agrees with every one.
5. `mission_health` shows the new version and what fired the re-learning.
"""

import hashlib
import io
import os
import shutil

import dagster as dg
import polars as pl
import pytest
import yaml
from PIL import Image
from support.services import ROOT, VENV_BIN, run_cli, start, wait_until
from support.stage_b_data import CORRECT, GOOD, LOOSE

from qc_assets.verdicts.table import read_table
from resources.doubles.llm_servers import MODEL
from resources.doubles.vlm_server import ScriptedVLMServerDouble
from resources.store import read_jsonl

pytestmark = pytest.mark.slow

MISSION = "挡风板安装检查"
RUSTY = "接地螺栓锈蚀，表面发红"
RUST = {"op": "add", "text": "接地螺栓出现「锈蚀」的判为不通过"}


class PhotoSet:
    """Distinct small photos whose scripted summaries the VLM double answers."""

    def __init__(self, images, vlm: ScriptedVLMServerDouble):
        self.images, self.vlm, self.count = images, vlm, 0

    def group(self, folder: str, group_id: str, captions: list[str]) -> None:
        for i, caption in enumerate(captions, start=1):
            self.count += 1
            colour = (self.count * 37 % 256, self.count * 91 % 256, self.count // 7 % 256)
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
            path = self.images / MISSION / folder / group_id / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.getvalue())
            self.vlm.captions[hashlib.sha256(buf.getvalue()).hexdigest()] = caption


def _runs(instance, **tags) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


def _succeeded(instance, job: str) -> int:
    return len(instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.SUCCESS])))


def test_drift_triggers_relearning_and_rejudging_under_the_daemon(scripted_server, tmp_path):
    vlm = ScriptedVLMServerDouble()
    images, data, home = tmp_path / "images", tmp_path / "data", tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    photos = PhotoSet(images, vlm)
    for g in range(45):  # labelled history: every third group has a loose baffle (fail)
        loose = g % 3 == 1
        photos.group("审核不通过" if loose else "审核通过", f"H{g:03d}", [GOOD[g % 3], LOOSE if loose else GOOD[0]])
    for g in range(40):  # submissions, half with rusty bolts: no rule covers them yet
        photos.group("待审核", f"I{g:03d}", [GOOD[g % 3], RUSTY if g % 2 == 0 else GOOD[1]])
    for g in range(6):  # still waiting when the guidance changes
        photos.group("待审核", f"P{g:03d}", [GOOD[g % 3], RUSTY if g % 2 == 0 else GOOD[2]])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "QC_DATA_ROOT": str(data),
        "QC_IMAGES_ROOT": str(images),
        "QC_LLM_BACKEND": "openai",
        "QC_LLM_BASE_URL": scripted_server.base_url,
        "QC_LLM_MODEL": MODEL,
        "QC_LLM_STRUCTURED_OUTPUT": "vllm",
        "QC_VLM_BACKEND": "openai",
        "QC_VLM_BASE_URL": vlm.base_url,
        "QC_VLM_SERVED_MODEL": "vlm-double",
        "QC_AUTOMATION_INTERVAL_S": "5",
        "QC_RELEARN_AFTER": "1000",
        "QC_MODEL_RETRIES": "0",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    daemon = start(
        "dagster-daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], tmp_path / "logs", env
    )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # the sensor finds the mission: Stage-A for the history, the inbox summarised (no guidance yet)
            wait_until(
                lambda: _succeeded(instance, "stage_a_job") and _succeeded(instance, "inbox_verdicts_job"),
                300,
                "the sensor's first Stage-A and inbox runs",
                (daemon,),
            )

            # 1. the first learning, asked for by a person
            scripted_server.script_reflector([{"operations": [CORRECT]}])
            config = tmp_path / "run.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "ops": {
                            "stage_b_guidance": {
                                "config": {
                                    "epochs": 2,
                                    "rounds_per_epoch": 1,
                                    "min_test_groups": 8,
                                    "bootstrap_samples": 200,
                                }
                            }
                        }
                    }
                )
            )
            done = run_cli(
                [
                    str(VENV_BIN / "dagster"),
                    "asset",
                    "materialize",
                    "-m",
                    "definitions",
                    "--select",
                    "stage_b_guidance,qc_verdicts",
                    "--partition",
                    MISSION,
                    "-c",
                    str(config),
                ],
                env,
                600,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            first = {r["group_id"]: r["verdict"] for r in read_table(data / "qc_verdicts" / MISSION)}
            assert first["I000"] == "pass" and first["P000"] == "pass", "R1 says nothing about rust"

            # 2. a reviewer files the 40 I-groups; the P-groups keep waiting
            scripted_server.script_reflector([{"operations": [RUST]}])
            for g in range(40):
                label = "审核不通过" if g % 2 == 0 else "审核通过"
                (images / MISSION / label).mkdir(exist_ok=True)
                shutil.move(images / MISSION / "待审核" / f"I{g:03d}", images / MISSION / label / f"I{g:03d}")

            # 3. drift -> re-learning -> re-judging, all by the daemon
            def state() -> str:
                from qc_assets.stage_b.automation import due_reason
                from qc_assets.stage_b.relearn import RelearnSettings
                from resources.storage import StorageResource

                runs = [(r.job_name, r.status.value, r.tags.get("qc/trigger")) for r in instance.get_runs()]
                reason = due_reason(
                    StorageResource(data_root=str(data), images_root=str(images)), MISSION, RelearnSettings(1000, 86400)
                )
                return f"runs {runs}; due: {reason}"

            try:
                wait_until(
                    lambda: len(read_jsonl(data / "qc_verdicts" / MISSION / "reviews.jsonl")) == 40,
                    300,
                    "the sensor to log the 40 reviews",
                    (daemon,),
                )
            except TimeoutError as e:
                raise AssertionError(state()) from e
            wait_until(
                lambda: any(
                    r.status == dg.DagsterRunStatus.SUCCESS for r in _runs(instance, **{"qc/relearn_reason": "drift"})
                ),
                600,
                "an automatic re-learning fired by drift",
                (daemon,),
            )
            reviews = read_jsonl(data / "qc_verdicts" / MISSION / "reviews.jsonl")
            assert len(reviews) == 40 and sum(r["agrees"] for r in reviews) == 20
            (relearn,) = _runs(instance, **{"qc/relearn_reason": "drift"})
            assert relearn.tags["dagster/partition"] == MISSION and relearn.tags["qc/trigger"] == "relearn_automation"
            result = read_jsonl(data / "stage_b_guidance" / MISSION / "results.jsonl")[-1]
            assert result["baseline_version"] == 1, "re-learned from the kept v1"
            assert RUST["text"] in [it["text"] for it in result["kept_guidance"]["items"]]

            def rejudged() -> bool:
                rows = {
                    r["group_id"]: r for r in read_table(data / "qc_verdicts" / MISSION) if r["status"] == "pending"
                }
                return rows and rows["P000"]["guidance_version"] == result["kept_version"]

            wait_until(rejudged, 300, "qc_verdicts to re-judge the waiting groups under the new guidance", (daemon,))
            pending = {
                r["group_id"]: r["verdict"]
                for r in read_table(data / "qc_verdicts" / MISSION)
                if r["status"] == "pending"
            }
            assert pending == {f"P{g:03d}": "fail" if g % 2 == 0 else "pass" for g in range(6)}
            # 4. the reviewer files the rest (once the re-judging run, checks included, has finished):
            # under the new guidance the machine agrees with every one
            wait_until(lambda: all(r.is_finished for r in instance.get_runs()), 300, "the runs to finish", (daemon,))
            failed = [
                (r.job_name, sorted(k.to_user_string() for k in r.asset_selection or []))
                for r in instance.get_runs()
                if r.status != dg.DagsterRunStatus.SUCCESS
            ]
            assert not failed, f"every run the daemon launched succeeds, got failures: {failed}"
            for g in range(6):
                label = "审核不通过" if g % 2 == 0 else "审核通过"
                shutil.move(images / MISSION / "待审核" / f"P{g:03d}", images / MISSION / label / f"P{g:03d}")
            wait_until(
                lambda: len(read_jsonl(data / "qc_verdicts" / MISSION / "reviews.jsonl")) == 46,
                300,
                "the sensor to log the 6 new reviews",
                (daemon,),
            )
            latest = read_jsonl(data / "qc_verdicts" / MISSION / "reviews.jsonl")[40:]
            assert all(r["agrees"] and r["guidance_version"] == result["kept_version"] for r in latest)

            # 5. mission_health, refreshed by its automation, tells the story
            def health_row() -> dict | None:
                path = data / "mission_health" / "health.parquet"
                rows = pl.read_parquet(path).to_dicts() if path.exists() else []
                return rows[0] if rows and rows[0]["reviews_total"] == 46 else None

            wait_until(lambda: health_row() is not None, 300, "mission_health to refresh", (daemon,))
            row = health_row()
            assert row["guidance_version"] == result["kept_version"] and row["last_relearn_reason"].startswith("drift")
    finally:
        daemon.stop()
        vlm.close()
