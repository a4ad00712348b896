"""Teacher generation: bounded in-flight requests, token-budget back-pressure, a durable cache.

The earlier system fanned out every batch at once (unbounded) and waited for the slowest request
of a batch before writing anything (head-of-line blocking); a failed batch became rows of None.
Here:

- `max_in_flight` workers pull small chunks from a queue, so at most that many requests run;
- each request first reserves `prompt_tokens + n * max_new_tokens` from a shared token budget, so
  long prompts slow the intake instead of overloading the provider;
- results go to the cache (fsynced JSONL) as they arrive: rows that finish within
  `fsync_delay_s` of each other share one write + fsync, done off the event loop (group commit), so
  durability costs neither a disk flush per row nor a stalled loop; a crash loses at most that
  window, whose samples are simply sent again on the next run;
- a request that raises or returns failed completions is cached as a row with `error`, never None;
- the cache is keyed by sample_id: finished samples are never sent again, on a re-run or after a
  crash, and a teacher change under the same cache is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from resources.llm import ChatLLM, Completion, DecodeParams
from resources.store import append_jsonl, iter_jsonl


@dataclass(frozen=True)
class WorkItem:
    sample_id: str
    messages: list[dict[str, str]]
    prompt_tokens_estimate: int


@dataclass(frozen=True)
class GenerationConfig:
    max_in_flight: int = 4  # requests on the wire at once
    chunk_size: int = 1  # conversations per request (embedded models batch them)
    max_tokens_in_flight: int = 65_536  # reserved prompt + max output tokens across requests
    max_attempts: int = 2  # a failed sample is retried on later runs until this many attempts
    fsync_delay_s: float = 0.05  # rows finished this close together share one fsync; 0 = no timer

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "chunk_size", "max_tokens_in_flight", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.fsync_delay_s <= 5:
            raise ValueError(f"fsync_delay_s must be in [0, 5] seconds, got {self.fsync_delay_s}")


@dataclass
class GenerationStats:
    requested: int = 0  # samples that needed the teacher in this call
    cached: int = 0  # samples served from the cache
    teacher_calls: int = 0  # requests sent
    failed_samples: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    max_in_flight_seen: int = 0
    max_tokens_in_flight_seen: int = 0
    cache_fsyncs: int = 0  # group commits (each one write + fsync of one or more rows)

    @property
    def teacher_tokens_per_sec(self) -> float | None:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 and self.teacher_calls else None


def _completion_row(c: Completion) -> dict:
    return {
        "text": c.text,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "finish_reason": c.finish_reason,
        "latency_s": round(c.latency_s, 6),
        "error": c.error,
    }


class GenerationCache:
    """Append-only JSONL of finished requests; the last row per sample_id wins."""

    def __init__(self, path: Path, teacher_fingerprint: str, max_attempts: int = 2) -> None:
        self.path = Path(path)
        self.teacher_fingerprint = teacher_fingerprint
        self.max_attempts = max_attempts
        self.rows: dict[str, dict] = {}
        for row in iter_jsonl(self.path):
            if row["teacher_fingerprint"] != teacher_fingerprint:
                raise ValueError(
                    f"cache {self.path} holds outputs of teacher {row['teacher_fingerprint']!r}, "
                    f"not {teacher_fingerprint!r}; use a new run_id for a different teacher"
                )
            self.rows[row["sample_id"]] = row

    def is_done(self, sample_id: str) -> bool:
        row = self.rows.get(sample_id)
        return row is not None and (row["error"] is None or row["attempt"] >= self.max_attempts)

    def attempts(self, sample_id: str) -> int:
        row = self.rows.get(sample_id)
        return 0 if row is None else row["attempt"]

    def record(
        self, sample_id: str, completions: list[Completion] | None, error: str | None, params: DecodeParams
    ) -> dict:
        """Build the row and append it durably (one fsync)."""
        row = self.row(sample_id, completions, error, params)
        append_jsonl(self.path, [row])
        return row

    def row(
        self, sample_id: str, completions: list[Completion] | None, error: str | None, params: DecodeParams
    ) -> dict:
        """Build the row and take it as the sample's latest; the caller writes it (see `_GroupCommit`)."""
        if completions is not None and error is None:
            failed = [c.error or "no text" for c in completions if not c.ok]
            error = f"{len(failed)}/{len(completions)} completions failed: {failed[0]}" if failed else None
        row = {
            "sample_id": sample_id,
            "teacher_fingerprint": self.teacher_fingerprint,
            "decode": params.as_dict(),
            "attempt": self.attempts(sample_id) + 1,
            "error": error,
            "completions": [_completion_row(c) for c in completions or []],
            "finished_at": time.time(),
        }
        self.rows[sample_id] = row
        return row


