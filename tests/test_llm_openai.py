"""OpenAIChatLLM against a real llama.cpp server (SmolLM2 GGUF on 127.0.0.1), and its retry/failure
behaviour against `FaultInjectionServer`, a scripted test-only HTTP server."""

from __future__ import annotations

import asyncio
import re

import pytest
from support.llm import SERVER_MODEL_ALIAS

from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT, VERDICT_REGEX
from resources.doubles.llm_servers import OK_TEXT, THINK_REASONING, THINK_TEXT
from resources.llm import ChatLLM, DecodeParams, OutputConstraint
from resources.llm.openai_backend import OpenAIChatLLM

QUESTIONS = [
    [{"role": "user", "content": "Hi."}],
    [{"role": "user", "content": "Name one fruit that is yellow."}],
    [{"role": "user", "content": "Give me a short fact about the moon and the tides, please."}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue on a clear day when the sun is high in the sky?"},
    ],
]
VERDICT_PROMPTS = [
    [
        {"role": "system", "content": "你是质检员。第一行只输出 通过 或 不通过，第二行输出 理由: 加一句原因。"},
        {"role": "user", "content": text},
    ]
    for text in ("BBU安装牢固，螺丝齐全。", "挡风板缺失，线缆松散。")
]


def server_llm(base_url: str, **kwargs) -> OpenAIChatLLM:
    return OpenAIChatLLM(base_url, SERVER_MODEL_ALIAS, timeout_s=60, **kwargs)


# -- real llama.cpp server -----------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_completion_with_token_counts(llama_server):
    llm = server_llm(llama_server)
    assert isinstance(llm, ChatLLM)
    out = llm.chat(QUESTIONS[:2], DecodeParams(max_new_tokens=16))
    for row in out:
        (c,) = row
        assert c.ok and c.text
        assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 16
        assert c.finish_reason in {"stop", "length"}
        assert c.extra["attempts"] == 1


@pytest.mark.slow
def test_same_seed_same_text_when_sampling(llama_server):
    llm = server_llm(llama_server, max_in_flight=1)
    reset = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]]

    def sample(seed: int) -> str:
        # llama.cpp reuses the KV cache of the previous request's matching prefix, and logits differ
        # in the last bits depending on how the prompt was split; the same preceding request puts the
        # server in the same state, so only the seed decides the draw.
        llm.chat(reset, DecodeParams(max_new_tokens=2))
        (row,) = llm.chat(QUESTIONS[1:2], DecodeParams(temperature=0.8, max_new_tokens=24, seed=seed))
        assert row[0].ok and row[0].extra["seed"] == seed
        return row[0].text

    assert sample(11) == sample(11)
    assert len({sample(11), sample(12), sample(13), sample(14)}) > 1


@pytest.mark.slow
def test_order_preserved_with_concurrency(llama_server):
    params = DecodeParams(max_new_tokens=8)
    concurrent = server_llm(llama_server, max_in_flight=4).chat(QUESTIONS, params)
    one_at_a_time = [server_llm(llama_server).chat([q], params)[0][0] for q in QUESTIONS]
    assert all(r[0].ok for r in concurrent)
    # every prompt has a different length, so the token counts reveal which answer sits where
    prompt_tokens = [r[0].prompt_tokens for r in concurrent]
    assert len(set(prompt_tokens)) == len(QUESTIONS)
    assert prompt_tokens == [c.prompt_tokens for c in one_at_a_time]


@pytest.mark.slow
def test_aiter_yields_every_index_once(llama_server):
    llm = server_llm(llama_server, max_in_flight=2)

    async def collect():
        return [item async for item in llm.aiter_completions(QUESTIONS, DecodeParams(max_new_tokens=4))]

    items = asyncio.run(collect())
    assert sorted(i for i, _ in items) == list(range(len(QUESTIONS)))
    assert all(len(comps) == 1 and comps[0].ok for _, comps in items)


@pytest.mark.slow
def test_gbnf_grammar_yields_valid_verdicts(llama_server):
    llm = server_llm(llama_server, structured_output="llama_cpp")
    params = DecodeParams(temperature=0.8, max_new_tokens=32, seed=5, n=2, constraint=VERDICT_CONSTRAINT)
    out = llm.chat(VERDICT_PROMPTS, params)
    for row in out:
        for c in row:
            assert c.ok, c.error
            assert re.fullmatch(VERDICT_REGEX, c.text), repr(c.text)


