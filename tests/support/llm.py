"""Shared fixtures for the LLM provider tests: the embedded SmolLM2 model (loaded once per session),
a real llama.cpp OpenAI-compatible server on 127.0.0.1 serving it, and `FaultInjectionServer`, a tiny
stdlib HTTP server written for the tests that scripts failures (timeouts, 429, 5xx, bad bodies).

Test modules import the fixtures they use: `from llm_fixtures import smollm2_llm`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from reaper import reap_with_parent
from resources.llm.smollm2 import smollm2_gguf_path

SERVER_MODEL_ALIAS = "smollm2"
SERVER_START_TIMEOUT_S = 120.0
# One intra-op thread: the test machine's few cores are shared, and spinning OpenMP workers make a
# 135M model's decode far slower than a single thread.
TEST_THREADS = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return smollm2_gguf_path()


@pytest.fixture(scope="session")
def smollm2_llm(smollm2_gguf):
    from resources.llm.transformers_backend import TransformersChatLLM

    return TransformersChatLLM(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, batch_size=4, num_threads=TEST_THREADS)


@pytest.fixture(scope="session")
def llama_server(smollm2_gguf, tmp_path_factory) -> Iterator[str]:
    """Base URL (with /v1) of a real `llama_cpp.server` process serving SmolLM2."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_gguf), "--model_alias", SERVER_MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", str(TEST_THREADS),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    watcher = reap_with_parent(proc)  # dies with this worker, even a SIGKILLed one
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                log_tail = log_path.read_text()[-2000:]
                pytest.fail(f"llama_cpp.server not ready after {SERVER_START_TIMEOUT_S}s:\n{log_tail}")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        watcher.stdin.close()
        watcher.wait(10)


# -- fault injection ----------------------------------------------------------------------------------

OK_TEXT = "通过\n理由: 螺丝齐全"
OK_BODY = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": OK_TEXT}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 5},
}
# What a Qwen3-style reasoning model answers when its template leaves thinking on.
THINK_REASONING = "先看螺丝，再看线缆。"
THINK_TEXT = f"<think>\n{THINK_REASONING}\n</think>\n\n{OK_TEXT}"
THINK_BODY = {**OK_BODY, "choices": [{**OK_BODY["choices"][0], "message": {"role": "assistant", "content": THINK_TEXT}}]}


class FaultInjectionServer:
    """Test-only OpenAI-shaped server. A request's scenario is its last message's content if a script
    has that name, else its `model`; the scenario's script (a list of actions) is consumed one action
    per request, the last action repeating. Actions: "ok", "timeout" (sleep `hang_s` before
    answering), "429", "500", "400", "malformed", "think" (an answer that opens with a think block)."""

    def __init__(self, hang_s: float = 2.0) -> None:
        self.hang_s = hang_s
        self.scripts: dict[str, deque[str]] = {}
        self.hits: dict[str, int] = defaultdict(int)
        self.payloads: dict[str, list[dict]] = defaultdict(list)
        self.auth: dict[str, list[str | None]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.peak_in_flight: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

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

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                return

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                scenario, action = outer._next_action(payload, self.headers.get("Authorization"))
                try:
                    self._respond(action)
                finally:
                    with outer._lock:
                        outer.in_flight[scenario] -= 1

            def _respond(self, action: str) -> None:
                if action == "timeout":
                    time.sleep(outer.hang_s)
                    action = "ok"
                status, body = {
                    "ok": (200, json.dumps(OK_BODY, ensure_ascii=False)),
                    "think": (200, json.dumps(THINK_BODY, ensure_ascii=False)),
                    "429": (429, '{"error": "rate limited"}'),
                    "500": (500, '{"error": "internal"}'),
                    "400": (400, '{"error": "bad request"}'),
                    "malformed": (200, '{"choices": [ this is not json'),
                }[action]
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a "timeout" request, as intended

        return Handler

    def __enter__(self) -> FaultInjectionServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultInjectionServer]:
    with FaultInjectionServer(hang_s=1.5) as server:
        yield server
