"""Teacher generation: cache by sample_id (zero calls on re-run), crash safety, error rows, bounds.

The teacher is the real embedded SmolLM2 GGUF through transformers, wrapped in a counter; failures
come from a real HTTP client pointed at a closed local port.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qc_assets.fastdistill.canonical import with_ids
from qc_assets.fastdistill.generation import GenerationCache, GenerationConfig, generate
from qc_assets.fastdistill.teacher import CACHE_FILE, candidate_rows, decode_profile_for, run_teacher, work_items
from qc_assets.fastdistill.text2sql_data import synthetic_dataset
from resources.doubles.http_server import free_port
from resources.llm import DecodeParams
from resources.store import read_jsonl

REPO = Path(__file__).resolve().parents[1]
PARAMS = DecodeParams(temperature=0.0, max_new_tokens=8, seed=11, n=1)


class CountingLLM:
    """Counts requests and conversations sent to a real backend."""

    def __init__(self, llm):
        self.llm = llm
        self.calls = 0
        self.conversations = 0

    @property
    def fingerprint(self):
        return self.llm.fingerprint

    def chat(self, conversations, params):
        self.calls += 1
        self.conversations += len(conversations)
        return self.llm.chat(conversations, params)


@pytest.fixture(scope="module")
def embedded_llm():
    from resources.llm.smollm2 import smollm2_gguf_path
    from resources.llm.transformers_backend import TransformersChatLLM

    gguf = smollm2_gguf_path()
    return TransformersChatLLM(gguf.parent, gguf_file=gguf.name, batch_size=4, num_threads=1)


def records(tmp_path, count, seed=5):
    profile = decode_profile_for(PARAMS, "sql")
    return [with_ids(r, profile) for r in synthetic_dataset(tmp_path / "data", seed=seed, per_template=1)[:count]]


@pytest.mark.slow
def test_rerun_makes_zero_teacher_calls(tmp_path, embedded_llm):
    recs = records(tmp_path, 4)
    config = GenerationConfig(max_in_flight=1, chunk_size=2)
    first = CountingLLM(embedded_llm)
    cache, stats = run_teacher(first, recs, PARAMS, "sql", tmp_path / "teacher", config)
    assert first.conversations == 4 and stats.requested == 4 and stats.cached == 0
    assert stats.failed_samples == 0 and stats.completion_tokens > 0
    log_before = (tmp_path / "teacher" / CACHE_FILE).read_bytes()

    again = CountingLLM(embedded_llm)
    cache2, stats2 = run_teacher(again, recs, PARAMS, "sql", tmp_path / "teacher", config)
    assert again.calls == 0 and again.conversations == 0
    assert stats2.requested == 0 and stats2.cached == 4 and stats2.teacher_calls == 0
    assert (tmp_path / "teacher" / CACHE_FILE).read_bytes() == log_before
    rows = candidate_rows(recs, cache2, "sql")
    assert [r["sample_id"] for r in rows] == [r["sample_id"] for r in recs]
    assert all(isinstance(r["teacher_text"], str) and r["teacher_error"] is None for r in rows)


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qc_assets.fastdistill.canonical import with_ids
    from qc_assets.fastdistill.generation import GenerationConfig
    from qc_assets.fastdistill.teacher import decode_profile_for, run_teacher
    from qc_assets.fastdistill.text2sql_data import synthetic_dataset
    from resources.llm import DecodeParams
    from resources.llm.transformers_backend import TransformersChatLLM
    from resources.llm.smollm2 import smollm2_gguf_path

    tmp, count = Path(sys.argv[1]), int(sys.argv[2])
    params = DecodeParams(temperature=0.0, max_new_tokens=8, seed=11, n=1)
    profile = decode_profile_for(params, "sql")
    recs = [with_ids(r, profile) for r in synthetic_dataset(tmp / "data", seed=5, per_template=1)[:count]]
    gguf = smollm2_gguf_path()
    llm = TransformersChatLLM(gguf.parent, gguf_file=gguf.name, batch_size=4, num_threads=1)
    print("loaded", flush=True)
    run_teacher(llm, recs, params, "sql", tmp / "teacher", GenerationConfig(max_in_flight=1, chunk_size=1))
    print("finished", flush=True)
    """
)


