"""Teacher throughput against one OpenAI-compatible server on 127.0.0.1: same prompts, same n.

    make llama-server   # once: builds llama.cpp's llama-server from the pinned sdist, cached outside the clone
    .venv/bin/python -m benchmarks.fastdistill_teacher --server llama-server --parallel 32 \
        --workload varied --prompts 64 --max-tokens 400 --concurrency 8 32 \
        [--distilabel-python /tmp/dvenv/bin/python] [--server-url http://127.0.0.1:8000/v1]

Servers: `llama-server` (llama.cpp's own server, `--parallel N` slots decoded together, continuous
batching; the binary from `make llama-server`) or `llama_cpp.server` (llama-cpp-python's server,
one request at a time), both serving the embedded SmolLM2 GGUF; `engine-double`, the named test
double of a GPU engine (resources/doubles/engine_server.py: fixed step time whatever the batch size,
answer lengths set by the prompt's hash; `--parallel` slots, `--step-ms`); or any server at `--server-url`.
Workloads (resources/doubles/teacher_workloads.py): `sql` (short SQL answers of about the same length) or
`varied` (answers from ~10 tokens to the token limit, as a reasoning teacher's spread).
Contenders, interleaved for `--rounds` rounds at every `--concurrency` (ceiling, ours, distilabel,
...), medians reported:
- ceiling: a plain asyncio httpx client keeping `concurrency` requests in flight on one client;
- ours: FastDistill `agenerate` with OpenAIChatLLM (the openai SDK's AsyncOpenAI; bounded in flight,
  every result written to the fsynced cache, rows finishing together sharing an fsync);
- distilabel: its OpenAILLM + TextGeneration in a separate interpreter (a venv where it is
  installed; never the project venv), timed around `pipeline.run` inside that process.
Writes one section of docs/benchmarks.md per (workload, server).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.metadata
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.report import DOC, write_section
from qc_assets.fastdistill.canonical import with_ids
from qc_assets.fastdistill.generation import GenerationCache, GenerationConfig, WorkItem, agenerate
from qc_assets.fastdistill.teacher import decode_profile_for, estimate_prompt_tokens, work_items
from qc_assets.fastdistill.text2sql_data import synthetic_dataset
from resources.doubles.http_server import free_port
from resources.doubles.teacher_workloads import varied_conversations
from resources.llm import DecodeParams
from resources.llm.openai_backend import OpenAIChatLLM

MODEL = "smollm2"
TITLE = "## FastDistill teacher throughput (ours vs distilabel vs a saturating client)"
DISTILABEL_SCRIPT = Path(__file__).with_name("fastdistill_distilabel_child.py")
SERVERS = ("llama-server", "llama_cpp.server", "engine-double")
# `make llama-server` caches the binary here, one folder per version, target and build flags
LLAMA_CACHE = Path(os.environ.get("LLAMA_CACHE", Path.home() / ".cache" / "qc-llama-cpp"))


def section_title(workload: str, server: str) -> str:
    if (workload, server) == ("sql", "llama_cpp.server"):
        return TITLE  # the first measurement's section, kept under its name
    return f"## FastDistill teacher throughput: {workload} answers on {server}"


def llama_server_binary() -> Path:
    version = importlib.metadata.version("llama_cpp_python")
    target = os.environ.get("LLAMA_CPU", "portable")
    found = sorted(LLAMA_CACHE.glob(f"server-{version}-{target}-*/bin/llama-server"))
    if not found:
        raise SystemExit(
            f"no llama-server binary under {LLAMA_CACHE}/server-{version}-{target}-*; build it once "
            "with `make llama-server` (about 11 minutes on 2 cores), or pass --server llama_cpp.server"
        )
    return found[-1]


def start_server(
    server: str, threads: int, parallel: int, ctx_per_slot: int, step_ms: float
) -> tuple[subprocess.Popen, str]:
    from resources.llm.smollm2 import smollm2_gguf_path

    port = free_port()
    gguf = str(smollm2_gguf_path())
    if server == "engine-double":
        cmd = [
            sys.executable,
            "-m",
            "resources.doubles.engine_server",
            "--port",
            str(port),
            "--slots",
            str(parallel),
            "--step-ms",
            str(step_ms),
        ]
    elif server == "llama-server":
        # llama-server splits -c across its slots: each of the `parallel` slots gets ctx_per_slot.
        cmd = [
            str(llama_server_binary()),
            "-m",
            gguf,
            "--alias",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--parallel",
            str(parallel),
            "-c",
            str(parallel * ctx_per_slot),
            "--threads",
            str(threads),
            "--threads-batch",
            str(threads),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--model_alias",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(ctx_per_slot),
            "--n_threads",
            str(threads),
            "--verbose",
            "False",
        ]
    # the server's log outlives this function (it is read on failure), so no context manager
    log = tempfile.NamedTemporaryFile(prefix="teacher-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{server} exited with {proc.returncode}; log: {log.name}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{server} did not start within 120 s; log: {log.name}")


async def ceiling(
    url: str, conversations: list, params: DecodeParams, concurrency: int, lengths: list[int] | None = None
) -> dict:
    queue = collections.deque(enumerate(conversations))  # sent in input order, as ours and distilabel do
    tokens = 0
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker():
            nonlocal tokens
            while queue:
                i, conv = queue.popleft()
                body = {
                    "model": MODEL,
                    "messages": conv,
                    "max_tokens": params.max_new_tokens,
                    "temperature": params.temperature,
                    "seed": params.seed + i,
                }
                response = await client.post("/chat/completions", json=body)
                response.raise_for_status()
                used = response.json()["usage"]["completion_tokens"]
                tokens += used
                if lengths is not None:
                    lengths.append(used)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"wall_s": time.perf_counter() - start, "output_tokens": tokens, "samples": len(conversations)}


async def ours(url: str, items: list[WorkItem], params: DecodeParams, concurrency: int) -> dict:
    llm = OpenAIChatLLM(url, MODEL, max_in_flight=concurrency, timeout_s=600, max_retries=0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = GenerationCache(Path(tmp) / "cache.jsonl", llm.fingerprint)
        stats = await agenerate(llm, items, params, cache, GenerationConfig(max_in_flight=concurrency, chunk_size=1))
    if stats.failed_samples:
        raise SystemExit(f"ours: {stats.failed_samples} failed samples")
    return {
        "wall_s": stats.wall_s,
        "output_tokens": stats.completion_tokens,
        "samples": len(items),
        "fsyncs": stats.cache_fsyncs,
    }


def distilabel(python: str, url: str, conversations: list, params: DecodeParams, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "url": url,
                    "model": MODEL,
                    "conversations": conversations,
                    "max_new_tokens": params.max_new_tokens,
                    "temperature": params.temperature,
                    "batch_size": concurrency,
                    "cache_dir": str(Path(tmp) / "cache"),
                }
            )
        )
        env = {**os.environ, "DISTILABEL_CACHE_DIR": str(Path(tmp) / "cache"), "OPENAI_API_KEY": "none"}
        start = time.perf_counter()
        done = subprocess.run(
            [python, str(DISTILABEL_SCRIPT), str(spec)], capture_output=True, text=True, env=env, timeout=3600
        )
        outer = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"distilabel child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "process_wall_s": outer}


def distilabel_versions(python: str) -> dict:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({p: m.version(p) for p in ('distilabel', 'openai', 'datasets')}))"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"could not read package versions from {python}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def rates(r: dict) -> dict:
    return {
        **r,
        "samples_per_h": r["samples"] / r["wall_s"] * 3600,
        "output_tokens_per_s": r["output_tokens"] / r["wall_s"],
    }


def summarize(results: list[dict]) -> dict:
    return {
        "samples_per_h_median": round(statistics.median(r["samples_per_h"] for r in results), 1),
        "output_tokens_per_s_median": round(statistics.median(r["output_tokens_per_s"] for r in results), 2),
        "samples_per_h_each": [round(r["samples_per_h"], 1) for r in results],
        "output_tokens_total_each": [r["output_tokens"] for r in results],
    }


def server_sentence(cfg: dict, ver: dict) -> str:
    if cfg["server_url"]:
        return f"One OpenAI-compatible server at `{cfg['server_url']}` (model `{MODEL}`)."
    if cfg["server"] == "engine-double":
        return (
            f"**A test double, not a model:** `ContinuousBatchingEngineDouble` "
            f"(resources/doubles/engine_server.py) on 127.0.0.1 stands in for a GPU engine such as vLLM, "
            "which cannot run on this CPU-only machine. It decodes up to "
            f"{cfg['parallel']} sequences together at a fixed {cfg['step_ms']:g} ms per step whatever the "
            "batch size (a GPU's behaviour at small batches), and each prompt's answer length is fixed by "
            "its text (sha256, uniform from 10 to max_tokens). It measures the clients' scheduling only."
        )
    if cfg["server"] == "llama-server":
        return (
            f"One real OpenAI-compatible server on 127.0.0.1: llama.cpp's `llama-server` (built by `make "
            f"llama-server` from the llama.cpp vendored in llama-cpp-python {ver['llama_cpp_python']}) with "
            f"`--parallel {cfg['parallel']}` slots decoded together and {cfg['threads']} threads, serving the "
            "embedded SmolLM2-135M Q4_1 GGUF."
        )
    return (
        f"One real OpenAI-compatible server on 127.0.0.1: `llama_cpp.server` (llama-cpp-python "
        f"{ver['llama_cpp_python']}, one request at a time) serving the embedded SmolLM2-135M Q4_1 GGUF "
        f"with {cfg['threads']} threads."
    )


def render(report: dict, command: str) -> str:
    """The docs section for one run's JSON report (`{"config", "versions", "workload", "results"}`)."""
    cfg, ver, res, wl = report["config"], report["versions"], report["results"], report["workload"]
    workload = (
        "Text2SQL prompts (short SQL answers of about the same length)"
        if cfg["workload"] == "sql"
        else "prompts asking for different amounts of work, from a one-word answer to a long essay "
        f"(resources/doubles/teacher_workloads.py, seed {cfg['seed']})"
    )
    if cfg["server"] == "engine-double":
        workload += " (the double sets the answer lengths, not the prompts' asks)"
    lines = [
        section_title(cfg["workload"], cfg["server"]),
        "",
        server_sentence(cfg, ver) + f" {cfg['prompts']} {workload}; the same system + user messages for every "
        f"contender, n=1, temperature 0, max_tokens {cfg['max_tokens']}. Answer lengths (ceiling, first round): "
        f"min {wl['min']}, median {wl['median']}, max {wl['max']} tokens. {cfg['rounds']} interleaved rounds "
        "(ceiling, ours, distilabel) at each concurrency; medians; each ratio from the same run.",
        "",
        "| in flight | contender | samples/h (median) | output tokens/s (median) | each round, samples/h "
        "| vs ceiling |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "ceiling": "ceiling: plain asyncio httpx client",
        "ours": "ours: `agenerate` + `OpenAIChatLLM` (AsyncOpenAI), fsynced cache (group commit)",
        "distilabel": f"distilabel {ver.get('distilabel', '')}: `OpenAILLM` + `TextGeneration`, "
        "`input_batch_size` = in flight",
    }
    for c, by_name in res.items():
        for name in (n for n in labels if n in by_name):
            r = by_name[name]
            each = " / ".join(f"{x:,.0f}" for x in r["samples_per_h_each"])
            lines.append(
                f"| {c} | {labels[name]} | {r['samples_per_h_median']:,.0f} | "
                f"{r['output_tokens_per_s_median']:.1f} | {each} | {r['vs_ceiling']:.2f} |"
            )
    lines += ["", "Goals: ours >= 1.5x distilabel and >= 0.95 of the ceiling.", ""]
    for c, by_name in res.items():
        share = by_name["ours"]["vs_ceiling"]
        ceil_each = by_name["ceiling"]["samples_per_h_each"]
        spread = f"the ceiling varied {min(ceil_each):,.0f} to {max(ceil_each):,.0f} samples/h between rounds"
        goal = "met" if share >= 0.95 else "**not met**"
        text = f"- {c} in flight: ours reached {share:.2f} of the ceiling (0.95 goal {goal})"
        if "ours_vs_distilabel" in by_name:
            ratio = by_name["ours_vs_distilabel"]
            text += f"; ours / distilabel = {ratio:.2f} (1.5x goal {'met' if ratio >= 1.5 else '**not met**'})"
        noise = (max(ceil_each) - min(ceil_each)) / by_name["ceiling"]["samples_per_h_median"]
        gaps = [abs(r["vs_ceiling"] - 1) for n, r in by_name.items() if isinstance(r, dict) and n != "ceiling"]
        verdict = (
            " The gaps between contenders are within that round-to-round noise, so this run does not rank them."
            if gaps and max(gaps) <= noise
            else ""
        )
        lines.append(text + f"; {spread} ({noise:.0%} of its median).{verdict}")
    if cfg["distilabel_python"]:
        venv = str(Path(cfg["distilabel_python"]).parent.parent)
        lines.append(
            f"- distilabel ran in its own venv (`{cfg['distilabel_python']}`), never in the project venv: "
            f'`python3 -m venv {venv} && {venv}/bin/pip install "distilabel[openai]==1.5.3" '
            '"openai>=1.0,<2" "datasets>=2.16,<4" "huggingface_hub<1"` (installed: openai '
            f"{ver['openai']}, datasets {ver['datasets']}). Its time is measured inside the child process around "
            "`pipeline.run(use_cache=False)`"
            + (
                f", which includes a fixed start-up of {report['distilabel_startup_s']:.1f} s (the same call on 8 "
                "prompts with one-token answers, measured in this run)"
                if report.get("distilabel_startup_s")
                else ""
            )
            + ". It sends a batch of `input_batch_size` requests and waits for the "
            "slowest before the next batch (head-of-line blocking); that costs throughput only when the server "
            "decodes a full batch faster than a part-empty one"
            + (
                ", which the engine double does by construction, as a GPU engine does at small batches."
                if cfg["server"] == "engine-double"
                else ", which a CPU-bound server barely does."
            )
        )
    else:
        lines.append("- distilabel was not run (no `--distilabel-python`).")
    lines += ["", "```bash", command, "```", ""]
    return "\n".join(lines)


