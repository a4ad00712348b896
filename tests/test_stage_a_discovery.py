import os

import pytest

from qc_assets.stage_a.discovery import discover, natural_key, unaccounted_files
from qc_assets.stage_a.sampling import sample_groups

MISSION = "BBU接地线检查"


def test_labels_come_from_folders_and_a_resubmission_is_two_groups(sample_images):
    found = discover(sample_images, MISSION)
    labels = {(g.label, g.group_id) for g in found.groups}
    assert ("pass", "G900") in labels and ("fail", "G900") in labels
    assert {g.label for g in found.groups} == {"pass", "fail"}
    assert len({g.key for g in found.groups}) == len(found.groups)


def test_bad_files_are_listed_with_reasons_and_good_unicode_png_is_kept(sample_images):
    found = discover(sample_images, MISSION)
    reasons = {s.path: s.reason for s in found.skipped}
    assert reasons["审核不通过/G150/10.jpg"] == "zero-byte file"
    assert reasons["审核不通过/G150/11.jpg"].startswith("unreadable image")
    assert "not an image file" in reasons["审核不通过/G150/说明.txt"]
    assert reasons["审核通过/stray.jpg"] == "file outside a group folder"
    g150 = next(g for g in found.groups if g.key == "fail/G150")
    assert "审核不通过/G150/机柜照片_2.PNG" in [img.path for img in g150.images]


def test_unknown_label_folder_and_symlink_leaving_root_are_listed(sample_images, tmp_path):
    (sample_images / MISSION / "待复核" / "G1").mkdir(parents=True)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((sample_images / MISSION / "审核通过" / "G100" / "1.jpg").read_bytes())
    os.symlink(outside, sample_images / MISSION / "审核通过" / "G100" / "9.jpg")
    reasons = {s.path: s.reason for s in discover(sample_images, MISSION).skipped}
    assert reasons["待复核"].startswith("unknown label folder")
    assert reasons["待审核"].startswith("inbox folder")  # the inbox is accounted for, never training data
    assert reasons["审核通过/G100/9.jpg"] == "symlink leaving the images root"


def test_broken_symlink_and_symlinked_group_leaving_root_are_listed_not_read(sample_images, tmp_path):
    os.symlink(sample_images / "missing.jpg", sample_images / MISSION / "审核通过" / "G100" / "8.jpg")
    outside_group = tmp_path / "elsewhere" / "G1"
    outside_group.mkdir(parents=True)
    (outside_group / "1.jpg").write_bytes((sample_images / MISSION / "审核通过" / "G100" / "1.jpg").read_bytes())
    os.symlink(outside_group, sample_images / MISSION / "审核通过" / "G555")
    found = discover(sample_images, MISSION)
    reasons = {s.path: s.reason for s in found.skipped}
    assert reasons["审核通过/G100/8.jpg"] == "broken symlink"
    assert reasons["审核通过/G555"] == "symlink leaving the images root"
    assert "G555" not in {g.group_id for g in found.groups}


def test_natural_sort_puts_2_before_10():
    assert sorted(["10.jpg", "2.jpg", "1.jpg"], key=natural_key) == ["1.jpg", "2.jpg", "10.jpg"]


def test_group_images_are_naturally_sorted(sample_images):
    group = sample_images / MISSION / "审核通过" / "G100"
    (group / "10.jpg").write_bytes((group / "1.jpg").read_bytes())
    found = discover(sample_images, MISSION)
    paths = [img.path.rsplit("/", 1)[1] for img in next(g for g in found.groups if g.key == "pass/G100").images]
    assert paths.index("2.jpg") < paths.index("10.jpg")


def test_missing_mission_folder_is_a_clear_error(sample_images):
    with pytest.raises(ValueError, match="mission folder not found"):
        discover(sample_images, "RRU线缆")


def test_every_file_is_accounted_for_by_discovery(sample_images):
    found = discover(sample_images, MISSION)
    kept = {img.path for g in found.groups for img in g.images}
    assert unaccounted_files(found.mission_dir, kept, {s.path for s in found.skipped}) == []
    # and the check would notice a file that nobody listed
    assert unaccounted_files(found.mission_dir, kept, set()) != []


def test_sampling_is_deterministic_per_seed_and_caps_each_label(sample_images):
    groups = discover(sample_images, MISSION).groups
    kept, left = sample_groups(groups, pass_cap=1, fail_cap=2, seed=3)
    assert sum(g.label == "pass" for g in kept) == 1 and sum(g.label == "fail" for g in kept) == 2
    assert len(kept) + len(left) == len(groups)
    again, _ = sample_groups(groups, pass_cap=1, fail_cap=2, seed=3)
    assert [g.key for g in again] == [g.key for g in kept]
    picks = {tuple(g.key for g in sample_groups(groups, 1, 1, seed)[0]) for seed in range(20)}
    assert len(picks) > 1  # the seed matters


def test_negative_cap_is_refused(sample_images):
    with pytest.raises(ValueError, match="pass_cap"):
        sample_groups(discover(sample_images, MISSION).groups, -1, None, 0)
