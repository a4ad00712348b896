"""LlamaCppChatLLM: the embedded SmolLM2 GGUF on llama.cpp in-process (the CPU default backend)."""

from __future__ import annotations

import json
import re

import pytest

from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT, VERDICT_REGEX
from resources.llm import ChatLLM, DecodeParams, OutputConstraint
from resources.llm.llama_cpp_backend import LlamaCppChatLLM

VERDICT_PROMPTS = [
    [
        {"role": "system", "content": "你是质检员。第一行只输出 通过 或 不通过，第二行输出 理由: 加一句原因。"},
        {"role": "user", "content": text},
    ]
    for text in ("BBU安装牢固，螺丝齐全。", "挡风板缺失，线缆松散。")
]


@pytest.fixture(scope="module")
def llm(smollm2_gguf):
    return LlamaCppChatLLM(smollm2_gguf, n_ctx=2048, n_threads=1)


def test_chat_counts_tokens_and_repeats_a_greedy_answer(llm):
    assert isinstance(llm, ChatLLM) and llm.fingerprint.startswith("llama_cpp:SmolLM2")
    (row,) = llm.chat([[{"role": "user", "content": "Name one fruit."}]], DecodeParams(max_new_tokens=8, n=3))
    assert len(row) == 3 and len({c.text for c in row}) == 1
    assert row[0].ok and row[0].prompt_tokens > 0 and 0 < row[0].completion_tokens <= 8


def test_same_seed_same_text_when_sampling(llm):
    conv = [[{"role": "user", "content": "Write a word."}]]
    params = DecodeParams(temperature=1.0, max_new_tokens=12, seed=7)
    assert llm.chat(conv, params)[0][0].text == llm.chat(conv, params)[0][0].text


def test_verdict_constraint_yields_valid_verdicts(llm):
    params = DecodeParams(temperature=0.8, max_new_tokens=24, n=2, constraint=VERDICT_CONSTRAINT)
    out = llm.chat(VERDICT_PROMPTS, params)
    for row in out:
        for c in row:
            assert c.extra["constrained"] and re.fullmatch(VERDICT_REGEX, c.text), repr(c.text)


def test_json_schema_constraint_yields_schema_json(llm):
    schema = {"type": "object", "properties": {"pass": {"type": "boolean"}}, "required": ["pass"]}
    (row,) = llm.chat(VERDICT_PROMPTS[:1], DecodeParams(max_new_tokens=24, json_schema=schema))
    assert isinstance(json.loads(row[0].text)["pass"], bool)


def test_the_backend_applies_the_grammar_it_is_given(llm):
    """Nothing about verdicts in the backend: a constraint of another language is followed just the same."""
    yes_no = OutputConstraint(gbnf='root ::= "yes" | "no"')
    conversations = [[{"role": "user", "content": q}] for q in ("Is the sky blue?", "Write a poem about the sea.")]
    out = llm.chat(conversations, DecodeParams(temperature=1.0, max_new_tokens=8, n=2, constraint=yes_no))
    for row in out:
        for c in row:
            assert c.extra["constrained"] and c.text in ("yes", "no"), repr(c.text)


def test_a_constraint_without_a_grammar_and_non_gguf_paths_are_refused(llm, tmp_path):
    with pytest.raises(ValueError, match="through its 'gbnf'"):
        llm.chat(VERDICT_PROMPTS[:1], DecodeParams(constraint=OutputConstraint(regex="[a-z]+")))
    with pytest.raises(ValueError, match="needs a .gguf file"):
        LlamaCppChatLLM(tmp_path)


def test_shared_head_is_prefilled_once_and_history_does_not_change_a_sample(llm):
    """Two groups under one system prompt: the second reuses the cached head; a seeded sample is the
    same whether it runs first, after another conversation, or twice in a row."""
    params = DecodeParams(temperature=1.0, max_new_tokens=12, seed=3)
    first = llm.chat(VERDICT_PROMPTS[:1], params)[0][0]
    other = llm.chat(VERDICT_PROMPTS[1:], params)[0][0]
    again = llm.chat(VERDICT_PROMPTS[:1], params)[0][0]
    assert first.text == again.text
    head = first.extra["cached_prompt_tokens"]
    assert 0 < head < first.prompt_tokens and other.extra["cached_prompt_tokens"] == head
