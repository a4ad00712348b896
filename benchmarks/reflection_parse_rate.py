"""Reflection parse rate with and without the rule-operation JSON schema (`reflection_json_schema`).

Builds N Stage-B reflection prompts from the hidden-rule data of `benchmarks/stage_b_learning.py`
(wrong and right cases under the initial guidance), asks a real model over the OpenAI-compatible
client with the loop's reflection settings (temperature 0.7, top_p 0.95, 160 new tokens, seed i),
once unconstrained and once under `response_format` = the schema, and counts answers that parse as
rule operations (`parse_operations`), that hold at least one valid operation, and whose operations
survive the loop's filters. By default the model is the embedded SmolLM2-135M behind
llama_cpp.server on 127.0.0.1; --base-url/--model point it at any other server. Writes the section
"## Stage-B reflection parse rate" of docs/benchmarks.md.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.reflection_parse_rate
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from benchmarks.report import write_section
from qc_assets.missions import get_mission
from qc_assets.stage_b.filters import filter_ops
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_reflection_messages, ordered_summaries
from qc_assets.stage_b.reflection import REFLECTION_JSON_SCHEMA, parse_operations
from resources.doubles.rule_following_data import MISSION, generate
from resources.llm import DecodeParams
from resources.llm.openai_backend import OpenAIChatLLM

SECTION = "## Stage-B reflection parse rate"
COMMAND = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.reflection_parse_rate"


def prompts(n: int, seed: int) -> list[tuple[list[dict], list[str]]]:
    """n (reflection prompt, its case summaries): three fail groups the initial guidance passed (wrong) and
    one pass group it got right."""
    mission = get_mission(MISSION)
    guidance = Guidance.initial(mission)
    records, _ = generate(8 * n, 0.0, seed)
    fails = [r for r in records if r["label"] == "fail"]
    passes = [r for r in records if r["label"] == "pass"]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chosen = [(r, False) for r in rng.sample(fails, 3)] + [(rng.choice(passes), True)]
        cases = [
            {
                "record_id": r["record_id"],
                "group_id": r["group_id"],
                "label": r["label"],
                "predicted": "pass",
                "correct": ok,
                "agreement": 1.0,
                "summaries": ordered_summaries(r),
                "reason": "未见问题",
            }
            for r, ok in chosen
        ]
        out.append(
            (build_reflection_messages(mission, guidance, cases, []), [t for c in cases for _, t in c["summaries"]])
        )
    return out


def measure(llm: OpenAIChatLLM, convs: list[tuple[list[dict], list[str]]], schema: bool, max_new_tokens: int) -> dict:
    guidance = Guidance.initial(get_mission(MISSION))
    counts = {
        "answers": 0,
        "failed_requests": 0,
        "valid_json": 0,
        "with_valid_op": 0,
        "with_unfiltered_op": 0,
        "hit_token_limit": 0,
        "completion_tokens": 0,
    }
    example = None
    started = time.perf_counter()
    for i, (conv, summaries) in enumerate(convs):
        params = DecodeParams(
            temperature=0.7,
            top_p=0.95,
            max_new_tokens=max_new_tokens,
            seed=i,
            json_schema=REFLECTION_JSON_SCHEMA if schema else None,
        )
        ((c,),) = llm.chat([conv], params)
        counts["answers"] += 1
        if not c.ok:
            counts["failed_requests"] += 1
            continue
        counts["completion_tokens"] += c.completion_tokens
        counts["hit_token_limit"] += c.finish_reason == "length"
        parsed = parse_operations(c.text)
        example = example or c.text
        if parsed.error is None:
            counts["valid_json"] += 1
            counts["with_valid_op"] += bool(parsed.ops)
            kept = [op for op, why in filter_ops(parsed.ops, guidance, summaries, set()) if why is None]
            counts["with_unfiltered_op"] += bool(kept)
    counts["wall_s"] = round(time.perf_counter() - started, 1)
    counts["example"] = (example or "")[:160]
    return counts


def render(report: dict) -> str:
    lines = [
        SECTION,
        "",
        f"Model `{report['model']}` ({report['server']}), {report['n']} reflection prompts built from the "
        f"hidden-rule data (seed {report['seed']}), temperature 0.7, top_p 0.95, {report['max_new_tokens']} new "
        "tokens, seed i for prompt i; the same prompts and seeds in both rows.",
        "",
        "| reflection decoding | valid JSON % | >= 1 valid op % | >= 1 op past the filters % | hit token limit "
        "| mean completion tokens | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in (("unconstrained", report["free"]), ("JSON schema (`reflection_json_schema`)", report["schema"])):
        n = r["answers"] or 1
        lines.append(
            f"| {name} | {100 * r['valid_json'] / n:.0f} | {100 * r['with_valid_op'] / n:.0f} | "
            f"{100 * r['with_unfiltered_op'] / n:.0f} | {r['hit_token_limit']} | "
            f"{r['completion_tokens'] / n:.0f} | {r['wall_s']} |"
        )
    for name in ("free", "schema"):
        example = report[name]["example"].replace("\n", " ").replace("`", "'").replace("|", "/")
        lines.append(f"\nFirst answer, {name}: `{example}`")
    lines += [
        "",
        "How to read it: the schema fixes the shape of the answer (the loop then parses it), not its "
        "content: the filters and the gate still judge the rules. The transformers backend refuses the flag "
        "(ValueError) rather than ignore it.",
        "",
        "Command:",
        "",
        "```bash",
        COMMAND,
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--base-url", default=None, help="default: llama_cpp.server on the embedded SmolLM2")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--structured-output", default="llama_cpp", help="llama_cpp | vllm | sglang | none")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    from benchmarks.fastdistill_teacher import start_server

    proc, url = (None, args.base_url) if args.base_url else start_server(args.threads)
    try:
        llm = OpenAIChatLLM(url, args.model, structured_output=args.structured_output, timeout_s=300.0)
        convs = prompts(args.n, args.seed)
        report = {
            "model": llm.fingerprint,
            "server": "llama_cpp.server, 127.0.0.1" if proc else url,
            "n": args.n,
            "seed": args.seed,
            "max_new_tokens": args.max_new_tokens,
            "free": measure(llm, convs, False, args.max_new_tokens),
            "schema": measure(llm, convs, True, args.max_new_tokens),
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    write_section(args.doc, render(report))


if __name__ == "__main__":
    main()
