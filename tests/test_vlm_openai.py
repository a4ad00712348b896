"""The OpenAI-compatible VLM path against a real HTTP server on 127.0.0.1.

No VLM server that runs on a CPU can be installed here (vLLM is GPU-only), so `TinyVLMServer` is a
minimal OpenAI-compatible endpoint written for this test around the real tiny Qwen3-VL: it decodes
the data-URL images and runs `TransformersVLM`. The client side under test is the production code.
"""

import base64
import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from resources.vlm import VisionDecode, VisionPrompt, VLMRequestError
from resources.vlm.resource import VLMResource


class TinyVLMServer:
    def __init__(self, vlm):
        vlm_ref, lock = vlm, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                system, user = body["messages"]
                image = next(p for p in user["content"] if p["type"] == "image_url")["image_url"]["url"]
                text = next(p for p in user["content"] if p["type"] == "text")["text"]
                with tempfile.NamedTemporaryFile(suffix=".png") as f:
                    f.write(base64.b64decode(image.split(",", 1)[1]))
                    f.flush()
                    with lock:
                        out = vlm_ref.generate(
                            [VisionPrompt(f.name, system["content"], text)],
                            VisionDecode(max_new_tokens=body["max_tokens"]),
                        )[0]
                reply = {
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": out.text},
                            "finish_reason": out.finish_reason,
                        }
                    ],
                    "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server(tiny_vlm):
    srv = TinyVLMServer(tiny_vlm)
    yield srv
    srv.close()


def test_openai_backend_returns_what_the_served_model_generates(server, tiny_vlm, sample_images):
    images = sorted((sample_images / "RRU安装检查" / "审核通过").rglob("*.jpg"))[:3]
    prompts = [VisionPrompt(str(p), "你是质检助手。", "请概括照片。") for p in images]
    decode = VisionDecode(max_new_tokens=8)
    remote = VLMResource(backend="openai", base_url=server.url, model="tiny").get_vlm()
    got = remote.generate(prompts, decode)
    assert [o.text for o in got] == [o.text for o in tiny_vlm.generate(prompts, decode)]
    assert all(o.prompt_tokens > 0 for o in got)


def test_failed_requests_raise_instead_of_becoming_empty_summaries(sample_images):
    remote = VLMResource(
        backend="openai", base_url="http://127.0.0.1:9/v1", model="x", max_retries=0, timeout_s=2.0
    ).get_vlm()
    image = next((sample_images / "RRU安装检查").rglob("*.jpg"))
    with pytest.raises(VLMRequestError, match="1 of 1 VLM requests failed.*APIConnectionError"):
        remote.generate([VisionPrompt(str(image), "s", "u")], VisionDecode(max_new_tokens=4))
