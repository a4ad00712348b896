"""Teacher throughput against one real OpenAI-compatible server on 127.0.0.1: same prompts, same n.

    .venv/bin/python -m benchmarks.fastdistill_teacher --prompts 32 --max-tokens 32 --concurrency 4 \
        [--distilabel-python /tmp/dvenv/bin/python] [--server-url http://127.0.0.1:8000/v1]

Contenders, interleaved for `--rounds` rounds (ceiling, ours, distilabel, ...), medians reported:
- ceiling: a plain asyncio httpx client keeping `concurrency` requests in flight on one client;
- ours: FastDistill `agenerate` with OpenAIChatLLM (bounded in flight, cache writes per result);
- distilabel: its OpenAILLM + TextGeneration in a separate interpreter (a venv where it is
  installed; never the project venv), timed around `pipeline.run` inside that process.
Without --server-url the script starts `llama_cpp.server` on the embedded SmolLM2 GGUF.
Writes the section "## FastDistill teacher throughput (ours vs distilabel vs a saturating client)" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.report import DOC, write_section
from qc_assets.fastdistill.canonical import with_ids
from qc_assets.fastdistill.generation import GenerationCache, GenerationConfig, agenerate
from qc_assets.fastdistill.teacher import decode_profile_for, work_items
from qc_assets.fastdistill.text2sql_data import synthetic_dataset
from resources.llm import DecodeParams
from resources.llm.openai_backend import OpenAIChatLLM

MODEL = "smollm2"
TITLE = "## FastDistill teacher throughput (ours vs distilabel vs a saturating client)"
DISTILABEL_SCRIPT = Path(__file__).with_name("fastdistill_distilabel_child.py")


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    from resources.llm.smollm2 import smollm2_gguf_path

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


def distilabel_versions(python: str) -> dict:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({p: m.version(p) for p in ('distilabel', 'openai', 'datasets')}))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"could not read package versions from {python}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def rates(r: dict) -> dict:
    return {**r, "samples_per_h": r["samples"] / r["wall_s"] * 3600, "output_tokens_per_s": r["output_tokens"] / r["wall_s"]}


def render(report: dict, command: str) -> str:
    """The docs section for one run's JSON report (`{"config", "versions", "results"}`)."""
    cfg, ver, res = report["config"], report["versions"], report["results"]
    c = cfg["concurrency"]
    labels = {
        "ceiling": f"ceiling: plain asyncio httpx client, {c} in flight",
        "ours": f"ours: `agenerate` + `OpenAIChatLLM`, {c} in flight, fsynced cache row per result",
        "distilabel": f"distilabel {ver.get('distilabel', '')}: `OpenAILLM` + `TextGeneration`, `input_batch_size={c}`",
    }
    names = [n for n in labels if n in res]
    if cfg["server_url"]:
        server = f"One OpenAI-compatible server at `{cfg['server_url']}` (model `{MODEL}`)."
    else:
        server = (f"One real OpenAI-compatible server on 127.0.0.1: `llama_cpp.server` (llama-cpp-python "
                  f"{ver['llama_cpp_python']}) serving the embedded SmolLM2-135M Q4_1 GGUF with {cfg['threads']} threads.")
    token_counts = {t for n in names for t in res[n]["output_tokens_total_each"]}
    if len(token_counts) == 1:
        tokens = f"Every contender got the same {token_counts.pop():,} output tokens in every round."
    else:
        tokens = "Output tokens per round: " + "; ".join(
            f"{n} {' / '.join(f'{t:,}' for t in res[n]['output_tokens_total_each'])}" for n in names) + "."
    lines = [
        TITLE, "",
        server + f" {cfg['prompts']} Text2SQL prompts (same system + user messages for every contender), n=1, "
        f"temperature 0, max_tokens {cfg['max_tokens']}, {c} requests in flight for each contender. "
        f"{cfg['rounds']} interleaved round{'s' if cfg['rounds'] != 1 else ''} ({', '.join(names)}); medians. {tokens}",
        "",
        "| contender | samples/h (median) | output tokens/s (median) | each round, samples/h | vs ceiling |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        r = res[n]
        each = " / ".join(f"{x:,.0f}" for x in r["samples_per_h_each"])
        lines.append(f"| {labels[n]} | {r['samples_per_h_median']:,.0f} | {r['output_tokens_per_s_median']:.1f} | "
                     f"{each} | {r['vs_ceiling']:.2f} |")
    lines.append("")
    ceil_each = res["ceiling"]["samples_per_h_each"]
    spread = f"the ceiling itself varied {min(ceil_each):,.0f} to {max(ceil_each):,.0f} samples/h between rounds"
    if "ours_vs_distilabel" not in res:
        lines.append("distilabel was not run (no `--distilabel-python`).")
        lines.append("")
    else:
        ratio = res["ours_vs_distilabel"]
        lines += [f"Ours / distilabel = {ratio:.2f} on medians. What this does and does not show:", ""]
        if ratio >= 1.5:
            lines.append(f"- The 1.5x-over-distilabel goal is met against this server ({spread}).")
        else:
            gap = abs(res["ours"]["samples_per_h_median"] - res["distilabel"]["samples_per_h_median"])
            noise = ("within" if gap <= max(ceil_each) - min(ceil_each) else "larger than")
            why = ("" if cfg["server_url"] else
                   " llama-cpp-python's server decodes one request at a time, so any client that keeps at least one "
                   "request queued saturates it; head-of-line blocking (distilabel waits for the slowest request of "
                   "a batch before sending the next batch) only costs the short gaps between batches.")
            lines.append(f"- The 1.5x-over-distilabel goal is **not demonstrated here**.{why} The gap between ours "
                         f"and distilabel is {noise} the round-to-round noise ({spread}). The case where bounded "
                         "streaming beats batch-wise fan-out, a server that decodes many requests at once (vLLM, "
                         "SGLang, llama.cpp `llama-server --parallel`) with outputs of varying length, needs "
                         "`--server-url http://HOST:PORT/v1 --concurrency 64` against such a server.")
    ours_share = res["ours"]["vs_ceiling"]
    met = "met" if ours_share >= 0.9 else "**not met**"
    lines.append(f"- Ours reached {ours_share:.0%} of the ceiling (>= 90% goal {met} in this setup) while writing "
                 "every result durably as it finished.")
    if "distilabel" in res:
        lines.append(
            f"- distilabel ran in its own venv (`{cfg['distilabel_python']}`), never in the project venv: "
            "`python3 -m venv /tmp/dvenv && /tmp/dvenv/bin/pip install \"distilabel[openai]==1.5.3\" "
            "\"openai>=1.0,<2\" \"datasets>=2.16,<4\" \"huggingface_hub<1\"` (no torch pulled; installed: openai "
            f"{ver['openai']}, datasets {ver['datasets']}). Its time is measured inside the child process around "
            "`pipeline.run(use_cache=False)` (includes distilabel's own step-process start-up, excludes "
            "interpreter start and imports).")
    lines += ["", "```bash", command, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server-url", default="")
    parser.add_argument("--distilabel-python", default="")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    versions = {"llama_cpp_python": importlib.metadata.version("llama_cpp_python")}
    if args.distilabel_python:
        versions.update(distilabel_versions(args.distilabel_python))
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
    report = {"config": {**vars(args), "doc": str(args.doc)}, "versions": versions, "results": summary}
    print(json.dumps(report, indent=2))
    command = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.fastdistill_teacher " + shlex.join(sys.argv[1:])
    write_section(args.doc, render(report, command.strip()))


if __name__ == "__main__":
    main()
