"""OpenAI-compatible chat backend (vLLM, SGLang, Ollama, llama-server) over the official `openai` SDK.

Transport, timeouts and retries are the SDK's (`AsyncOpenAI`): timeouts, connection errors, 408, 409,
429 and 5xx are retried with exponential backoff that honours `Retry-After`, up to `max_retries`.
At most `max_in_flight` requests are on the wire. A request that still fails becomes a `Completion`
with `text=None` and `error` set, never an empty answer. Results come back in input order from
`chat`/`achat`, or as they finish from `aiter_completions`, so a slow request does not hold back the
ones behind it. One SDK client (one connection pool) serves every call made on the same event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI

from resources.llm import Completion, Conversation, DecodeParams
from resources.llm.thinking import chat_template_kwargs, split_think_block
from resources.openai_client import check_client_settings

N_MODES = ("native", "fanout")
STRUCTURED_OUTPUTS = ("none", "vllm", "vllm_legacy", "sglang", "llama_cpp")
# The statuses the SDK retries (openai._base_client.BaseClient._should_retry).
_RETRIED_STATUSES = (408, 409, 429)


def _failed(error: str, latency: float, **extra) -> Completion:
    return Completion(text=None, finish_reason="error", latency_s=latency, error=error, extra=extra)


class OpenAIChatLLM:
    """`ChatLLM` over `POST {base_url}/chat/completions`.

    `n_mode="fanout"` (default) sends n requests with seeds `seed + i`, because llama.cpp's server
    ignores `n`; `"native"` sends one request with `n`. `structured_output` names how `params.constraint`
    reaches the engine: its regex as vLLM `structured_outputs` ("vllm"), older vLLM `guided_regex`
    ("vllm_legacy") or SGLang `regex` ("sglang"), or its GBNF as `grammar` for llama.cpp ("llama_cpp").
    `params.json_schema` goes out as `response_format`. `thinking` sets `chat_template_kwargs`
    (`enable_thinking`), which vLLM, SGLang and llama-server pass to the chat template.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_in_flight: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        n_mode: str = "fanout",
        structured_output: str = "none",
        thinking: str = "off",
    ) -> None:
        check_client_settings(base_url, model, max_in_flight, timeout_s, max_retries)
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
        self.n_mode = n_mode
        self.structured_output = structured_output
        self.template_kwargs = chat_template_kwargs(thinking)
        # One client, and one in-flight gate, per event loop: both are bound to the loop they run on.
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

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
            return asyncio.run(self._chat_and_close(conversations, params))
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
        self._extra_body(params)  # bad config fails before any request is sent
        client, gate = self._session()
        # A bounded window of conversation tasks keeps memory flat on long inputs; the gate bounds
        # what is actually on the wire.
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

    async def aclose(self) -> None:
        """Close the running loop's client (its connection pool); the next call opens a new one."""
        session = self._clients.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session[0].close()

    # -- internals ----------------------------------------------------------------------------------

    async def _chat_and_close(self, conversations: Sequence[Conversation], params: DecodeParams):
        try:
            return await self.achat(conversations, params)
        finally:
            await self.aclose()

    def _session(self) -> tuple[AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "none",  # local servers take any key; the SDK insists on one
                timeout=self.timeout_s,
                max_retries=self.max_retries,
            )
            self._clients[loop] = (client, asyncio.Semaphore(self.max_in_flight))
        return self._clients[loop]

    def _extra_body(self, params: DecodeParams) -> dict:
        """Request fields outside the OpenAI schema: the engine's output constraint and the chat
        template arguments."""
        body = {"chat_template_kwargs": self.template_kwargs} if self.template_kwargs is not None else {}
        constraint = params.constraint
        if constraint is None:
            return body
        if self.structured_output == "none":
            raise ValueError(
                "params.constraint is set but structured_output='none'; set structured_output to one of "
                f"{STRUCTURED_OUTPUTS[1:]} for this server, or clear params.constraint"
            )
        backend = f"the openai backend (structured_output={self.structured_output!r})"
        if self.structured_output == "llama_cpp":
            return {**body, "grammar": constraint.form("gbnf", backend)}
        regex = constraint.form("regex", backend)
        if self.structured_output == "vllm":
            return {**body, "structured_outputs": {"regex": regex}}
        if self.structured_output == "vllm_legacy":
            return {**body, "guided_regex": regex}
        return {**body, "regex": regex}

    def _response_format(self, params: DecodeParams) -> dict:
        """`params.json_schema` as the request's `response_format`. llama_cpp.server (0.3.x) takes only
        `{"type": "json_object", "schema": ...}`; vLLM, SGLang and OpenAI take the standard
        `{"type": "json_schema", "json_schema": {"name": ..., "schema": ...}}`."""
        if params.json_schema is None:
            return {}
        if self.structured_output == "llama_cpp":
            return {"response_format": {"type": "json_object", "schema": params.json_schema}}
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": params.json_schema, "strict": True},
            }
        }

    def _request_kwargs(self, conversation: Conversation, params: DecodeParams, seed: int, n: int) -> dict:
        kwargs = {
            "model": self.model,
            "messages": [dict(m) for m in conversation],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
            "extra_body": self._extra_body(params),
            **self._response_format(params),
        }
        if n > 1:
            kwargs["n"] = n
        return kwargs

    async def _conversation(
        self,
        client: AsyncOpenAI,
        gate: asyncio.Semaphore,
        index: int,
        conversation: Conversation,
        params: DecodeParams,
    ) -> tuple[int, list[Completion]]:
        if params.n == 1 or self.n_mode == "native":
            kwargs = self._request_kwargs(conversation, params, params.seed, params.n)
            return index, await self._request(client, gate, kwargs, params.n)
        requests = [
            self._request(client, gate, self._request_kwargs(conversation, params, params.seed + i, 1), 1)
            for i in range(params.n)
        ]
        return index, [c for group in await asyncio.gather(*requests) for c in group]

    async def _request(self, client: AsyncOpenAI, gate: asyncio.Semaphore, kwargs: dict, n: int) -> list[Completion]:
        started = time.perf_counter()
        # Retries (and their backoff) run inside the SDK call, so a request keeps its slot until it
        # has an answer or has given up.
        try:
            async with gate:
                raw = await client.chat.completions.with_raw_response.create(**kwargs)
        except openai.APITimeoutError:
            error, attempts, status = f"timeout after {self.timeout_s}s", self.max_retries + 1, None
        except openai.APIConnectionError as e:
            error, attempts, status = f"{type(e).__name__}: {e.__cause__ or e}", self.max_retries + 1, None
        except openai.APIStatusError as e:
            status = e.status_code
            retried = status in _RETRIED_STATUSES or status >= 500
            error = f"HTTP {status}: {e.response.text[:300]}"
            attempts = self.max_retries + 1 if retried else 1
        else:
            return self._parse(raw, kwargs["seed"], n, time.perf_counter() - started)
        latency = time.perf_counter() - started
        extra = {"attempts": attempts, **({"status": status} if status is not None else {})}
        return [_failed(error, latency, **extra) for _ in range(n)]

    def _parse(self, raw, seed: int, n: int, latency: float) -> list[Completion]:
        extra = {"attempts": raw.retries_taken + 1, "seed": seed}
        try:
            body = raw.parse()
            choices = sorted(body.choices, key=lambda c: c.index or 0)
            texts = [c.message.content for c in choices]
            if not choices or not all(isinstance(t, str) for t in texts):
                raise TypeError(f"choices carry no text content: {choices!r:.200}")
            usage = body.usage
            prompt_tokens = int(usage.prompt_tokens) if usage else 0
            total_completion = int(usage.completion_tokens) if usage else 0
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # json.JSONDecodeError is a ValueError
            error = f"malformed response body ({type(e).__name__}: {e}): {raw.text[:200]!r}"
            return [_failed(error, latency, **extra) for _ in range(n)]
        if usage is None:
            extra["usage_missing"] = True
        if len(choices) > 1:
            # The server reports one total for all choices; per-choice counts are its average.
            extra["completion_tokens_is_average"] = True
        out = []
        for choice, content in zip(choices[:n], texts[:n], strict=False):
            text, think_extra = split_think_block(content)
            # vLLM/SGLang with a reasoning parser return the think block separately.
            reasoning = (choice.message.model_extra or {}).get("reasoning_content")
            if reasoning and "reasoning" not in think_extra:
                think_extra["reasoning"] = reasoning
            out.append(
                Completion(
                    text=text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=total_completion // len(choices),
                    finish_reason="length" if choice.finish_reason == "length" else "stop",
                    latency_s=latency,
                    extra={**extra, "server_finish_reason": choice.finish_reason, **think_extra},
                )
            )
        missing = n - len(out)
        if missing > 0:
            error = f"server returned {len(choices)} choices for n={n}; use n_mode='fanout' for this server"
            out.extend(_failed(error, latency, **extra) for _ in range(missing))
        return out