@pytest.mark.slow
def test_kill_mid_generation_then_rerun_loses_nothing(tmp_path, embedded_llm):
    total = 5
    cache_path = tmp_path / "teacher" / CACHE_FILE
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(total)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if cache_path.exists() and len(read_jsonl(cache_path)) >= 2:
            break
        time.sleep(0.2)
    assert child.poll() is None, f"child ended early: {child.stdout.read()!r}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    done_before = read_jsonl(cache_path)
    assert 2 <= len(done_before) < total, "the kill must land mid-generation"

    recs = records(tmp_path, total)
    counting = CountingLLM(embedded_llm)
    cache, stats = run_teacher(
        counting, recs, PARAMS, "sql", tmp_path / "teacher", GenerationConfig(max_in_flight=1, chunk_size=4)
    )
    assert counting.conversations == total - len(done_before)
    assert stats.cached == len(done_before)
    rows = read_jsonl(cache_path)
    assert rows[: len(done_before)] == done_before  # finished work kept as written
    assert sorted(r["sample_id"] for r in rows) == sorted(r["sample_id"] for r in recs)
    assert all(r["error"] is None for r in rows)


def test_failed_requests_are_error_rows_and_retried_up_to_max_attempts(tmp_path):
    from resources.llm.openai_backend import OpenAIChatLLM

    llm = OpenAIChatLLM(f"http://127.0.0.1:{free_port()}/v1", "nobody", max_retries=0, timeout_s=2)
    recs = records(tmp_path, 3)
    config = GenerationConfig(max_in_flight=2, max_attempts=2)
    cache, stats = run_teacher(llm, recs, PARAMS, "sql", tmp_path / "t", config)
    assert stats.failed_samples == 3 and stats.teacher_calls == 3
    rows = candidate_rows(recs, cache, "sql")
    assert all(r["teacher_text"] is None and r["teacher_error"] for r in rows)
    assert all(r["finish_reason"] == "error" for r in rows)
    _, stats2 = run_teacher(llm, recs, PARAMS, "sql", tmp_path / "t", config)
    assert stats2.teacher_calls == 3  # retried once more ...
    _, stats3 = run_teacher(llm, recs, PARAMS, "sql", tmp_path / "t", config)
    assert stats3.teacher_calls == 0 and stats3.cached == 3  # ... then final


def test_token_budget_and_in_flight_bound(tmp_path):
    from resources.llm.openai_backend import OpenAIChatLLM

    llm = OpenAIChatLLM(f"http://127.0.0.1:{free_port()}/v1", "nobody", max_retries=0, timeout_s=2)
    recs = records(tmp_path, 8)
    items = work_items(recs, "sql")
    per_request = max(i.prompt_tokens_estimate for i in items) + PARAMS.max_new_tokens
    cache = GenerationCache(tmp_path / "a.jsonl", llm.fingerprint)
    stats = generate(llm, items, PARAMS, cache, GenerationConfig(max_in_flight=6, max_tokens_in_flight=2 * per_request))
    assert stats.max_in_flight_seen == 2 and stats.max_tokens_in_flight_seen <= 2 * per_request
    cache_b = GenerationCache(tmp_path / "b.jsonl", llm.fingerprint)
    stats_b = generate(llm, items, PARAMS, cache_b, GenerationConfig(max_in_flight=3, max_tokens_in_flight=10**6))
    assert stats_b.max_in_flight_seen == 3
    # a request larger than the whole budget still runs, alone
    cache_c = GenerationCache(tmp_path / "c.jsonl", llm.fingerprint)
    stats_c = generate(llm, items[:3], PARAMS, cache_c, GenerationConfig(max_in_flight=3, max_tokens_in_flight=1))
    assert stats_c.max_in_flight_seen == 1 and len(cache_c.rows) == 3


