"""Qwen3-VL behind an OpenAI-compatible server (`vllm serve`, SGLang): the usual production path.

The client is the official SDK's `AsyncOpenAI` (its own retries with backoff for connection errors,
408/409/429/5xx, and a per-request timeout). `stream` keeps a bounded pool of at most
`max_in_flight` requests on the wire and hands back each answer as soon as it finishes, so one slow
image never holds back the ones behind it and Stage-A can save every answer at once; the number of
requests in flight is this pool's size, not Stage-A's batch size. The pool's event loop runs in a
worker thread, so requests keep flowing while Stage-A fsyncs what it received.

Images travel inline as base64 data URLs, so the server needs no access to our file system. The
image budget (`VisionPrompt.max_pixels`) is applied here, client-side: a larger image is scaled down
(aspect kept) before it is sent, so the server's processor sees at most that many pixels whatever
its own `--mm-processor-kwargs` say (they can only lower it further). dtype, device and parallelism
belong to the server (`vllm serve --dtype ... --tensor-parallel-size ...`), not to this client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import math
import mimetypes
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from resources.openai_client import check_client_settings
from resources.vlm import StreamedResult, VisionDecode, VisionOutput, VisionPrompt, VLMRequestError
from resources.vlm.transformers_backend import one_line

_DONE = object()  # the worker thread's last word on the result queue


def fit_to_budget(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio and at most `max_pixels` pixels (unchanged if it fits)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def image_data_url(path: str | Path, max_pixels: int | None = None) -> str:
    """The file as a data URL; an image over the budget is scaled down and re-encoded first."""
    from PIL import Image

    data = Path(path).read_bytes()
    mime = mimetypes.guess_type(str(path))[0] or "image/jpeg"
    if max_pixels is not None:
        with Image.open(io.BytesIO(data)) as img:
            size = fit_to_budget(*img.size, max_pixels)
            if size != img.size:
                resized = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
                buf = io.BytesIO()
                if mime == "image/jpeg":
                    resized.save(buf, format="JPEG", quality=95)
                else:
                    mime = "image/png"
                    resized.save(buf, format="PNG")
                data = buf.getvalue()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class OpenAIVisionModel:
    """`StreamingVisionModel` over `POST {base_url}/chat/completions` with the `openai` SDK."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_in_flight: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 3,
    ):
        check_client_settings(
            base_url,
            model,
            max_in_flight,
            timeout_s,
            max_retries,
            model_hint="the model id the server serves (QC_VLM_SERVED_MODEL)",
        )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self._max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    @property
    def fingerprint(self) -> str:
        host = urlsplit(self.base_url).netloc
        digest = hashlib.sha256(f"{self.base_url}|{self.model}".encode()).hexdigest()[:8]
        return f"openai:{self.model}@{host}:{digest}"

    @property
    def note(self) -> str:
        return ""

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    def generate(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> list[VisionOutput]:
        results = sorted((r for batch in self.stream(prompts, decode) for r in batch), key=lambda r: r.index)
        failed = [(prompts[r.index].image_path, r.error) for r in results if r.error is not None]
        if failed:
            raise VLMRequestError(failed, len(prompts))
        return [r.output for r in results]

    def stream(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> Iterator[list[StreamedResult]]:
        """Synchronous view of `astream`: each item holds every result that finished since the last one.

        The event loop runs in a worker thread, so requests keep going while the caller writes what it
        got; a caller slowed by fsync receives several results at once and saves them in one write.
        """
        results: queue.Queue = queue.Queue()
        loop = asyncio.new_event_loop()

        async def pump() -> None:
            async for result in self.astream(prompts, decode):
                results.put(result)

        task = loop.create_task(pump())

        def worker() -> None:
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass  # the caller stopped reading; astream has cancelled its requests
            except Exception as e:  # handed to the caller's thread, which raises it
                results.put(e)
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())  # the image-encoding threads
                loop.close()
                results.put(_DONE)

        thread = threading.Thread(target=worker, name="openai-vlm-stream", daemon=True)
        thread.start()
        try:
            finished = False
            while not finished:
                batch = [results.get()]  # every request has its own timeout, so this returns
                while not results.empty():
                    batch.append(results.get_nowait())
                finished = _DONE in batch
                errors = [item for item in batch if isinstance(item, Exception)]
                done = [item for item in batch if isinstance(item, StreamedResult)]
                if done:
                    yield done
                if errors:
                    raise errors[0]
        finally:
            if thread.is_alive():
                # RuntimeError: the loop closed in between, the worker has already finished
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
            thread.join()

    async def astream(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> AsyncIterator[StreamedResult]:
        from openai import AsyncOpenAI

        # vLLM without --api-key accepts any key; the SDK refuses to start without one.
        async with AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key or "EMPTY",
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        ) as client:
            todo = iter(enumerate(prompts))
            pending: set[asyncio.Task] = set()

            def refill() -> None:
                # Tasks are created only as slots free up, so a long input never sits in memory as
                # encoded images and at most `max_in_flight` requests are ever on the wire.
                while len(pending) < self._max_in_flight:
                    item = next(todo, None)
                    if item is None:
                        return
                    pending.add(asyncio.create_task(self._request(client, *item, decode)))

            refill()
            try:
                while pending:
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    pending -= done
                    refill()
                    for task in done:
                        yield task.result()
            finally:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _request(self, client, index: int, prompt: VisionPrompt, decode: VisionDecode) -> StreamedResult:
        import openai

        started = time.perf_counter()
        try:
            url = await asyncio.to_thread(image_data_url, prompt.image_path, prompt.max_pixels)
        except OSError as e:
            return StreamedResult(index, None, f"cannot read image: {e}", time.perf_counter() - started)
        messages = [
            {"role": "system", "content": prompt.system},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt.user}],
            },
        ]
        try:
            response = await client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=decode.max_new_tokens,
                temperature=decode.temperature,
                top_p=decode.top_p,
                seed=decode.seed,
                # not an OpenAI parameter; vLLM and SGLang honour it, others ignore it
                extra_body={"repetition_penalty": decode.repetition_penalty},
            )
        except openai.APIError as e:
            return StreamedResult(index, None, f"{type(e).__name__}: {e}", time.perf_counter() - started)
        seconds = time.perf_counter() - started
        choice = response.choices[0] if response.choices else None
        text = choice.message.content if choice is not None and choice.message is not None else None
        if not isinstance(text, str):
            return StreamedResult(index, None, f"malformed response: no text in {str(response)[:200]!r}", seconds)
        usage = response.usage
        output = VisionOutput(
            one_line(text),
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            "length" if choice.finish_reason == "length" else "stop",
        )
        return StreamedResult(index, output, None, seconds)