class _GroupCommit:
    """Rows that finish within `delay_s` of each other share one append + fsync, run in a thread so
    the event loop keeps serving responses meanwhile. `on_row` sees each row once it is durable, in
    the order the rows finished."""

    def __init__(self, path: Path, delay_s: float, stats: GenerationStats, on_row: Callable[[dict], None] | None):
        self.path, self.delay_s, self.stats, self.on_row = path, delay_s, stats, on_row
        self.pending: list[dict] = []
        self.lock = asyncio.Lock()  # FIFO: flushes reach the file in the order they were asked for
        self.timer: asyncio.Task | None = None

    async def add(self, row: dict) -> None:
        self.pending.append(row)
        if self.delay_s == 0:
            await self.flush()
        elif self.timer is None or self.timer.done():
            self.timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.delay_s)
        await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            rows, self.pending = self.pending, []
            if not rows:
                return
            await asyncio.to_thread(append_jsonl, self.path, rows)
            self.stats.cache_fsyncs += 1
        if self.on_row is not None:
            for row in rows:
                self.on_row(row)

    async def close(self) -> None:
        """Write what is left; a failed delayed write re-raises here, never silently."""
        if self.timer is not None:
            await self.timer
        await self.flush()


async def _stream(llm: ChatLLM, conversations: list, params: DecodeParams):
    """(index, completions) as each conversation finishes when the provider can stream results
    (OpenAIChatLLM.aiter_completions); otherwise one batched call (embedded models batch a chunk)."""
    aiter = getattr(llm, "aiter_completions", None)
    if aiter is not None:
        async for index, completions in aiter(conversations, params):
            yield index, completions
        return
    achat = getattr(llm, "achat", None)
    results = await (achat(conversations, params) if achat else asyncio.to_thread(llm.chat, conversations, params))
    if len(results) != len(conversations):
        raise ValueError(f"provider returned {len(results)} results for {len(conversations)} conversations")
    for index, completions in enumerate(results):
        yield index, completions


class _TokenBudget:
    """Reserve tokens before a request; waits while the budget is spent. A single request larger
    than the whole budget runs alone rather than deadlocking."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cond = asyncio.Condition()

    async def acquire(self, cost: int) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.used == 0 or self.used + cost <= self.limit)
            self.used += cost

    async def release(self, cost: int) -> None:
        async with self.cond:
            self.used -= cost
            self.cond.notify_all()


async def agenerate(
    llm: ChatLLM,
    items: Sequence[WorkItem],
    params: DecodeParams,
    cache: GenerationCache,
    config: GenerationConfig = GenerationConfig(),
    on_row: Callable[[dict], None] | None = None,
) -> GenerationStats:
    """Send every item the cache has not finished; rows land in the cache as requests complete."""
    stats = GenerationStats()
    seen: set[str] = set()
    todo = []
    for item in items:
        if item.sample_id in seen:
            raise ValueError(f"sample_id {item.sample_id} appears twice; dedup before generation")
        seen.add(item.sample_id)
        if cache.is_done(item.sample_id):
            stats.cached += 1
        else:
            todo.append(item)
    stats.requested = len(todo)
    queue: asyncio.Queue[list[WorkItem]] = asyncio.Queue()
    for start in range(0, len(todo), config.chunk_size):
        queue.put_nowait(todo[start : start + config.chunk_size])
    budget = _TokenBudget(config.max_tokens_in_flight)
    commit = _GroupCommit(cache.path, config.fsync_delay_s, stats, on_row)
    in_flight = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal in_flight
        while not queue.empty():
            chunk = queue.get_nowait()
            cost = sum(it.prompt_tokens_estimate + params.n * params.max_new_tokens for it in chunk)
            await budget.acquire(cost)
            in_flight += 1
            stats.max_in_flight_seen = max(stats.max_in_flight_seen, in_flight)
            stats.max_tokens_in_flight_seen = max(stats.max_tokens_in_flight_seen, budget.used)
            t0 = time.perf_counter()
            written: set[int] = set()

            async def write(
                k: int, completions: list[Completion] | None, error: str | None, chunk=chunk, written=written
            ) -> None:
                written.add(k)
                row = cache.row(chunk[k].sample_id, completions, error, params)
                stats.failed_samples += row["error"] is not None
                for c in row["completions"]:
                    stats.completion_tokens += c["completion_tokens"]
                    stats.prompt_tokens += c["prompt_tokens"]
                await commit.add(row)

            stats.teacher_calls += 1
            try:
                async for k, completions in _stream(llm, [it.messages for it in chunk], params):
                    await write(k, list(completions), None)
                missing_error = f"provider returned no result for this conversation (chunk of {len(chunk)})"
            # A provider failure of any kind becomes a cached error row for exactly the samples it
            # left unfinished, visible in reports and retried on the next run; it is not swallowed.
            except Exception as err:  # noqa: BLE001
                missing_error = f"{type(err).__name__}: {err}"
            finally:
                in_flight -= 1
                await budget.release(cost)
            for k in range(len(chunk)):
                if k not in written:
                    await write(k, None, missing_error)
            stats.latencies_s.append(time.perf_counter() - t0)

    try:
        await asyncio.gather(*(worker() for _ in range(min(config.max_in_flight, max(1, queue.qsize())))))
    finally:
        await commit.close()
        aclose = getattr(llm, "aclose", None)  # an HTTP provider's connection pool for this loop
        if aclose is not None:
            await aclose()
    stats.wall_s = time.perf_counter() - started
    return stats


def generate(
    llm: ChatLLM,
    items: Sequence[WorkItem],
    params: DecodeParams,
    cache: GenerationCache,
    config: GenerationConfig = GenerationConfig(),
    on_row: Callable[[dict], None] | None = None,
) -> GenerationStats:
    """Synchronous wrapper around `agenerate` (for assets and scripts without an event loop)."""
    return asyncio.run(agenerate(llm, items, params, cache, config, on_row))
