"""`ContinuousBatchingEngineDouble`: a test double of a GPU serving engine (vLLM-like), on 127.0.0.1.

vLLM needs a GPU and none is here, so this double stands in for the one property of a GPU engine
that the teacher benchmark is about: a decode step takes about the same time whether 1 or `slots`
sequences are in the batch (at small batch sizes a GPU step is bound by reading the weights), so a
client that keeps every slot busy gets more tokens per second than one that lets slots idle.
The CPU llama-server does not have that property (its tokens/s are flat in the batch size), which
is why the head-of-line blocking of a batch-and-wait client barely shows there.

Model, and nothing more:
- `POST /v1/chat/completions` joins a queue; up to `slots` sequences decode together;
- every `step_s` seconds each active sequence gets one token (steps run on an absolute clock, so
  a late event loop catches up instead of drifting);
- a request's answer length is fixed by its last user message: sha256 of the text picks a length
  uniformly in [min_tokens, max_tokens] (the request's `max_tokens`), so every contender gets the
  same lengths for the same prompts;
- the answer is that many "tok" words, `usage.completion_tokens` is the length, and
  `finish_reason` is "length" at the cap, "stop" below it.
No model, no prefill cost, no network cost: it measures clients, not engines.
`GET /stats` reads and resets the peak number of sequences decoded together and the step count.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resources.doubles.http_server import free_port


def answer_length(text: str, min_tokens: int, max_tokens: int) -> int:
    """The double's answer length for a prompt: uniform in [min_tokens, max_tokens], fixed by the text."""
    low = min(min_tokens, max_tokens)
    draw = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return low + draw % (max_tokens - low + 1)


@dataclass
class _Sequence:
    remaining: int
    done: asyncio.Future


class ContinuousBatchingEngineDouble:
    def __init__(self, slots: int = 32, step_s: float = 0.01, min_tokens: int = 10):
        self.slots, self.step_s, self.min_tokens = slots, step_s, min_tokens
        self.peak_batch = 0
        self.steps = 0
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._wake = asyncio.Event()  # set when a request arrives at an idle engine

    async def _engine(self) -> None:
        active: list[_Sequence] = []
        clock, busy_steps = 0.0, 0  # the clock restarts whenever the engine goes idle
        while True:
            while self._waiting and len(active) < self.slots:
                active.append(self._waiting.popleft())
            if not active:
                self._wake.clear()
                await self._wake.wait()
                clock, busy_steps = time.perf_counter(), 0
                continue
            self.peak_batch = max(self.peak_batch, len(active))
            busy_steps += 1
            self.steps += 1
            await asyncio.sleep(max(0.0, clock + busy_steps * self.step_s - time.perf_counter()))
            for seq in active:
                seq.remaining -= 1
            for seq in [s for s in active if s.remaining <= 0]:
                active.remove(seq)
                seq.done.set_result(None)

    async def _generate(self, length: int) -> None:
        seq = _Sequence(length, asyncio.get_running_loop().create_future())
        self._waiting.append(seq)
        self._wake.set()
        await seq.done

    def app(self) -> Starlette:
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            text = body["messages"][-1]["content"]
            cap = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
            n = answer_length(text if isinstance(text, str) else repr(text), self.min_tokens, cap)
            await self._generate(n)
            prompt_tokens = sum(len(str(m["content"]).split()) for m in body["messages"])
            return JSONResponse(
                {
                    "id": "engine-double",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(["tok"] * n)},
                            "finish_reason": "length" if n >= cap else "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": n,
                        "total_tokens": prompt_tokens + n,
                    },
                }
            )

        async def models(_: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": "engine-double", "object": "model"}]})

        async def stats(_: Request) -> JSONResponse:
            out = {"peak_batch": self.peak_batch, "steps": self.steps}
            self.peak_batch = 0
            return JSONResponse(out)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette):
            engine = asyncio.get_running_loop().create_task(self._engine())
            yield
            engine.cancel()

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", models),
                Route("/stats", stats),
            ],
            lifespan=lifespan,
        )


def serve_in_thread(double: ContinuousBatchingEngineDouble) -> tuple[str, uvicorn.Server]:
    """Start the double on a free 127.0.0.1 port in a daemon thread (for tests); returns (base url, server)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(double.app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("engine double did not start within 30 s")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}/v1", server


def main() -> None:
    """Serve in its own process, so the benchmark's clients do not share its event loop or GIL."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--min-tokens", type=int, default=10)
    args = parser.parse_args()
    double = ContinuousBatchingEngineDouble(args.slots, args.step_ms / 1000, args.min_tokens)
    uvicorn.run(double.app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
