"""TransformersChatLLM on the embedded SmolLM2-135M-Instruct GGUF (real model, CPU)."""

from __future__ import annotations

import copy
import re

import pytest
from transformers import AutoModelForCausalLM

from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT, VERDICT_REGEX
from resources.llm import ChatLLM, DecodeParams, OutputConstraint
from resources.llm.transformers_backend import TransformersChatLLM, model_fingerprint

pytestmark = pytest.mark.slow

# Different lengths on purpose: batching them forces left padding.
PROMPTS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Write one sentence about the sea and the wind at night."}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France? Answer with one word and explain why briefly."},
    ],
    [{"role": "user", "content": "Count: 1, 2, 3,"}],
]
VERDICT_PROMPTS = [
    [
        {"role": "system", "content": "你是质检员。第一行只输出 通过 或 不通过，第二行输出 理由: 加一句原因。"},
        {"role": "user", "content": text},
    ]
    for text in ("图片中BBU安装牢固，螺丝齐全。", "挡风板缺失，线缆松散。", "接地线已连接，标签清晰。")
]


def test_satisfies_protocol_and_fingerprint(smollm2_llm, smollm2_gguf):
    assert isinstance(smollm2_llm, ChatLLM)
    assert smollm2_llm.fingerprint == model_fingerprint(smollm2_gguf.parent, smollm2_gguf.name, "float32")
    assert smollm2_llm.fingerprint != model_fingerprint(smollm2_gguf.parent, smollm2_gguf.name, "bfloat16")
    assert smollm2_llm.tokenizer.padding_side == "left"


def test_batched_greedy_equals_unbatched(smollm2_llm, smollm2_gguf):
    params = DecodeParams(temperature=0.0, max_new_tokens=12, seed=0)
    one_by_one = TransformersChatLLM(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, batch_size=1, num_threads=1)
    assert one_by_one.model is smollm2_llm.model  # loaded once per process
    batched = smollm2_llm.chat(PROMPTS, params)
    single = one_by_one.chat(PROMPTS, params)
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert [c[0].completion_tokens for c in batched] == [c[0].completion_tokens for c in single]
    assert all(c[0].ok and c[0].text for c in batched)


def test_token_counts_and_finish_reason(smollm2_llm):
    cut = smollm2_llm.chat(PROMPTS[1:2], DecodeParams(max_new_tokens=3))[0][0]
    assert cut.finish_reason == "length"
    assert cut.completion_tokens == 3
    expected_prompt = len(smollm2_llm.prompt_ids(PROMPTS[1]))
    assert cut.prompt_tokens == expected_prompt > 10
    full = smollm2_llm.chat(PROMPTS[0:1], DecodeParams(max_new_tokens=40))[0][0]
    assert full.finish_reason == "stop"
    assert 0 < full.completion_tokens < 40


def test_seeded_sampling_is_reproducible(smollm2_llm):
    prompts = PROMPTS[:3]
    sampled = DecodeParams(temperature=0.9, top_p=0.95, max_new_tokens=8, seed=7, n=2)
    first = smollm2_llm.chat(prompts, sampled)
    again = smollm2_llm.chat(prompts, sampled)
    other = smollm2_llm.chat(prompts, DecodeParams(temperature=0.9, top_p=0.95, max_new_tokens=8, seed=8, n=2))
    texts = [[c.text for c in row] for row in first]
    assert all(len(row) == 2 for row in texts)
    assert texts == [[c.text for c in row] for row in again]
    assert texts != [[c.text for c in row] for row in other]
    # sample i uses seed + i, so the two samples of a prompt differ somewhere
    assert any(row[0] != row[1] for row in texts)
    assert [row[1].extra["seed"] for row in first] == [8] * len(prompts)


def test_greedy_n_repeats_one_decode(smollm2_llm):
    out = smollm2_llm.chat(PROMPTS[:1], DecodeParams(max_new_tokens=6, n=3))
    assert len(out[0]) == 3 and len({c.text for c in out[0]}) == 1


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_constrained_output_matches_verdict_regex(smollm2_llm, temperature):
    params = DecodeParams(temperature=temperature, max_new_tokens=16, seed=3, n=2, constraint=VERDICT_CONSTRAINT)
    out = smollm2_llm.chat(VERDICT_PROMPTS, params)
    for row in out:
        for c in row:
            assert re.fullmatch(VERDICT_REGEX, c.text), repr(c.text)
            assert c.extra["constrained"] is True
            assert 0 < c.completion_tokens <= 16


def test_the_backend_applies_the_prefixes_it_is_given(smollm2_llm):
    """Nothing about verdicts in the backend: any prefixes and first-character rule are followed."""
    colour = OutputConstraint(prefixes=("Colour: ", "Shade: "), line_start="[A-Z]")
    out = smollm2_llm.chat(
        PROMPTS[:2], DecodeParams(temperature=0.8, max_new_tokens=12, seed=2, n=2, constraint=colour)
    )
    for row in out:
        for c in row:
            assert re.fullmatch(r"(Colour|Shade): [A-Z][^\n]*", c.text), repr(c.text)
            assert c.extra["constrained"] is True


def test_a_constraint_without_prefixes_is_refused(smollm2_llm):
    with pytest.raises(ValueError, match="through its 'prefixes'"):
        smollm2_llm.chat(PROMPTS[:1], DecodeParams(constraint=OutputConstraint(regex=r"\d+")))


def test_hf_model_folder_matches_the_gguf(smollm2_llm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("smollm2_hf")
    # A GGUF-loaded model refuses save_pretrained; copy its dequantised weights into a plain model.
    config = copy.deepcopy(smollm2_llm.model.config)
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(smollm2_llm.model.state_dict())
    plain.save_pretrained(folder)
    smollm2_llm.tokenizer.save_pretrained(folder)
    from_folder = TransformersChatLLM(folder, batch_size=4, num_threads=1)
    assert from_folder.model is not smollm2_llm.model
    assert from_folder.fingerprint == model_fingerprint(folder, None, "float32") != smollm2_llm.fingerprint
    params = DecodeParams(max_new_tokens=8)
    assert [r[0].text for r in from_folder.chat(PROMPTS[:2], params)] == [
        r[0].text for r in smollm2_llm.chat(PROMPTS[:2], params)
    ]


def test_bad_config_is_rejected(smollm2_gguf, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        TransformersChatLLM(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype="float8")
    with pytest.raises(ValueError, match="not found"):
        TransformersChatLLM(smollm2_gguf.parent, gguf_file="missing.gguf")
    with pytest.raises(ValueError, match="config.json"):
        TransformersChatLLM(tmp_path)
