"""`ScriptedRuleFollowingServer`: a TEST DOUBLE for a capable LLM behind an OpenAI-compatible API.

No capable model runs on these machines, and the embedded 135M model cannot learn rules, so the proof
that the Stage-B control loop learns when the model can uses this stdlib HTTP server on 127.0.0.1.
The real `resources/llm/openai_backend.py` client talks to it over HTTP, exactly as to vLLM.

- Its "student" (a verdict request: any prompt that is not a reflection prompt) follows the guidance
  text of the prompt literally: every rule that quotes a keyword in 「」 means "fail the group when a
  summary contains the keyword". Nothing else is understood, so the initial guidance passes everything.
- Its "reflector" (a prompt whose system turn is the Stage-B reflection prompt) answers with prepared
  replies, one per reflection call, the last one repeating. A reply is a dict (sent as JSON) or a
  string (sent verbatim, e.g. invalid JSON).

Faults for the provider-failure tests: `outage = True` answers every request with HTTP 503;
`fail_student_requests = n` answers the next n student requests with HTTP 400.

Use it as a context manager (tests: the `scripted_server` fixture in tests/conftest.py).

`FaultInjectionServer` (below): a TEST DOUBLE of an OpenAI-shaped provider that scripts failures.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque

from resources.doubles.http_server import ScriptedHTTPServer

REFLECTION_MARKER = "你负责改进质检审核规则"
_RULE = re.compile(r"^\d+\. \[([GS]\d+)\] (.*)$", re.M)
_KEYWORD = re.compile(r"「([^」]+)」")
_SUMMARY = re.compile(r"^图片\d+: (.*)$", re.M)
MODEL = "scripted-rule-follower"


def rule_keywords(system_prompt: str) -> list[str]:
    """The keywords the scripted student fails groups on: every 「…」 quoted in a guidance rule."""
    return [kw for _, text in _RULE.findall(system_prompt) for kw in _KEYWORD.findall(text)]


def student_answer(messages: list[dict]) -> str:
    """What the scripted student answers: fail when a summary contains a rule's keyword."""
    system = next(m["content"] for m in messages if m["role"] == "system")
    user = next(m["content"] for m in messages if m["role"] == "user")
    summaries = _SUMMARY.findall(user)
    for kw in rule_keywords(system):
        if any(kw in s for s in summaries):
            return f"不通过\n理由: 摘要提到「{kw}」，按规则不通过"
    return "通过\n理由: 未见规则所列问题"


def chat_completion(text: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """An OpenAI chat-completion body answering `text`."""
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


class ScriptedRuleFollowingServer(ScriptedHTTPServer):
    """Test double: an OpenAI-shaped chat server whose student follows the prompt's keyword rules and
    whose reflector replays `reflector_replies`. Records every payload it receives."""

    def __init__(self, reflector_replies: list[dict | str] | None = None) -> None:
        self.reflector_replies: list[dict | str] = list(reflector_replies or [{"operations": []}])
        self.reflection_calls = 0
        self.student_calls = 0
        self.reflection_payloads: list[dict] = []
        self.student_payloads: list[dict] = []
        self.outage = False
        self.fail_student_requests = 0
        self._lock = threading.Lock()
        super().__init__()

    def script_reflector(self, replies: list[dict | str]) -> None:
        with self._lock:
            self.reflector_replies = list(replies)
            self.reflection_calls = 0

    def client(self, **kwargs):
        """The real OpenAI-compatible client pointed at this server (no retries unless asked)."""
        from resources.llm.openai_backend import OpenAIChatLLM

        options = {"max_retries": 0, "timeout_s": 10.0, **kwargs}
        return OpenAIChatLLM(self.base_url, MODEL, **options)

    def answer(self, payload: dict) -> tuple[int, str | None]:
        """(HTTP status, completion text) for one request."""
        messages = payload["messages"]
        with self._lock:
            if self.outage:
                return 503, None
            if REFLECTION_MARKER in messages[0]["content"]:
                self.reflection_payloads.append(payload)
                reply = self.reflector_replies[min(self.reflection_calls, len(self.reflector_replies) - 1)]
                self.reflection_calls += 1
                return 200, reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
            self.student_payloads.append(payload)
            self.student_calls += 1
            if self.fail_student_requests > 0:
                self.fail_student_requests -= 1
                return 400, None
        return 200, student_answer(messages)

    def respond(self, method, path, body, headers):
        status, text = self.answer(body)
        if text is None:
            return status, {"error": {"message": "scripted failure", "code": status}}
        return status, chat_completion(text, len(json.dumps(body["messages"])) // 4, len(text))


OK_TEXT = "通过\n理由: 螺丝齐全"
# What a Qwen3-style reasoning model answers when its template leaves thinking on.
THINK_REASONING = "先看螺丝，再看线缆。"
THINK_TEXT = f"<think>\n{THINK_REASONING}\n</think>\n\n{OK_TEXT}"


class FaultInjectionServer(ScriptedHTTPServer):
    """Test double: an OpenAI-shaped server for the provider-failure tests. A request's scenario is its
    last message's content if a script has that name, else its `model`; the scenario's script (a list
    of actions) is consumed one action per request, the last action repeating. Actions: "ok",
    "timeout" (sleep `hang_s` before answering), "429", "500", "400", "malformed", "think" (an answer
    that opens with a think block)."""

    def __init__(self, hang_s: float = 2.0) -> None:
        self.hang_s = hang_s
        self.scripts: dict[str, deque[str]] = {}
        self.hits: dict[str, int] = defaultdict(int)
        self.payloads: dict[str, list[dict]] = defaultdict(list)
        self.auth: dict[str, list[str | None]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.peak_in_flight: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        super().__init__()

    def script(self, scenario: str, actions: list[str]) -> None:
        with self._lock:
            self.scripts[scenario] = deque(actions)

    def _next_action(self, payload: dict, auth: str | None) -> tuple[str, str]:
        with self._lock:
            content = payload["messages"][-1]["content"]
            # a VLM request's content is a list of parts: it names no scenario, its model does
            scenario = content if isinstance(content, str) and content in self.scripts else payload["model"]
            self.hits[scenario] += 1
            self.payloads[scenario].append(payload)
            self.auth[scenario].append(auth)
            self.in_flight[scenario] += 1
            self.peak_in_flight[scenario] = max(self.peak_in_flight[scenario], self.in_flight[scenario])
            actions = self.scripts[scenario]
            return scenario, actions.popleft() if len(actions) > 1 else actions[0]

    def respond(self, method, path, body, headers):
        scenario, action = self._next_action(body, headers.get("Authorization"))
        try:
            if action == "timeout":
                time.sleep(self.hang_s)
                action = "ok"
            return {
                "ok": (200, chat_completion(OK_TEXT, 7, 5)),
                "think": (200, chat_completion(THINK_TEXT, 7, 5)),
                "429": (429, {"error": "rate limited"}),
                "500": (500, {"error": "internal"}),
                "400": (400, {"error": "bad request"}),
                "malformed": (200, '{"choices": [ this is not json'),
            }[action]
        finally:
            # before the answer goes out: a client's next request can only follow it
            with self._lock:
                self.in_flight[scenario] -= 1
