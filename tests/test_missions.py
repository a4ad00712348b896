import pytest

from qc_assets.missions import MISSIONS, get_mission, load_missions_file, validate_mission_name

PRODUCTION = [
    "BBU安装方式检查（正装）",
    "BBU接地线检查",
    "BBU线缆布放要求",
    "挡风板安装检查",
    "RRU安装检查",
    "RRU位置检查",
    "RRU线缆",
]


def test_registry_has_the_seven_production_missions_with_domains():
    assert sorted(MISSIONS) == sorted(PRODUCTION)
    assert {MISSIONS[m].domain for m in PRODUCTION[:4]} == {"bbu"}
    assert {MISSIONS[m].domain for m in PRODUCTION[4:]} == {"rru"}
    assert all(MISSIONS[m].focus and MISSIONS[m].scaffold_rules for m in PRODUCTION)


@pytest.mark.parametrize("name", ["", " ", "a/b", "a\\b", "..", "x..y", "bad\x00name", "tab\tname", " lead"])
def test_unsafe_mission_names_are_refused(name):
    with pytest.raises(ValueError):
        validate_mission_name(name)


def test_full_width_brackets_are_a_valid_name():
    assert validate_mission_name("BBU安装方式检查（正装）") == "BBU安装方式检查（正装）"


def test_unknown_mission_error_lists_registered_names():
    with pytest.raises(ValueError, match="registered"):
        get_mission("不存在的任务")


def test_missions_can_be_registered_from_yaml(tmp_path, monkeypatch):
    path = tmp_path / "m.yaml"
    path.write_text("- name: 天线检查\n  domain: rru\n  focus: 天线安装牢固。\n", encoding="utf-8")
    monkeypatch.setenv("QC_MISSIONS_FILE", str(path))
    assert get_mission("天线检查").domain == "rru"
    assert get_mission("天线检查").scaffold_rules  # default scaffold applies


def test_yaml_mission_with_bad_domain_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("- name: x\n  domain: core\n  focus: y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="domain"):
        load_missions_file(path)
