"""The GPU-engine test double behind the teacher benchmark: it must batch, bound and answer as claimed.

`ContinuousBatchingEngineDouble` (resources/doubles/engine_server.py) stands in for vLLM, which
cannot run here. Its step counts are checked, not wall times: a step is one token for every
sequence in the batch, so N sequences decoded together take max(length) steps, not sum(length).
"""

import asyncio

import pytest
from openai import OpenAI

from resources.doubles.engine_server import ContinuousBatchingEngineDouble, answer_length, serve_in_thread


def test_answer_length_is_fixed_by_the_text_and_spreads_over_the_range():
    lengths = [answer_length(f"prompt {i}", 10, 400) for i in range(200)]
    assert lengths == [answer_length(f"prompt {i}", 10, 400) for i in range(200)]
    assert min(lengths) >= 10 and max(lengths) <= 400
    assert min(lengths) < 60 and max(lengths) > 350  # a real spread, not one length
    assert answer_length("anything", 10, 5) == 5  # the cap wins over the floor


async def _decode(double: ContinuousBatchingEngineDouble, lengths: list[int]) -> None:
    engine = asyncio.get_running_loop().create_task(double._engine())
    await asyncio.gather(*(double._generate(n) for n in lengths))
    engine.cancel()


def test_sequences_within_the_slots_decode_together():
    double = ContinuousBatchingEngineDouble(slots=4, step_s=0.0001)
    asyncio.run(_decode(double, [5, 30, 12, 20]))
    assert double.steps == 30  # the longest one, not 5 + 30 + 12 + 20
    assert double.peak_batch == 4


def test_requests_beyond_the_slots_wait_for_a_free_slot():
    double = ContinuousBatchingEngineDouble(slots=1, step_s=0.0001)
    asyncio.run(_decode(double, [5, 30, 12, 20]))
    assert double.steps == 67  # one at a time
    assert double.peak_batch == 1


def test_a_freed_slot_is_refilled_at_once():
    # slots 2, lengths 10, 10, 10: the third starts when the first two finish -> 20 steps, never 30
    double = ContinuousBatchingEngineDouble(slots=2, step_s=0.0001)
    asyncio.run(_decode(double, [10, 10, 10]))
    assert double.steps == 20


@pytest.fixture
def engine_url():
    url, server = serve_in_thread(ContinuousBatchingEngineDouble(slots=8, step_s=0.0005))
    yield url
    server.should_exit = True


def test_speaks_openai_chat_completions_with_honest_usage(engine_url):
    client = OpenAI(base_url=engine_url, api_key="none")
    prompt = "Write a long essay about a cable tray."
    reply = client.chat.completions.create(model="any", max_tokens=50, messages=[{"role": "user", "content": prompt}])
    n = answer_length(prompt, 10, 50)
    assert reply.usage.completion_tokens == n
    assert len(reply.choices[0].message.content.split()) == n
    assert reply.choices[0].finish_reason == ("length" if n == 50 else "stop")


def test_teacher_benchmark_names_the_double_in_its_section(tmp_path):
    import subprocess
    import sys

    doc = tmp_path / "benchmarks.md"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fastdistill_teacher",
            "--server",
            "engine-double",
            "--parallel",
            "4",
            "--step-ms",
            "1",
            "--workload",
            "varied",
            "--prompts",
            "12",
            "--max-tokens",
            "30",
            "--concurrency",
            "4",
            "--rounds",
            "1",
            "--doc",
            str(doc),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    section = doc.read_text(encoding="utf-8")
    assert "\n## FastDistill teacher throughput: varied answers on engine-double\n" in section
    assert "**A test double, not a model:** `ContinuousBatchingEngineDouble`" in section
    assert "| 4 | ceiling" in section and "| 4 | ours" in section
    assert "distilabel was not run" in section
