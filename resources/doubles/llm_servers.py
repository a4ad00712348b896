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

Use it as a context manager, or through the `scripted_server` fixture (import it into a test module:
`from scripted_llm_server import scripted_server`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

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


class ScriptedRuleFollowingServer:
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
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

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

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                return

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, text = outer.answer(payload)
                if text is None:
                    body = {"error": {"message": "scripted failure", "code": status}}
                else:
                    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": len(json.dumps(payload["messages"])) // 4,
                                      "completion_tokens": len(text)}}
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> ScriptedRuleFollowingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted_server() -> Iterator[ScriptedRuleFollowingServer]:
    with ScriptedRuleFollowingServer() as server:
        yield server