def test_cache_refuses_a_different_teacher_and_duplicate_ids(tmp_path):
    from resources.llm.openai_backend import OpenAIChatLLM

    llm = OpenAIChatLLM(f"http://127.0.0.1:{free_port()}/v1", "a", max_retries=0, timeout_s=2)
    recs = records(tmp_path, 1)
    run_teacher(llm, recs, PARAMS, "sql", tmp_path / "t", GenerationConfig())
    other = OpenAIChatLLM(f"http://127.0.0.1:{free_port()}/v1", "b", max_retries=0, timeout_s=2)
    with pytest.raises(ValueError, match="use a new run_id"):
        run_teacher(other, recs, PARAMS, "sql", tmp_path / "t", GenerationConfig())
    with pytest.raises(ValueError, match="appears twice"):
        generate(llm, work_items(recs * 2, "sql"), PARAMS, GenerationCache(tmp_path / "x.jsonl", "f"))


def test_results_are_written_as_they_finish_not_per_batch(tmp_path):
    """One slow request (the fault-injection server hangs on it) must not hold back the rows of the
    fast ones sent in the same chunk: they are cached first, the slow one last."""
    from qc_assets.fastdistill.generation import WorkItem
    from resources.doubles.llm_servers import FaultInjectionServer
    from resources.llm.openai_backend import OpenAIChatLLM

    with FaultInjectionServer(hang_s=1.0) as server:
        server.script("hol", ["ok"])
        server.script("slow question", ["timeout"])
        llm = OpenAIChatLLM(server.base_url, "hol", max_in_flight=4, timeout_s=30, max_retries=0)
        texts = ["slow question", "fast 1", "fast 2", "fast 3"]
        items = [WorkItem(f"s{i}", [{"role": "user", "content": t}], 10) for i, t in enumerate(texts)]
        order = []
        cache = GenerationCache(tmp_path / "c.jsonl", llm.fingerprint)
        stats = generate(
            llm,
            items,
            PARAMS,
            cache,
            GenerationConfig(max_in_flight=1, chunk_size=4),
            on_row=lambda row: order.append(row["sample_id"]),
        )
        assert stats.failed_samples == 0 and stats.teacher_calls == 1
        assert set(order[:3]) == {"s1", "s2", "s3"} and order[3] == "s0"
        assert [r["sample_id"] for r in read_jsonl(tmp_path / "c.jsonl")] == order
        assert server.peak_in_flight["hol"] <= 4


@pytest.mark.parametrize(("delay_s", "max_fsyncs"), [(0.0, 8), (0.5, 2)])
def test_rows_finishing_together_share_an_fsync(tmp_path, delay_s, max_fsyncs):
    """Group commit: with a delay, 8 answers that arrive together cost one or two fsyncs, not eight;
    with delay 0 no row waits for a timer (rows that finish during a flush join the next one). Either
    way every row is on disk before `on_row` sees it and when `generate` returns."""
    from qc_assets.fastdistill.generation import WorkItem
    from resources.doubles.llm_servers import FaultInjectionServer
    from resources.llm.openai_backend import OpenAIChatLLM

    with FaultInjectionServer() as server:
        server.script("group", ["ok"])
        llm = OpenAIChatLLM(server.base_url, "group", max_in_flight=8, timeout_s=30, max_retries=0)
        items = [WorkItem(f"g{i}", [{"role": "user", "content": f"q{i}"}], 10) for i in range(8)]
        cache = GenerationCache(tmp_path / "c.jsonl", llm.fingerprint)
        durable = []
        stats = generate(
            llm,
            items,
            PARAMS,
            cache,
            GenerationConfig(max_in_flight=8, fsync_delay_s=delay_s),
            on_row=lambda row: durable.append(row["sample_id"]),
        )
    on_disk = [r["sample_id"] for r in read_jsonl(tmp_path / "c.jsonl")]
    assert sorted(on_disk) == [f"g{i}" for i in range(8)] and durable == on_disk
    assert 1 <= stats.cache_fsyncs <= max_fsyncs
