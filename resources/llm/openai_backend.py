"""OpenAI-compatible chat backend (vLLM, SGLang, Ollama, llama.cpp server) over `httpx.AsyncClient`.

At most `max_in_flight` requests are on the wire; each has a total deadline of `timeout_s`; timeouts,
transport errors, 429 and 5xx are retried with exponential backoff (honouring `Retry-After`). A
request that still fails becomes a `Completion` with `text=None` and `error` set, never an empty
answer. Results come back in input order from `chat`/`achat`, or as they finish from
`aiter_completions`, so a slow request does not hold back the ones behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import httpx

from resources.llm.constrained import gbnf_for_regex
from resources.llm import Completion, Conversation, DecodeParams

N_MODES = ("native", "fanout")
STRUCTURED_OUTPUTS = ("none", "vllm", "vllm_legacy", "sglang", "llama_cpp")
_MAX_RETRY_AFTER_S = 30.0


class _Retryable(Exception):
    """An attempt that failed in a way worth retrying (timeout, transport error, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _failed(error: str, latency: float, **extra) -> Completion:
    return Completion(text=None, finish_reason="error", latency_s=latency, error=error, extra=extra)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None  # an HTTP-date; fall back to our own backoff


class OpenAIChatLLM:
    """`ChatLLM` over `POST {base_url}/chat/completions`.

    `n_mode="fanout"` (default) sends n requests with seeds `seed + i`, because llama.cpp's server
    ignores `n`; `"native"` sends one request with `n`. `structured_output` names how `params.regex`
    reaches the engine: vLLM `structured_outputs` ("vllm"), older vLLM `guided_regex`
    ("vllm_legacy"), SGLang `regex` ("sglang"), or a GBNF `grammar` for llama.cpp ("llama_cpp").
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_in_flight: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        n_mode: str = "fanout",
        structured_output: str = "none",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must be a non-empty model id as the server names it")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        if n_mode not in N_MODES:
            raise ValueError(f"n_mode must be one of {N_MODES}, got {n_mode!r}")
        if structured_output not in STRUCTURED_OUTPUTS:
            raise ValueError(f"structured_output must be one of {STRUCTURED_OUTPUTS}, got {structured_output!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.n_mode = n_mode
        self.structured_output = structured_output

    @property
    def fingerprint(self) -> str:
        host = urlsplit(self.base_url).netloc
        digest = hashlib.sha256(f"{self.base_url}|{self.model}".encode()).hexdigest()[:8]
        return f"openai:{self.model}@{host}:{digest}"

    # -- public API ---------------------------------------------------------------------------------

    def chat(self, conversations: Sequence[Conversation], params: DecodeParams) -> list[list[Completion]]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.achat(conversations, params))
        raise RuntimeError("OpenAIChatLLM.chat() was called inside a running event loop; use `await achat()`")

    async def achat(self, conversations: Sequence[Conversation], params: DecodeParams) -> list[list[Completion]]:
        results: list[list[Completion] | None] = [None] * len(conversations)
        async for index, completions in self.aiter_completions(conversations, params):
            results[index] = completions
        return results  # type: ignore[return-value]  # every index was filled above

    async def aiter_completions(
        self, conversations: Sequence[Conversation], params: DecodeParams
    ) -> AsyncIterator[tuple[int, list[Completion]]]:
        """Yield `(index, completions)` per conversation as each finishes (not in input order)."""
        self._structured_fields(params)  # bad config fails before any request is sent
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
        timeout = httpx.Timeout(self.timeout_s)
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, limits=limits) as client:
            gate = asyncio.Semaphore(self.max_in_flight)
            # A bounded window of conversation tasks keeps memory flat on long inputs; the semaphore
            # bounds what is actually on the wire.
            window = 2 * self.max_in_flight
            todo = iter(enumerate(conversations))
            pending: set[asyncio.Task] = set()

            def refill() -> None:
                while len(pending) < window:
                    item = next(todo, None)
                    if item is None:
                        return
                    index, conversation = item
                    pending.add(asyncio.create_task(self._conversation(client, gate, index, conversation, params)))

            refill()
            try:
                while pending:
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        pending.discard(task)
                        yield task.result()
                    refill()
            finally:
                for task in pending:
                    task.cancel()

    # -- internals ----------------------------------------------------------------------------------

    def _structured_fields(self, params: DecodeParams) -> dict:
        if params.regex is None:
            return {}
        if self.structured_output == "none":
            raise ValueError(
                "params.regex is set but structured_output='none'; set structured_output to one of "
                f"{STRUCTURED_OUTPUTS[1:]} for this server, or clear params.regex"
            )
        if self.structured_output == "vllm":
            return {"structured_outputs": {"regex": params.regex}}
        if self.structured_output == "vllm_legacy":
            return {"guided_regex": params.regex}
        if self.structured_output == "sglang":
            return {"regex": params.regex}
        return {"grammar": gbnf_for_regex(params.regex)}

    def _response_format(self, params: DecodeParams) -> dict:
        """`params.json_schema` as the request's `response_format`. llama_cpp.server (0.3.x) takes only
        `{"type": "json_object", "schema": ...}`; vLLM, SGLang and OpenAI take the standard
        `{"type": "json_schema", "json_schema": {"name": ..., "schema": ...}}`."""
        if params.json_schema is None:
            return {}
        if self.structured_output == "llama_cpp":
            return {"response_format": {"type": "json_object", "schema": params.json_schema}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "response", "schema": params.json_schema, "strict": True}}}

    def _payload(self, conversation: Conversation, params: DecodeParams, seed: int, n: int) -> dict:
        payload = {
            "model": self.model,
            "messages": [dict(m) for m in conversation],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
        }
        if n > 1:
            payload["n"] = n
        payload.update(self._structured_fields(params))
        payload.update(self._response_format(params))
        return payload

    async def _conversation(
        self,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        index: int,
        conversation: Conversation,
        params: DecodeParams,
    ) -> tuple[int, list[Completion]]:
        if params.n == 1 or self.n_mode == "native":
            payload = self._payload(conversation, params, params.seed, params.n)
            return index, await self._request(client, gate, payload, params.n)
        requests = [
            self._request(client, gate, self._payload(conversation, params, params.seed + i, 1), 1)
            for i in range(params.n)
        ]
        return index, [c for group in await asyncio.gather(*requests) for c in group]

    async def _request(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, payload: dict, n: int
    ) -> list[Completion]:
        started = time.perf_counter()
        last_error = ""
        for attempt in range(self.max_retries + 1):
            delay = self.backoff_s * (2**attempt)
            try:
                async with gate:
                    response = await asyncio.wait_for(client.post("/chat/completions", json=payload), self.timeout_s)
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(f"HTTP {response.status_code}: {response.text[:300]}", _retry_after(response))
            except (TimeoutError, httpx.TimeoutException):
                last_error = f"timeout after {self.timeout_s}s"
            except httpx.TransportError as e:
                last_error = f"{type(e).__name__}: {e}"
            except _Retryable as e:
                last_error = str(e)
                delay = e.retry_after if e.retry_after is not None else delay
            else:
                latency = time.perf_counter() - started
                if response.status_code >= 400:
                    error = f"HTTP {response.status_code}: {response.text[:300]}"
                    status = response.status_code
                    return [_failed(error, latency, attempts=attempt + 1, status=status) for _ in range(n)]
                return self._parse(response, payload, n, latency, attempt + 1)
            if attempt < self.max_retries:
                await asyncio.sleep(delay)
        latency = time.perf_counter() - started
        return [_failed(last_error, latency, attempts=self.max_retries + 1) for _ in range(n)]

    def _parse(
        self, response: httpx.Response, payload: dict, n: int, latency: float, attempts: int
    ) -> list[Completion]:
        extra = {"attempts": attempts, "seed": payload["seed"]}
        try:
            body = response.json()
            choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
            texts = [c["message"]["content"] for c in choices]
            if not choices or not all(isinstance(t, str) for t in texts):
                raise TypeError(f"choices carry no text content: {choices!r:.200}")
            usage = body.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens", 0))
            total_completion = int(usage.get("completion_tokens", 0))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            error = f"malformed response body ({type(e).__name__}: {e}): {response.text[:200]!r}"
            return [_failed(error, latency, **extra) for _ in range(n)]
        if not usage:
            extra["usage_missing"] = True
        if len(choices) > 1:
            # The server reports one total for all choices; per-choice counts are its average.
            extra["completion_tokens_is_average"] = True
        out = [
            Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=total_completion // len(choices),
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                latency_s=latency,
                extra={**extra, "server_finish_reason": choice.get("finish_reason")},
            )
            for choice, text in zip(choices[:n], texts[:n])
        ]
        missing = n - len(out)
        if missing > 0:
            error = f"server returned {len(choices)} choices for n={n}; use n_mode='fanout' for this server"
            out.extend(_failed(error, latency, **extra) for _ in range(missing))
        return out
