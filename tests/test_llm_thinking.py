"""`split_think_block`: the one place a leading think block leaves a completion's text."""

import pytest

from resources.llm.thinking import chat_template_kwargs, split_think_block


@pytest.mark.parametrize(
    ("raw", "answer", "reasoning"),
    [
        ("<think>\n看螺丝。\n</think>\n\n通过\n理由: 齐全", "通过\n理由: 齐全", "看螺丝。"),
        ("  <think></think>通过", "通过", ""),
        ("看螺丝。</think>\n通过", "通过", "看螺丝。"),  # the template pre-filled the opening tag
        ("<think>a</think>b</think>c", "b</think>c", "a"),  # only the leading block goes
    ],
)
def test_leading_think_block_is_cut_and_kept_as_raw(raw, answer, reasoning):
    text, extra = split_think_block(raw)
    assert text == answer
    assert extra == {"raw_text": raw, "reasoning": reasoning}


@pytest.mark.parametrize("raw", ["通过\n理由: 齐全", "答案里提到 <think>x</think> 也不算", "", None])
def test_text_without_a_leading_block_is_unchanged(raw):
    assert split_think_block(raw) == (raw, {})


def test_thinking_modes():
    assert chat_template_kwargs("off") == {"enable_thinking": False}
    assert chat_template_kwargs("on") == {"enable_thinking": True}
    assert chat_template_kwargs("omit") is None
    with pytest.raises(ValueError, match="thinking"):
        chat_template_kwargs("sometimes")
