"""The seed's Stage-A flags (issue 19): finish_reason and truncation per record, group ids from the
ticket regex with nested folders, sample_seed apart from the decode seed, domain packs and prompt
profiles, postprocess, and reviewers' fail reasons from a real .xlsx.

The VLM is the real tiny Qwen3-VL except where a test needs a summary with known text (postprocess):
there `ScriptedVLM` stands in for a capable VLM that this machine cannot run.
"""

import shutil
from pathlib import Path

import pytest

from qc_assets.missions import get_mission
from qc_assets.stage_a import prompts
from qc_assets.stage_a.discovery import discover, group_id_of, unaccounted_files
from qc_assets.stage_a.records import validate_records
from qc_assets.stage_a.runner import StageAConfig, run_stage_a
from qc_assets.stage_a.sampling import sample_groups
from qc_assets.stage_a.settings import load_settings
from qc_assets.stage_b.split import split_three_way
from qc_assets.student.sources import stage_a_examples
from resources.store import read_jsonl
from resources.vlm import VisionOutput

MISSION = get_mission("BBU接地线检查")
FAST = {"batch_size": 8, "max_new_tokens": 4}
TICKET = "QC-BBU-20250101-12"


class CountingVLM:
    """Wraps the real tiny model and records the photos it is asked to summarise."""

    def __init__(self, inner):
        self.inner, self.paths = inner, []

    fingerprint = property(lambda self: self.inner.fingerprint)
    note = property(lambda self: self.inner.note)

    def generate(self, prompts_, decode):
        self.paths += [Path(p.image_path).name for p in prompts_]
        return self.inner.generate(prompts_, decode)


class ScriptedVLM:
    """Test double for a capable VLM: answers every photo with `text` (finish_reason stop)."""

    fingerprint, note = "scripted-vlm-v1", "test double"

    def __init__(self, text: str):
        self.text = text

    def generate(self, prompts_, decode):
        return [VisionOutput(self.text, 10, 12, "stop") for _ in prompts_]


def _copy_group(images: Path, src: str, dst: str) -> None:
    shutil.copytree(images / MISSION.name / src, images / MISSION.name / dst)


# --- 1. truncation --------------------------------------------------------------------------------------


def test_resume_log_keeps_finish_reason_and_records_count_truncated_photos(tiny_vlm, sample_images, tmp_path):
    result = run_stage_a(sample_images, MISSION, tiny_vlm, StageAConfig(**FAST), tmp_path)
    log = read_jsonl(tmp_path / "summaries.jsonl")
    assert log and {row["finish_reason"] for row in log} == {"length"}  # the random smoke model never stops
    for r in result.records:
        assert r["truncated_images"] == len(r["per_image"]) and r["truncated_keys"] == list(r["per_image"])
    assert result.truncated == result.summaries == sum(len(r["images"]) for r in result.records)
    run = __import__("json").loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert run["truncated_share"] == 1.0 and run["max_truncated_share_blocking"] == 0.1
    assert StageAConfig().max_new_tokens == 1024  # the seed's production default


def test_a_finished_answer_is_not_counted_as_truncated(sample_images, tmp_path):
    result = run_stage_a(sample_images, MISSION, ScriptedVLM("机柜内BBU接地线连接完好"), StageAConfig(), tmp_path)
    assert result.truncated == 0 and all(r["truncated_images"] == 0 for r in result.records)


def test_threshold_config_is_validated():
    with pytest.raises(ValueError, match="must be >= max_truncated_share"):
        StageAConfig(max_truncated_share=0.2, max_truncated_share_blocking=0.1)
    with pytest.raises(ValueError, match=r"max_truncated_share must be in \[0, 1\]"):
        StageAConfig(max_truncated_share=1.5)


# --- 2. group ids and nested folders --------------------------------------------------------------------


def test_group_id_is_the_ticket_or_the_whole_folder_name():
    assert group_id_of(f"{TICKET}_补拍") == TICKET
    assert group_id_of(f"{TICKET} (2)") == TICKET
    assert group_id_of("G100") == "G100"
    assert group_id_of("box-7", r"^box-(\d+)") == "7"
    with pytest.raises(ValueError, match="needs a capture group"):
        StageAConfig(group_id_pattern="^QC-")
    with pytest.raises(ValueError, match="not a valid regex"):
        StageAConfig(group_id_pattern="^(QC")


def _suffixed_tree(images: Path) -> None:
    _copy_group(images, "审核通过/G100", f"审核通过/{TICKET}_补拍")
    _copy_group(images, "审核通过/G101", f"审核通过/{TICKET} (2)")
    _copy_group(images, "审核不通过/G151", f"审核不通过/{TICKET}")


