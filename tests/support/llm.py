"""LLM fixtures: the embedded SmolLM2 model (loaded once per session), a real llama.cpp
OpenAI-compatible server on 127.0.0.1 serving it, and the two scripted OpenAI-shaped test doubles of
resources/doubles/llm_servers.py. tests/conftest.py registers them for every test module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from resources.doubles.http_server import free_port
from resources.doubles.llm_servers import FaultInjectionServer, ScriptedRuleFollowingServer
from resources.llm.smollm2 import smollm2_gguf_path
from support.reaper import reap_with_parent

SERVER_MODEL_ALIAS = "smollm2"
SERVER_START_TIMEOUT_S = 120.0
# One intra-op thread: the test machine's few cores are shared, and spinning OpenMP workers make a
# 135M model's decode far slower than a single thread.
TEST_THREADS = 1


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


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultInjectionServer]:
    with FaultInjectionServer(hang_s=1.5) as server:
        yield server


@pytest.fixture
def scripted_server() -> Iterator[ScriptedRuleFollowingServer]:
    with ScriptedRuleFollowingServer() as server:
        yield server
