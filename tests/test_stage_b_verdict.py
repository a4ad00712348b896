import re

import pytest

from qc_assets.stage_b.verdict import (
    FAIL_LINE,
    PASS_LINE,
    VERDICT_CONSTRAINT,
    VERDICT_GBNF,
    VERDICT_REGEX,
    Verdict,
    format_verdict,
    parse_verdict,
)


@pytest.mark.parametrize(
    "text, verdict, reason",
    [
        ("通过\n理由: 挡风板齐全", "pass", "挡风板齐全"),
        ("不通过\n理由：缺少挡风板", "fail", "缺少挡风板"),
        ("  不通过  \n  理由:  螺丝松动  \n", "fail", "螺丝松动"),
        ("通过\r\n理由: 安装到位", "pass", "安装到位"),
    ],
)
def test_well_formed(text, verdict, reason):
    parsed = parse_verdict(text)
    assert parsed == Verdict(verdict=verdict, reason=reason, format_ok=True, raw=text)


@pytest.mark.parametrize(
    "text",
    [
        "不通过",  # missing reason line
        "不通过\n理由:",  # empty reason
        "不通过\n理由:   ",
        "不通过\n原因: 缺少挡风板",  # wrong reason prefix
        "审核不通过\n理由: 缺少挡风板",  # `通过`/`不通过` inside a longer line: substring trap
        "结论：通过\n理由: 齐全",
        "通过。\n理由: 齐全",
        "不通过\n通过\n理由: 矛盾",  # extra verdict line
        "通过\n理由: 齐全\n不通过",
        "部分通过\n理由: 一半合格",  # third state
        "待定\n理由: 看不清",
        "Pass\n理由: 齐全",  # English
        "不通过\nReason: missing baffle",
        "不通过\n理由: missing baffle",
        "assistant\n不通过\n理由: 缺少挡风板",  # role word
        "不通过\n理由: assistant: 缺少挡风板",
        "不通过\n理由: 缺少<|im_end|>",
        "通过\n理由: 通过",  # restates the verdict instead of a reason
        "不通过\n理由: 不通过。",  # the same, with punctuation
        "",
        "   ",
    ],
)
def test_malformed(text):
    parsed = parse_verdict(text)
    assert parsed.format_ok is False
    assert parsed.verdict is None and parsed.reason is None
    assert parsed.raw == text


def test_substring_trap_fail_is_never_pass():
    # `通过` is a substring of `不通过`; a substring match would turn every rejection into a release.
    assert parse_verdict("不通过\n理由: 接地线缺失").verdict == "fail"
    assert parse_verdict("通过\n理由: 不通过的部件已整改").verdict == "pass"


def test_none_text_is_not_ok():
    assert parse_verdict(None) == Verdict(None, None, False, None)


def test_format_verdict_round_trips():
    text = format_verdict("fail", "缺少挡风板")
    assert text == "不通过\n理由: 缺少挡风板"
    assert parse_verdict(text).verdict == "fail"
    with pytest.raises(ValueError, match="'pass' or 'fail'"):
        format_verdict("maybe", "看不清")
    with pytest.raises(ValueError, match="breaks the verdict contract"):
        format_verdict("pass", "line one\nline two")


def test_the_decoding_constraint_states_the_contract_in_every_form():
    """The regex, the forced prefixes and the reason's first-character rule describe the answers the
    parser accepts, and the GBNF names the same lines: one contract, kept beside the parser."""
    assert VERDICT_CONSTRAINT.regex == VERDICT_REGEX and VERDICT_CONSTRAINT.gbnf == VERDICT_GBNF
    for verdict in ("pass", "fail"):
        text = format_verdict(verdict, "挡风板齐全")
        assert re.fullmatch(VERDICT_REGEX, text)
        assert any(text.startswith(p) for p in VERDICT_CONSTRAINT.prefixes)
    assert re.fullmatch(VERDICT_CONSTRAINT.line_start, "缺")
    assert not any(re.fullmatch(VERDICT_CONSTRAINT.line_start, c) for c in "a 1\ufffd")
    for prefix in VERDICT_CONSTRAINT.prefixes:
        text = prefix + "缺少挡风板"
        assert parse_verdict(text).format_ok and re.fullmatch(VERDICT_REGEX, text)
        assert not re.fullmatch(VERDICT_REGEX, prefix + " 缺少挡风板")  # a blank first character is refused
    for line in (PASS_LINE, FAIL_LINE):
        assert f'"{line}"' in VERDICT_GBNF