def test_a_constraint_without_the_servers_form_is_refused():
    with pytest.raises(ValueError, match="through its 'gbnf'"):
        OpenAIChatLLM("http://127.0.0.1:9/v1", "m", structured_output="llama_cpp").chat(
            QUESTIONS[:1], DecodeParams(constraint=OutputConstraint(regex="yes|no"))
        )
    with pytest.raises(ValueError, match="through its 'regex'"):
        OpenAIChatLLM("http://127.0.0.1:9/v1", "m", structured_output="vllm").chat(
            QUESTIONS[:1], DecodeParams(constraint=OutputConstraint(gbnf='root ::= "yes" | "no"'))
        )


def test_regex_without_structured_output_is_a_config_error():
    llm = OpenAIChatLLM("http://127.0.0.1:9/v1", "m")
    with pytest.raises(ValueError, match="structured_output"):
        llm.chat(QUESTIONS[:1], DecodeParams(constraint=VERDICT_CONSTRAINT))


# Not the verdict contract: the backend sends whatever constraint it is given.
YES_NO = OutputConstraint(regex="yes|no", gbnf='root ::= "yes" | "no"')


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("vllm", {"structured_outputs": {"regex": YES_NO.regex}}),
        ("vllm_legacy", {"guided_regex": YES_NO.regex}),
        ("sglang", {"regex": YES_NO.regex}),
        ("llama_cpp", {"grammar": YES_NO.gbnf}),
    ],
)
def test_structured_output_fields_reach_the_server(fault_server, mode, expected):
    scenario = f"structured-{mode}"
    fault_server.script(scenario, ["ok"])
    llm = OpenAIChatLLM(fault_server.base_url, scenario, structured_output=mode)
    (row,) = llm.chat(QUESTIONS[:1], DecodeParams(constraint=YES_NO, seed=4))
    assert row[0].ok
    sent = fault_server.payloads[scenario][0]
    assert {k: sent[k] for k in expected} == expected
    assert sent["seed"] == 4


# -- scripted faults -----------------------------------------------------------------------------------


def fault_llm(server, scenario: str, **kwargs) -> OpenAIChatLLM:
    kwargs = {"timeout_s": 0.5, "max_retries": 2, **kwargs}
    return OpenAIChatLLM(server.base_url, scenario, **kwargs)


@pytest.mark.parametrize(
    ("scenario", "script"),
    [("timeout-then-ok", ["timeout", "ok"]), ("500-then-ok", ["500", "ok"]), ("429-then-ok", ["429", "ok"])],
)
def test_transient_failures_are_retried(fault_server, scenario, script):
    fault_server.script(scenario, script)
    (row,) = fault_llm(fault_server, scenario).chat(QUESTIONS[:1], DecodeParams())
    assert row[0].ok and row[0].text == OK_TEXT
    assert row[0].extra["attempts"] == 2
    assert (row[0].prompt_tokens, row[0].completion_tokens) == (7, 5)
    assert fault_server.hits[scenario] == 2


def test_persistent_500_becomes_failed_completion(fault_server):
    fault_server.script("always-500", ["500"])
    (row,) = fault_llm(fault_server, "always-500").chat(QUESTIONS[:1], DecodeParams(n=2))
    assert len(row) == 2
    for c in row:
        assert not c.ok and c.text is None and c.finish_reason == "error"
        assert "HTTP 500" in c.error and c.extra["attempts"] == 3
    assert fault_server.hits["always-500"] == 6  # 2 fan-out samples x (1 try + 2 retries)
    assert sorted({p["seed"] for p in fault_server.payloads["always-500"]}) == [0, 1]  # seeds seed + i


def test_malformed_body_becomes_failed_completion(fault_server):
    fault_server.script("malformed", ["malformed"])
    (row,) = fault_llm(fault_server, "malformed").chat(QUESTIONS[:1], DecodeParams())
    assert row[0].text is None and "malformed response body" in row[0].error
    assert fault_server.hits["malformed"] == 1


def test_400_is_not_retried(fault_server):
    fault_server.script("bad-request", ["400", "ok"])
    (row,) = fault_llm(fault_server, "bad-request").chat(QUESTIONS[:1], DecodeParams())
    assert row[0].text is None and "HTTP 400" in row[0].error and row[0].extra["status"] == 400
    assert fault_server.hits["bad-request"] == 1


