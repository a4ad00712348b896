"""The embedded LLM on CPU: llama.cpp in-process vs transformers float32, on Stage-B prompts.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.llm_cpu_backends --prompts 8 --threads 1 2

Both backends load the same embedded SmolLM2-135M GGUF: llama.cpp decodes its Q4 weights as they
are; transformers de-quantises them to float32. The prompts are the production Stage-B verdict
prompt (`qc_assets.stage_b.prompts.build_messages`, initial guidance) over synthetic groups.
Measured per backend and thread count, one prompt at a time (how Stage-B's llama.cpp path runs):
- prefill tokens/s: prompt tokens / time of a 1-token answer;
- decode tokens/s: (answer tokens - 1) / (time of a `--max-tokens` answer - time of the 1-token one);
- Stage-B rollouts/min: constrained verdicts (VERDICT_REGEX, temperature 0.7) through the backend's
  own `chat`, transformers batching `--batch-size` prompts per generate call as Stage-B does.
Backends and thread counts run interleaved for `--rounds` rounds; medians. Writes the section
"## LLM CPU backends (llama.cpp in-process vs transformers float32)" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from benchmarks.constrained_decoding import SUMMARIES
from benchmarks.report import DOC, write_section
from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_messages
from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT
from resources.llm import DecodeParams
from resources.llm.smollm2 import smollm2_gguf_path

TITLE = "## LLM CPU backends (llama.cpp in-process vs transformers float32)"
MISSION = "挡风板安装检查"


def stage_b_prompts(count: int) -> list[list[dict]]:
    mission = get_mission(MISSION)
    guidance = Guidance.initial(mission)
    prompts = []
    for i in range(count):
        per_image = {f"image_{k + 1}": SUMMARIES[(3 * i + k) % len(SUMMARIES)] for k in range(3)}
        prompts.append(build_messages(mission, guidance, {"record_id": f"bench/{i}", "per_image": per_image}))
    return prompts


def build(backend: str, threads: int, batch_size: int):
    gguf = smollm2_gguf_path()
    if backend == "llama_cpp":
        from resources.llm.llama_cpp_backend import LlamaCppChatLLM

        return LlamaCppChatLLM(gguf, n_ctx=2048, n_threads=threads)
    from resources.llm.transformers_backend import TransformersChatLLM

    return TransformersChatLLM(gguf.parent, gguf_file=gguf.name, batch_size=batch_size, num_threads=threads)


def measure(llm, prompts: list, max_tokens: int) -> dict:
    prefill_tokens = prefill_s = decode_tokens = decode_s = 0.0
    for conv in prompts:
        t0 = time.perf_counter()
        (one,) = llm.chat([conv], DecodeParams(max_new_tokens=1))
        t1 = time.perf_counter()
        (full,) = llm.chat([conv], DecodeParams(max_new_tokens=max_tokens))
        t2 = time.perf_counter()
        prefill_tokens += one[0].prompt_tokens
        prefill_s += t1 - t0
        decode_tokens += full[0].completion_tokens - 1
        decode_s += max((t2 - t1) - (t1 - t0), 1e-9)
    params = DecodeParams(temperature=0.7, max_new_tokens=max_tokens, seed=0, constraint=VERDICT_CONSTRAINT)
    t0 = time.perf_counter()
    rows = llm.chat(prompts, params)
    rollout_s = time.perf_counter() - t0
    return {
        "prefill_tok_s": prefill_tokens / prefill_s,
        "decode_tok_s": decode_tokens / decode_s,
        "rollouts_per_min": len(rows) / rollout_s * 60,
        "prompt_tokens_mean": prefill_tokens / len(prompts),
        "answer_tokens_mean": decode_tokens / len(prompts) + 1,
    }


def threads_sentence(res: list[dict]) -> str:
    """Whether a second thread helped llama.cpp here (it does on idle cores, not on oversubscribed ones)."""
    by_threads = {r["threads"]: r["rollouts_per_min"] for r in res if r["backend"] == "llama_cpp"}
    if len(by_threads) < 2:
        return ""
    best = max(by_threads, key=by_threads.get)
    others = ", ".join(f"{t} threads {v:.1f}" for t, v in sorted(by_threads.items()) if t != best)
    return (
        f"llama.cpp was fastest with {best} thread{'s' if best != 1 else ''} ({by_threads[best]:.1f} "
        f"rollouts/min vs {others}) on these shared cores: its worker threads spin-wait for each other, so "
        "a thread that loses its core stalls the rest (more threads may pay off on idle cores; not measured here)."
    )


def render(report: dict, command: str) -> str:
    cfg, res = report["config"], report["results"]
    lines = [
        TITLE,
        "",
        f"The embedded SmolLM2-135M GGUF ({report['gguf']}) on this machine's CPU ({os.cpu_count()} cores, shared "
        f"with other work while it ran), {cfg['prompts']} Stage-B verdict prompts (mission {MISSION}, initial "
        f"guidance, about {res[0]['prompt_tokens_mean']:.0f} prompt tokens each), greedy answers up to "
        f"{cfg['max_tokens']} tokens for prefill/decode, constrained sampled verdicts (temperature 0.7, "
        f"VERDICT_REGEX) for rollouts; transformers batches {cfg['batch_size']} prompts per generate call. "
        f"{cfg['rounds']} interleaved rounds; medians. llama.cpp keeps the conversation's head (the system "
        "prompt, shared by every Stage-B group) in its KV cache, so its prefill figure counts those tokens "
        "without recomputing them, as Stage-B runs it; transformers recomputes the whole prompt. "
        f"llama-cpp-python {report['versions']['llama_cpp_python']}, "
        f"transformers {report['versions']['transformers']}, torch {report['versions']['torch']}.",
        "",
        "| backend | threads | prefill tok/s | decode tok/s | Stage-B rollouts/min | each round, rollouts/min |",
        "|---|---|---|---|---|---|",
    ]
    for r in res:
        each = " / ".join(f"{x:.1f}" for x in r["rollouts_per_min_each"])
        lines.append(
            f"| {r['backend']} | {r['threads']} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | "
            f"{r['rollouts_per_min']:.1f} | {each} |"
        )
    best = {
        b: max((r for r in res if r["backend"] == b), key=lambda r: r["rollouts_per_min"])
        for b in ("llama_cpp", "transformers")
    }
    lc, tf = best["llama_cpp"], best["transformers"]
    lines += [
        "",
        f"Best of each: llama.cpp ({lc['threads']} thread(s)) / transformers ({tf['threads']} thread(s)) = "
        f"{lc['prefill_tok_s'] / tf['prefill_tok_s']:.1f}x prefill, {lc['decode_tok_s'] / tf['decode_tok_s']:.1f}x "
        f"decode, {lc['rollouts_per_min'] / tf['rollouts_per_min']:.1f}x Stage-B rollouts. "
        + threads_sentence(res)
        + " The faster backend is the CPU default (`QC_LLM_BACKEND` / `QC_TEACHER_BACKEND` = `llama_cpp`, "
        "`_LLAMA_THREADS` = 1 unless set); transformers stays for real checkpoints and GPUs.",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8, help="transformers prompts per generate call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--from-json", type=Path, help="re-render the section from a run's printed JSON report")
    args = parser.parse_args()
    if args.from_json:
        report = json.loads(args.from_json.read_text(encoding="utf-8"))
        cfg = report["config"]
        argv = [
            "--prompts",
            str(cfg["prompts"]),
            "--rounds",
            str(cfg["rounds"]),
            "--threads",
            *map(str, cfg["threads"]),
            "--max-tokens",
            str(cfg["max_tokens"]),
        ]
        command = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.llm_cpu_backends " + shlex.join(argv)
        write_section(args.doc, render(report, command))
        return
    import llama_cpp
    import torch
    import transformers

    prompts = stage_b_prompts(args.prompts)
    combos = [(b, t) for t in args.threads for b in ("llama_cpp", "transformers")]
    llms = {combo: build(*combo, args.batch_size) for combo in combos}
    for llm in llms.values():  # warm-up: first-call allocations stay out of the timings
        llm.chat(prompts[:1], DecodeParams(max_new_tokens=2))
    runs: dict = {combo: [] for combo in combos}
    for _ in range(args.rounds):
        for combo in combos:
            runs[combo].append(measure(llms[combo], prompts, args.max_tokens))
            print(combo, json.dumps(runs[combo][-1]), flush=True)
    results = []
    for (backend, threads), rs in runs.items():
        row = {"backend": backend, "threads": threads}
        for key in rs[0]:
            row[key] = statistics.median(r[key] for r in rs)
        row["rollouts_per_min_each"] = [r["rollouts_per_min"] for r in rs]
        results.append(row)
    report = {
        "config": {**vars(args), "doc": str(args.doc)},
        "gguf": smollm2_gguf_path().name,
        "results": results,
        "versions": {
            "llama_cpp_python": llama_cpp.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    command = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.llm_cpu_backends " + shlex.join(sys.argv[1:])
    write_section(args.doc, render(report, command.strip()))


if __name__ == "__main__":
    main()