def test_suffixed_folders_of_one_ticket_are_one_group_per_label_folder(sample_images):
    _suffixed_tree(sample_images)
    groups = {g.key: g for g in discover(sample_images, MISSION.name).groups}
    passed = groups[f"pass/{TICKET}"]
    assert passed.folders == (f"审核通过/{TICKET} (2)", f"审核通过/{TICKET}_补拍")
    assert {p.rsplit("/", 1)[0] for p in (img.path for img in passed.images)} == set(passed.folders)
    assert groups[f"fail/{TICKET}"].folders == (f"审核不通过/{TICKET}",)  # a resubmission stays its own record
    # with a pattern that never matches, every folder is its own group again
    apart = discover(sample_images, MISSION.name, group_id_pattern=r"^(NEVER-\d+)")
    assert {g.group_id for g in apart.groups} >= {f"{TICKET}_补拍", f"{TICKET} (2)", TICKET}


def test_the_stage_b_split_keeps_every_record_of_one_ticket_together(sample_images):
    _suffixed_tree(sample_images)
    records = [
        {"record_id": g.key, "group_id": g.group_id, "label": g.label}
        for g in discover(sample_images, MISSION.name).groups
    ]
    assert sum(r["group_id"] == TICKET for r in records) == 2  # pass and fail: the suffixes merged
    for seed in range(20):
        split = split_three_way(records, 0.3, 0.3, seed)
        sides = {
            side
            for side in ("train", "selection", "test")
            if any(r["group_id"] == TICKET for r in getattr(split, side))
        }
        assert len(sides) == 1, (seed, sides)


def test_nested_photos_are_part_of_the_group_or_listed_when_skipped(sample_images):
    group = sample_images / MISSION.name / "审核通过" / "G100"
    (group / "补拍" / "近景").mkdir(parents=True)
    shutil.copy(group / "1.jpg", group / "补拍" / "3.jpg")
    shutil.copy(group / "2.jpg", group / "补拍" / "近景" / "1.jpg")
    (group / "补拍" / "备注.txt").write_text("备注", encoding="utf-8")

    included = discover(sample_images, MISSION.name)
    paths = [img.path for img in next(g for g in included.groups if g.key == "pass/G100").images]
    assert "审核通过/G100/补拍/3.jpg" in paths and "审核通过/G100/补拍/近景/1.jpg" in paths
    assert {s.path: s.reason for s in included.skipped}["审核通过/G100/补拍/备注.txt"].startswith("not an image")

    skipped = discover(sample_images, MISSION.name, nested="skip")
    reasons = {s.path: s.reason for s in skipped.skipped}
    assert reasons["审核通过/G100/补拍"] == "nested folder inside a group (nested=skip)"
    assert not any("补拍" in img.path for g in skipped.groups for img in g.images)

    for found in (included, skipped):  # every file is summarised or listed, either way
        summarised = {img.path for g in found.groups for img in g.images}
        assert unaccounted_files(found.mission_dir, summarised, {s.path for s in found.skipped}) == []
    with pytest.raises(ValueError, match="nested must be one of"):
        StageAConfig(nested="flatten")


def test_records_list_every_photo_of_merged_and_nested_folders(tiny_vlm, sample_images, tmp_path):
    _suffixed_tree(sample_images)
    nested = sample_images / MISSION.name / "审核通过" / f"{TICKET}_补拍" / "sub"
    nested.mkdir()
    shutil.copy(nested.parent / "1.jpg", nested / "9.jpg")
    result = run_stage_a(sample_images, MISSION, tiny_vlm, StageAConfig(**FAST), tmp_path)
    validate_records(result.records)
    rec = next(r for r in result.records if r["group_id"] == TICKET and r["label"] == "pass")
    assert f"审核通过/{TICKET}_补拍/sub/9.jpg" in rec["images"] and len(rec["folders"]) == 2


# --- 3. sample_seed -------------------------------------------------------------------------------------


def test_a_new_sample_seed_summarises_only_photos_never_summarised(tiny_vlm, sample_images, tmp_path):
    first_cfg = StageAConfig(pass_cap=1, fail_cap=1, sample_seed=1, **FAST)
    first = run_stage_a(sample_images, MISSION, tiny_vlm, first_cfg, tmp_path)
    done = {p for r in first.records for p in r["images"]}
    groups = discover(sample_images, MISSION.name).groups
    drawn = {g.key for g in sample_groups(groups, 1, 1, 1)[0]}
    other = next(s for s in range(2, 50) if {g.key for g in sample_groups(groups, 1, 1, s)[0]} != drawn)

    counting = CountingVLM(tiny_vlm)
    second = run_stage_a(
        sample_images, MISSION, counting, StageAConfig(pass_cap=1, fail_cap=1, sample_seed=other, **FAST), tmp_path
    )
    wanted = [p for r in second.records for p in r["images"]]
    assert set(wanted) != done
    assert len(counting.paths) == len([p for p in wanted if p not in done]) > 0
    assert second.run_key == first.run_key  # the decode seed, not the sample seed, is in the resume key
    assert any("sample_seed" in s.reason for s in second.skipped)


