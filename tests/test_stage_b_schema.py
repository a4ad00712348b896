"""Reflection constrained to the JSON schema of the rule operations (`reflection_json_schema`):
`DecodeParams.json_schema` reaches an OpenAI-compatible server as `response_format`, a real
llama.cpp server follows it, and the transformers backend refuses it instead of ignoring it."""

import json

import pytest
from support.llm import SERVER_MODEL_ALIAS

from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_reflection_messages
from qc_assets.stage_b.reflection import REFLECTION_JSON_SCHEMA, parse_operations
from resources.llm import DecodeParams, OutputConstraint
from resources.llm.openai_backend import OpenAIChatLLM

SCHEMA_PARAMS = DecodeParams(max_new_tokens=96, json_schema=REFLECTION_JSON_SCHEMA)


def test_decode_params_take_one_constraint():
    with pytest.raises(ValueError, match="at most one of constraint and json_schema"):
        DecodeParams(constraint=OutputConstraint(regex="a|b"), json_schema={"type": "object"})
    with pytest.raises(ValueError, match="json_schema must be a dict"):
        DecodeParams(json_schema='{"type": "object"}')
    with pytest.raises(ValueError, match="must be an OutputConstraint"):
        DecodeParams(constraint="a|b")
    with pytest.raises(ValueError, match="at least one form"):
        OutputConstraint()
    with pytest.raises(ValueError, match="set prefixes too"):
        OutputConstraint(regex="a", line_start="[a-z]")
    # An unconstrained decode records what it recorded before OutputConstraint (FastDistill keys on it).
    assert DecodeParams().as_dict() == {
        "temperature": 0.0,
        "top_p": 1.0,
        "max_new_tokens": 128,
        "seed": 0,
        "n": 1,
        "json_schema": None,
        "regex": None,
    }
    assert DecodeParams(constraint=OutputConstraint(regex="a|b")).as_dict()["constraint"]["regex"] == "a|b"


@pytest.mark.parametrize(
    "structured_output, expected",
    [
        (
            "none",
            {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": REFLECTION_JSON_SCHEMA, "strict": True},
            },
        ),
        (
            "vllm",
            {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": REFLECTION_JSON_SCHEMA, "strict": True},
            },
        ),
        ("llama_cpp", {"type": "json_object", "schema": REFLECTION_JSON_SCHEMA}),
    ],
)
def test_json_schema_is_sent_as_response_format(scripted_server, structured_output, expected):
    llm = scripted_server.client(structured_output=structured_output)
    llm.chat([[{"role": "user", "content": "图片1: 机柜正面"}]], SCHEMA_PARAMS)
    assert scripted_server.student_payloads[-1]["response_format"] == expected
    llm.chat([[{"role": "user", "content": "图片1: 机柜正面"}]], DecodeParams())
    assert "response_format" not in scripted_server.student_payloads[-1]


def test_transformers_backend_refuses_a_json_schema(smollm2_llm):
    with pytest.raises(ValueError, match="reflection_json_schema.*openai backend"):
        smollm2_llm.chat([[{"role": "user", "content": "hi"}]], SCHEMA_PARAMS)


@pytest.mark.slow
def test_llama_cpp_server_follows_the_rule_operation_schema(llama_server):
    mission = get_mission("挡风板安装检查")
    case = {
        "record_id": "r1",
        "group_id": "g1",
        "label": "fail",
        "predicted": "pass",
        "correct": False,
        "agreement": 1.0,
        "summaries": [(1, "挡风板松动，边缘有缝隙")],
        "reason": "未见问题",
    }
    messages = build_reflection_messages(mission, Guidance.initial(mission), [case], [])
    llm = OpenAIChatLLM(llama_server, SERVER_MODEL_ALIAS, structured_output="llama_cpp", timeout_s=120.0)
    ((completion,),) = llm.chat([messages], DecodeParams(max_new_tokens=160, json_schema=REFLECTION_JSON_SCHEMA))
    assert completion.ok, completion.error
    parsed = parse_operations(completion.text)
    if completion.finish_reason == "stop":  # a grammar-bound answer that finished is valid JSON of the schema
        assert parsed.error is None and parsed.ops, completion.text
        assert isinstance(json.loads(completion.text)["operations"], list)