def test_native_n_with_a_server_that_ignores_n(fault_server):
    fault_server.script("native-n", ["ok"])
    (row,) = fault_llm(fault_server, "native-n", n_mode="native").chat(QUESTIONS[:1], DecodeParams(n=3))
    assert fault_server.payloads["native-n"][0]["n"] == 3
    assert row[0].ok and [c.ok for c in row] == [True, False, False]
    assert "n_mode='fanout'" in row[1].error


def test_failures_do_not_disturb_order(fault_server):
    fault_server.script("mixed-ok", ["ok"])
    fault_server.script("mixed-bad", ["400"])
    good = fault_llm(fault_server, "mixed-ok")
    bad = fault_llm(fault_server, "mixed-bad")
    assert [r[0].ok for r in good.chat(QUESTIONS, DecodeParams())] == [True] * len(QUESTIONS)
    assert [r[0].ok for r in bad.chat(QUESTIONS, DecodeParams())] == [False] * len(QUESTIONS)


def test_aiter_does_not_wait_for_a_slow_request(fault_server):
    fault_server.script("slow-first", ["timeout"])
    fault_server.script("fast-rest", ["ok"])
    conversations = [[{"role": "user", "content": c}] for c in ("slow-first", "a", "b")]
    llm = fault_llm(fault_server, "fast-rest", timeout_s=30, max_in_flight=3)

    async def collect():
        return [(i, comps[0].ok) async for i, comps in llm.aiter_completions(conversations, DecodeParams())]

    # the slow request was sent first but finishes last; the others are yielded before it
    assert asyncio.run(collect())[-1] == (0, True)
    assert [r[0].ok for r in llm.chat(conversations, DecodeParams())] == [True] * 3  # chat keeps input order


def test_requests_in_flight_are_bounded(fault_server):
    fault_server.script("bounded", ["timeout"])  # every request hangs, so they pile up if unbounded
    llm = fault_llm(fault_server, "bounded", timeout_s=30, max_in_flight=2)
    out = llm.chat(QUESTIONS, DecodeParams())
    assert all(r[0].ok for r in out)
    assert fault_server.hits["bounded"] == len(QUESTIONS)
    assert fault_server.peak_in_flight["bounded"] == 2


def test_chat_inside_a_running_loop_points_to_achat():
    async def call():
        OpenAIChatLLM("http://127.0.0.1:9/v1", "m").chat(QUESTIONS[:1], DecodeParams())

    with pytest.raises(RuntimeError, match="achat"):
        asyncio.run(call())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "127.0.0.1:8000"}, "http"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"n_mode": "both"}, "n_mode"),
        ({"structured_output": "outlines"}, "structured_output"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"thinking": "maybe"}, "thinking"),
    ],
)
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OpenAIChatLLM(**{"base_url": "http://127.0.0.1:8000/v1", "model": "m", **kwargs})


# -- thinking mode -------------------------------------------------------------------------------------


def test_think_block_is_cut_and_thinking_is_turned_off(fault_server):
    fault_server.script("thinker", ["think"])
    (row,) = fault_llm(fault_server, "thinker").chat(QUESTIONS[:1], DecodeParams())
    assert row[0].ok and row[0].text == OK_TEXT  # the parser sees the verdict, not the reasoning
    assert row[0].extra["raw_text"] == THINK_TEXT and row[0].extra["reasoning"] == THINK_REASONING
    assert fault_server.payloads["thinker"][0]["chat_template_kwargs"] == {"enable_thinking": False}


def test_thinking_omit_sends_no_template_kwargs(fault_server):
    fault_server.script("omit-thinking", ["ok"])
    (row,) = fault_llm(fault_server, "omit-thinking", thinking="omit").chat(QUESTIONS[:1], DecodeParams())
    assert row[0].text == OK_TEXT and "raw_text" not in row[0].extra  # no think block: nothing cut
    assert "chat_template_kwargs" not in fault_server.payloads["omit-thinking"][0]


def test_json_schema_goes_out_as_response_format(fault_server):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    for mode, expected in [
        ("vllm", {"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": True}}),
        ("llama_cpp", {"type": "json_object", "schema": schema}),
    ]:
        scenario = f"schema-{mode}"
        fault_server.script(scenario, ["ok"])
        OpenAIChatLLM(fault_server.base_url, scenario, structured_output=mode).chat(
            QUESTIONS[:1], DecodeParams(json_schema=schema)
        )
        assert fault_server.payloads[scenario][0]["response_format"] == expected