# --- 4. dataset packs, prompt profiles, postprocess, ground-truth fail reasons ---------------------------


def test_dataset_picks_the_pack_and_an_edited_pack_resummarises(tiny_vlm, sample_images, tmp_path, monkeypatch):
    bbu, rru = prompts.build_prompt(MISSION), prompts.build_prompt(MISSION, dataset="rru")
    assert prompts.load_pack("bbu") in bbu.user and prompts.load_pack("rru") in rru.user
    assert bbu.hash != rru.hash and rru.dataset == "rru"

    packs = tmp_path / "packs"
    shutil.copytree(prompts.PACKS_DIR, packs)
    monkeypatch.setattr(prompts, "PACKS_DIR", packs)
    run_stage_a(sample_images, MISSION, tiny_vlm, StageAConfig(**FAST), tmp_path / "out")
    (packs / "bbu.md").write_text(prompts.load_pack("bbu") + "\n常见缺陷：接地线未压接端子。", encoding="utf-8")
    counting = CountingVLM(tiny_vlm)
    edited = run_stage_a(sample_images, MISSION, counting, StageAConfig(**FAST), tmp_path / "out")
    assert len(counting.paths) == edited.summaries > 0
    assert edited.records[0]["prompt_hash"] == prompts.build_prompt(MISSION).hash != bbu.hash

    (packs / "rru.md").write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="rru.md is empty"):
        prompts.build_prompt(MISSION, dataset="rru")


def test_prompt_profiles_are_registered_and_change_the_prompt():
    runtime = prompts.build_prompt(MISSION)
    terse = prompts.build_prompt(MISSION, profile="summary_terse")
    assert runtime.profile == "summary_runtime" and runtime.system == prompts.SYSTEM_PROMPT
    assert terse.user != runtime.user and terse.hash != runtime.hash and MISSION.focus in terse.user
    with pytest.raises(ValueError, match="prompt_profile must be one of"):
        StageAConfig(prompt_profile="summary_long")
    with pytest.raises(ValueError, match="dataset must be one of"):
        StageAConfig(dataset="ran")


def test_postprocess_cleans_records_keeps_the_raw_text_and_counts_rules(sample_images, tmp_path):
    raw = "CoreApplication::exec()接地线松动,接地线松动,接地线松动\n以上是我的回答"
    vlm = ScriptedVLM(raw)
    plain = run_stage_a(sample_images, MISSION, vlm, StageAConfig(), tmp_path / "plain")
    assert plain.records[0]["per_image"]["image_1"] == raw.strip() and plain.postprocess_rules == {}
    result = run_stage_a(sample_images, MISSION, vlm, StageAConfig(postprocess=True), tmp_path / "clean")
    assert {t for r in result.records for t in r["per_image"].values()} == {"接地线松动"}
    assert {row["summary"] for row in read_jsonl(tmp_path / "clean" / "summaries.jsonl")} == {raw}
    n = result.summaries
    assert result.postprocess_rules == {"junk_prefix": n, "repeated_phrase": n, "one_line": n}


@pytest.mark.parametrize(
    "text, cleaned, fired",
    [
        ("CoreApplication.run()机柜内BBU安装正常", "机柜内BBU安装正常", ["junk_prefix"]),
        ("BBU主机正装，接地线完好", "BBU主机正装，接地线完好", []),  # a short Latin domain word is no junk
        ("螺丝齐全螺丝齐全", "螺丝齐全", ["repeated_phrase"]),
        ("接地线(黄绿色)完好;无松动", "接地线（黄绿色）完好；无松动", ["punctuation"]),
        ("编号ＡＢ１２", "编号AB12", ["punctuation"]),
        ("第一行摘要\n第二行闲聊", "第一行摘要", ["one_line"]),
    ],
)
def test_each_postprocess_rule(text, cleaned, fired):
    from qc_assets.stage_a.postprocess import clean

    assert clean(text) == (cleaned, fired)


