"""`ScriptedVLMServerDouble`: a test double of an OpenAI-compatible VLM server (stdlib HTTP, 127.0.0.1).

No real VLM server runs on this CPU-only machine (vLLM is GPU-only), so this double answers
`POST /v1/chat/completions` image requests with a scripted, deterministic text derived from the image
bytes it received: `"<width>x<height> <sha256[:12]>"`, or a caption scripted for that image. Scripts: a
base delay per request, a capacity (requests worked on at once; more wait their turn, as at a saturated
server), extra delay
for chosen images, and images that always get HTTP 500. It records what it was asked (sha256 and size
of every image, in arrival order) and the largest number of requests it held at once (`GET /stats`
reads and resets it), so tests can check the client's in-flight bound and its resume behaviour. The
client under test is the production `OpenAIVisionModel` (the `openai` SDK). Used by
tests/test_stage_a_streaming.py and by
benchmarks/stage_a_streaming.py (which measures the client side only: the double has no model).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import threading
import time

from PIL import Image

from resources.doubles.http_server import ScriptedHTTPServer


def answer_for(image_bytes: bytes) -> str:
    with Image.open(io.BytesIO(image_bytes)) as img:
        w, h = img.size
    return f"{w}x{h} {hashlib.sha256(image_bytes).hexdigest()[:12]}"


class ScriptedVLMServerDouble(ScriptedHTTPServer):
    def __init__(self, delay_s: float = 0.0, capacity: int | None = None):
        self.delay_s = delay_s
        # at most `capacity` requests are worked on at once (like a server's batch slots); the rest queue
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self.slow: dict[str, float] = {}  # image sha256 -> extra seconds
        self.failing: set[str] = set()  # image sha256 -> HTTP 500, every time
        self.captions: dict[str, str] = {}  # image sha256 -> the summary to answer (else answer_for's text)
        self.requests: list[dict] = []  # {"sha256", "size"} per request, in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        super().__init__()

    def respond(self, method, path, body, headers):
        if method == "GET":
            if path != "/stats":
                return 404, {"error": {"message": f"no route {path}"}}
            with self._lock:  # read and reset, so each benchmark row sees its own peak
                stats = {"max_in_flight": self.max_in_flight, "requests": len(self.requests)}
                self.max_in_flight = 0
            return 200, stats
        user = body["messages"][1]["content"]
        url = next(p for p in user if p["type"] == "image_url")["image_url"]["url"]
        data = base64.b64decode(url.split(",", 1)[1])
        sha = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
        with self._lock:
            self.requests.append({"sha256": sha, "size": size})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            with self._slots if self._slots is not None else contextlib.nullcontext():
                time.sleep(self.delay_s + self.slow.get(sha, 0.0))
        finally:
            # before the answer goes out: the client can only send its next request after it,
            # so the count never includes a request that the client already sees as finished
            with self._lock:
                self.in_flight -= 1
        if sha in self.failing:
            return 500, {"error": {"message": "scripted failure", "type": "server_error"}}
        return 200, {
            "id": "double",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.captions.get(sha) or answer_for(data)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Until no request is being held (after a client was killed, its requests still finish here)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.in_flight == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.in_flight} requests still held after {timeout_s}s")


def main() -> None:
    """Serve in this process (benchmarks run it apart from the client, so they do not share a GIL)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=0, help="requests worked on at once; 0 = unbounded")
    args = parser.parse_args()
    server = ScriptedVLMServerDouble(delay_s=args.delay_s, capacity=args.capacity or None)
    print(server.base_url, flush=True)
    threading.Event().wait()  # until the parent terminates this process


if __name__ == "__main__":
    main()