def build_workload(args) -> tuple[list[WorkItem], list]:
    if args.workload == "varied":
        conversations = varied_conversations(args.prompts, seed=args.seed)
    else:
        params = DecodeParams(temperature=0.0, max_new_tokens=args.max_tokens, seed=0, n=1)
        with tempfile.TemporaryDirectory() as tmp:
            base = synthetic_dataset(Path(tmp), seed=args.seed, per_template=3)
        profile = decode_profile_for(params, "sql")
        records = [with_ids(r, profile) for r in (base * (args.prompts // len(base) + 1))[: args.prompts]]
        conversations = [item.messages for item in work_items(records, "sql")]
    items = [WorkItem(f"s{i}", conv, estimate_prompt_tokens(conv)) for i, conv in enumerate(conversations)]
    return items, conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("sql", "varied"), default="sql")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4])
    parser.add_argument("--server", choices=SERVERS, default="llama_cpp.server")
    parser.add_argument("--parallel", type=int, default=8, help="llama-server slots decoded together")
    parser.add_argument("--ctx-per-slot", type=int, default=1024)
    parser.add_argument("--step-ms", type=float, default=10.0, help="engine-double: seconds per decode step / 1000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server-url", default="")
    parser.add_argument("--distilabel-python", default="")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--from-json", type=Path, help="re-render the section from a run's printed JSON report")
    parser.add_argument("--command", default="", help="with --from-json: the command that produced the report")
    args = parser.parse_args()
    if args.from_json:
        write_section(args.doc, render(json.loads(args.from_json.read_text(encoding="utf-8")), args.command))
        return
    versions = {"llama_cpp_python": importlib.metadata.version("llama_cpp_python")}
    if args.distilabel_python:
        versions.update(distilabel_versions(args.distilabel_python))
    params = DecodeParams(temperature=0.0, max_new_tokens=args.max_tokens, seed=0, n=1)
    items, conversations = build_workload(args)
    proc, url = (
        (None, args.server_url)
        if args.server_url
        else start_server(args.server, args.threads, args.parallel, args.ctx_per_slot, args.step_ms)
    )
    runs = {c: {"ceiling": [], "ours": [], "distilabel": []} for c in args.concurrency}
    lengths: list[int] = []
    command = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.fastdistill_teacher " + shlex.join(sys.argv[1:])
    try:
        asyncio.run(ceiling(url, conversations[:2], params, 2))  # warm-up, not timed
        startup_s = None
        if args.distilabel_python:
            # distilabel's fixed cost inside pipeline.run (step processes, batch manager): one-token
            # answers, so the reader can see how much of its time is start-up rather than scheduling.
            one_token = DecodeParams(temperature=0.0, max_new_tokens=1, seed=0, n=1)
            startup_s = round(distilabel(args.distilabel_python, url, conversations[:8], one_token, 8)["wall_s"], 2)
        for done_rounds in range(1, args.rounds + 1):
            for c in args.concurrency:
                runs[c]["ceiling"].append(rates(asyncio.run(ceiling(url, conversations, params, c, lengths))))
                runs[c]["ours"].append(rates(asyncio.run(ours(url, items, params, c))))
                if args.distilabel_python:
                    runs[c]["distilabel"].append(
                        rates(distilabel(args.distilabel_python, url, conversations, params, c))
                    )
                print(c, {k: round(v[-1]["samples_per_h"]) for k, v in runs[c].items() if v}, flush=True)
            # The section is rewritten after every full round, so a run cut short still leaves its
            # completed rounds on record (the text says how many).
            report = make_report(args, versions, runs, lengths, len(conversations), done_rounds, startup_s)
            write_section(args.doc, render(report, command.strip()))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(report, indent=2))


def make_report(
    args,
    versions: dict,
    runs: dict,
    lengths: list[int],
    n_prompts: int,
    done_rounds: int,
    distilabel_startup_s: float | None,
) -> dict:
    results = {}
    for c, by_name in runs.items():
        summary = {name: summarize(rs) for name, rs in by_name.items() if rs}
        ceil = summary["ceiling"]["samples_per_h_median"]
        for name in summary:
            summary[name]["vs_ceiling"] = round(summary[name]["samples_per_h_median"] / ceil, 3)
        if "distilabel" in summary:
            summary["ours_vs_distilabel"] = round(
                summary["ours"]["samples_per_h_median"] / summary["distilabel"]["samples_per_h_median"], 3
            )
        results[str(c)] = summary
    first = sorted(lengths[:n_prompts])
    workload = {"min": first[0], "median": first[len(first) // 2], "max": first[-1]}
    config = {**vars(args), "doc": str(args.doc), "rounds": done_rounds}
    return {
        "config": config,
        "versions": versions,
        "workload": workload,
        "results": results,
        "distilabel_startup_s": distilabel_startup_s,
    }


if __name__ == "__main__":
    main()