def _reviewers_sheet(path: Path, rows: list[tuple], header=("group_id", "fail_reason")) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def test_ground_truth_fail_reasons_come_from_a_real_xlsx(sample_images, tmp_path):
    sheet = _reviewers_sheet(
        tmp_path / "reviews.xlsx",
        [
            ("G150", "接地线未连接接地排"),
            ("G900", "接地线缺失"),
            ("G900", "接地线缺失"),
            ("G151", None),
            ("G999", "不在本任务"),
        ],
    )
    cfg = StageAConfig(add_gt_fail_reason=True, excel_path=str(sheet))
    result = run_stage_a(sample_images, MISSION, ScriptedVLM("机柜内接地线"), cfg, tmp_path / "out")
    by_key = {(r["label"], r["group_id"]): r for r in result.records}
    assert by_key[("fail", "G150")]["gt_fail_reason_text"] == "接地线未连接接地排"
    assert by_key[("fail", "G900")]["gt_fail_reason_text"] == "接地线缺失"
    assert by_key[("pass", "G900")]["gt_fail_reason_text"] is None  # a resubmission's pass record gets none
    assert by_key[("fail", "G151")]["gt_fail_reason_text"] is None
    assert result.gt_reasons == {"attached": 2, "fail_without_reason": ["G151"], "unmatched_sheet_ids": ["G999"]}
    on_disk = {r["record_id"]: r for r in read_jsonl(tmp_path / "out" / "records.jsonl")}
    assert on_disk[by_key[("fail", "G150")]["record_id"]]["gt_fail_reason_text"] == "接地线未连接接地排"


def test_a_missing_sheet_or_column_fails_before_any_photo_is_summarised(sample_images, tmp_path):
    vlm = CountingVLM(ScriptedVLM("x"))
    with pytest.raises(ValueError, match="does not exist"):
        run_stage_a(
            sample_images,
            MISSION,
            vlm,
            StageAConfig(add_gt_fail_reason=True, excel_path=str(tmp_path / "none.xlsx")),
            tmp_path,
        )
    sheet = _reviewers_sheet(tmp_path / "r.xlsx", [("G150", "x")], header=("工单号", "原因"))
    with pytest.raises(ValueError, match=r"lacks \['group_id', 'fail_reason'\]"):
        run_stage_a(sample_images, MISSION, vlm, StageAConfig(add_gt_fail_reason=True, excel_path=str(sheet)), tmp_path)
    assert vlm.paths == []
    with pytest.raises(ValueError, match="needs excel_path"):
        StageAConfig(add_gt_fail_reason=True)
    with pytest.raises(ValueError, match="inbox summaries take no ground-truth"):
        run_stage_a(
            sample_images,
            MISSION,
            vlm,
            StageAConfig(add_gt_fail_reason=True, excel_path=str(sheet)),
            tmp_path,
            inbox=True,
        )


# --- what reads the records ------------------------------------------------------------------------------


def test_student_targets_use_the_prompt_that_produced_the_summary(sample_images, tmp_path):
    result = run_stage_a(sample_images, MISSION, ScriptedVLM("机柜内接地线完好"), StageAConfig(dataset="rru"), tmp_path)
    rows, _ = stage_a_examples(result.records, MISSION.name, sample_images)
    user = rows[0]["messages"][1]["content"]
    text = user if isinstance(user, str) else " ".join(part.get("text", "") for part in user)
    assert prompts.load_pack("rru") in text and prompts.load_pack("bbu") not in text


def test_settings_file_is_validated(tmp_path):
    good = tmp_path / "ok.yaml"
    good.write_text("max_new_tokens: 256\ndataset: rru\n", encoding="utf-8")
    assert load_settings(good) == {"max_new_tokens": 256, "dataset": "rru"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_new_token: 256\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_settings(bad)


def test_asset_metadata_counts_postprocess_rules_and_ground_truth_reasons(sample_images, tmp_path):
    from qc_assets.stage_a.assets import settings_metadata

    sheet = _reviewers_sheet(
        tmp_path / "r.xlsx", [("G150", "接地线未连接"), ("G151", "接地线未连接"), ("G900", "缺失")]
    )
    cfg = StageAConfig(postprocess=True, add_gt_fail_reason=True, excel_path=str(sheet), sample_seed=7)
    result = run_stage_a(sample_images, MISSION, ScriptedVLM("CoreApplication接地线完好"), cfg, tmp_path / "out")
    meta = settings_metadata(result, cfg, "stage_a")
    assert meta["stage_a/postprocess_junk_prefix"] == result.summaries and meta["stage_a/postprocess_one_line"] == 0
    assert meta["stage_a/gt_fail_reasons_attached"] == 3 and meta["sample_seed"] == 7
    assert meta["stage_a/truncated_images"] == 0 and "max_new_tokens_note" not in meta
    top = meta["gt_fail_reasons"].value
    assert top.index("接地线未连接") < top.index("缺失")
