"""Teacher throughput against one real OpenAI-compatible server on 127.0.0.1: same prompts, same n.

    .venv/bin/python -m benchmarks.fastdistill_teacher --prompts 32 --max-tokens 32 --concurrency 4 \
        [--distilabel-python /tmp/dvenv/bin/python] [--server-url http://127.0.0.1:8000/v1]

Contenders, interleaved for `--rounds` rounds (ceiling, ours, distilabel, ...), medians reported:
- ceiling: a plain asyncio httpx client keeping `concurrency` requests in flight on one client;
- ours: FastDistill `agenerate` with OpenAIChatLLM (bounded in flight, cache writes per result);
- distilabel: its OpenAILLM + TextGeneration in a separate interpreter (a venv where it is
  installed; never the project venv), timed around `pipeline.run` inside that process.
Without --server-url the script starts `llama_cpp.server` on the embedded SmolLM2 GGUF.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from qc_assets.fastdistill.canonical import with_ids
from qc_assets.fastdistill.generation import GenerationCache, GenerationConfig, agenerate
from qc_assets.fastdistill.teacher import decode_profile_for, work_items
from qc_assets.fastdistill.text2sql_data import synthetic_dataset
from resources.llm import DecodeParams
from resources.llm_openai import OpenAIChatLLM

MODEL = "smollm2"
DISTILABEL_SCRIPT = Path(__file__).with_name("fastdistill_distilabel_child.py")


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    from resources.smollm2 import smollm2_gguf_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()), "--model_alias", MODEL,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads),
           "--verbose", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start within 120 s")


async def ceiling(url: str, conversations: list, params: DecodeParams, concurrency: int) -> dict:
    queue = list(enumerate(conversations))
    tokens = 0
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker():
            nonlocal tokens
            while queue:
                i, conv = queue.pop()
                body = {"model": MODEL, "messages": conv, "max_tokens": params.max_new_tokens,
                        "temperature": params.temperature, "seed": params.seed + i}
                response = await client.post("/chat/completions", json=body)
                response.raise_for_status()
                tokens += response.json()["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"wall_s": time.perf_counter() - start, "output_tokens": tokens, "samples": len(conversations)}


async def ours(url: str, records: list[dict], params: DecodeParams, concurrency: int) -> dict:
    llm = OpenAIChatLLM(url, MODEL, max_in_flight=concurrency, timeout_s=600, max_retries=0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = GenerationCache(Path(tmp) / "cache.jsonl", llm.fingerprint)
        stats = await agenerate(llm, work_items(records, "sql"), params, cache,
                                GenerationConfig(max_in_flight=concurrency, chunk_size=1))
    if stats.failed_samples:
        raise SystemExit(f"ours: {stats.failed_samples} failed samples")
    return {"wall_s": stats.wall_s, "output_tokens": stats.completion_tokens, "samples": len(records)}


def distilabel(python: str, url: str, conversations: list, params: DecodeParams, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"url": url, "model": MODEL, "conversations": conversations,
                                    "max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
                                    "batch_size": concurrency, "cache_dir": str(Path(tmp) / "cache")}))
        env = {**os.environ, "DISTILABEL_CACHE_DIR": str(Path(tmp) / "cache"), "OPENAI_API_KEY": "none"}
        start = time.perf_counter()
        done = subprocess.run([python, str(DISTILABEL_SCRIPT), str(spec)], capture_output=True, text=True,
                              env=env, timeout=3600)
        outer = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"distilabel child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "process_wall_s": outer}


def rates(r: dict) -> dict:
    return {**r, "samples_per_h": r["samples"] / r["wall_s"] * 3600, "output_tokens_per_s": r["output_tokens"] / r["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server-url", default="")
    parser.add_argument("--distilabel-python", default="")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    args = parser.parse_args()
    params = DecodeParams(temperature=0.0, max_new_tokens=args.max_tokens, seed=0, n=1)
    with tempfile.TemporaryDirectory() as tmp:
        base = synthetic_dataset(Path(tmp), seed=0, per_template=3)
    profile = decode_profile_for(params, "sql")
    records = [with_ids(r, profile) for r in (base * (args.prompts // len(base) + 1))[: args.prompts]]
    for i, rec in enumerate(records):  # repeats of the same question get distinct ids
        rec["sample_id"] = f"{rec['sample_id']}-{i}"
    conversations = [item.messages for item in work_items(records, "sql")]
    proc, url = (None, args.server_url) if args.server_url else start_server(args.threads)
    runs: dict[str, list[dict]] = {"ceiling": [], "ours": [], "distilabel": []}
    try:
        for _ in range(args.rounds):
            runs["ceiling"].append(rates(asyncio.run(ceiling(url, conversations, params, args.concurrency))))
            runs["ours"].append(rates(asyncio.run(ours(url, records, params, args.concurrency))))
            if args.distilabel_python:
                runs["distilabel"].append(rates(distilabel(args.distilabel_python, url, conversations, params,
                                                           args.concurrency)))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    summary = {}
    for name, results in runs.items():
        if results:
            summary[name] = {
                "samples_per_h_median": round(statistics.median(r["samples_per_h"] for r in results), 1),
                "output_tokens_per_s_median": round(statistics.median(r["output_tokens_per_s"] for r in results), 2),
                "samples_per_h_each": [round(r["samples_per_h"], 1) for r in results],
                "output_tokens_total_each": [r["output_tokens"] for r in results],
            }
    ceil = summary["ceiling"]["samples_per_h_median"]
    for name in summary:
        summary[name]["vs_ceiling"] = round(summary[name]["samples_per_h_median"] / ceil, 3)
    if "distilabel" in summary:
        summary["ours_vs_distilabel"] = round(
            summary["ours"]["samples_per_h_median"] / summary["distilabel"]["samples_per_h_median"], 3)
    print(json.dumps({"config": vars(args), "results": summary}, indent=2))


if __name__ == "__main__":
    main()
