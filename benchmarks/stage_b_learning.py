"""Does Stage-B learn? Baseline vs kept guidance on the test side of a generated hidden-rule dataset.

Generates Stage-A-style records for one mission whose labels follow hidden rules (several failure
patterns, label noise, near-miss wording that mentions a defect word but describes a pass), splits
them by group into train / selection / test, and reports for each setup the test accuracy of the
initial guidance and of the kept guidance (paired bootstrap interval), accepted and rejected edits,
and LLM calls per accepted edit:

(a) a real model over the OpenAI-compatible client: by default the embedded SmolLM2-135M served by
    llama_cpp.server on 127.0.0.1, or any server given by --base-url/--model;
(b) a simulated student and reflector (`ScriptedRuleFollowingServer`, a test double) that shows what
    the gate does when the model can follow rules;
(c) a classical baseline: char n-gram logistic regression on the same summaries.

Writes the section "## Stage-B learning" of docs/benchmarks.md.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.stage_b_learning

The generator is fixed before the model runs; it is never tuned to make the model look good.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.report import write_section
from qc_assets.missions import get_mission
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.loop import run_stage_b
from qc_assets.stage_b.split import split_three_way
from resources.doubles.llm_servers import ScriptedRuleFollowingServer
from resources.doubles.rule_following_data import MISSION, generate
from resources.llm.openai_backend import OpenAIChatLLM
from resources.store import read_jsonl

SECTION = "## Stage-B learning"
COMMAND = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.stage_b_learning"

SIMULATED_MODEL = "scripted-rule-follower"  # resources/doubles/llm_servers.py: a test double, named as such
# What the simulated reflector proposes, in this order, two edits per reflection call. The true rules
# quote keywords precise enough to miss the near misses; the harmful ones fail good groups.
TRUE_RULES = [
    "挡风板出现「板松动」或「向外翘起」时判不通过",
    "挡风板「固定螺丝缺失」或「另一侧螺丝缺失」时判不通过",
    "槽位「空置，未安装」或「空槽位没有挡风板」时判不通过",
    "照片为「设计图纸」截图时判不通过",
]
HARMFUL_RULES = ["照片里出现「机柜」就一律判不通过", "摘要写到「未发现」也判不通过", "只要提到「松动」二字就判不通过"]
USELESS_RULES = ["螺栓发现「生锈」痕迹时判不通过", "设备有「漏水」现象时判不通过"]
PROPOSALS = [
    TRUE_RULES[0],
    HARMFUL_RULES[0],
    USELESS_RULES[0],
    TRUE_RULES[1],
    HARMFUL_RULES[1],
    TRUE_RULES[2],
    USELESS_RULES[1],
    HARMFUL_RULES[2],
    TRUE_RULES[3],
]


def simulated_replies() -> list[dict]:
    ops = [{"op": "add", "text": t} for t in PROPOSALS]
    return [{"operations": ops[i : i + 2]} for i in range(0, len(ops), 2)]


def loop_config(args, setup: str) -> StageBLoopConfig:
    common = dict(
        decode_grid=((0.0, 1.0),),
        samples=1,
        seed=args.seed,
        selection_fraction=0.25,
        test_fraction=0.25,
        max_candidates_per_round=2,
        bootstrap_samples=1000,
    )
    if setup == "simulated":
        return StageBLoopConfig(epochs=8, rounds_per_epoch=2, constrained=False, **common)
    return StageBLoopConfig(
        epochs=args.epochs,
        rounds_per_epoch=2,
        constrained=args.constrained,
        gate_chunk_size=8,
        reflection_json_schema=args.json_schema,
        **common,
    )


def run_loop(name: str, what: str, llm, records: list[dict], config: StageBLoopConfig) -> dict:
    slug = name.split(")")[0].strip("(")  # "a", "b"
    out = Path(tempfile.mkdtemp(prefix=f"stage_b_learning_{slug}_"))
    started = time.perf_counter()
    result = run_stage_b(records, get_mission(MISSION), llm, config, out, log=lambda _: None)
    wall = time.perf_counter() - started
    candidates = [r for r in read_jsonl(out / "rule_candidates.jsonl") if r["run_id"] == result.run_id]
    gated = [c for c in candidates if c["decision"] in ("accepted", "rejected", "vetoed")]
    harmful = [c for c in gated if c["op"]["text"] in HARMFUL_RULES]
    refused_true = [
        f"{c['op']['text']} ({'; '.join(c['gate']['reasons'])})"
        for c in gated
        if c["op"]["text"] in TRUE_RULES and c["decision"] != "accepted"
    ]
    return {
        "setup": name,
        "what": what,
        "model": llm.fingerprint,
        "test": result.test,
        "accepted": result.accepted_edits,
        "rejected": result.rejected_edits,
        "harmful_gated": len(harmful),
        "true_rules_refused": refused_true,
        "harmful_accepted": sum(c["decision"] == "accepted" for c in harmful),
        "llm_calls": result.llm_calls,
        "failed_calls": result.counts["failed_calls"],
        "calls_per_accepted": result.llm_calls / result.accepted_edits if result.accepted_edits else None,
        "stop_reason": result.stop_reason,
        "kept_version": result.kept_version,
        "kept_rules": [it.text for it in result.kept_guidance.learned],
        "decisions": dict(Counter(c["decision"] for c in candidates)),
        "wall_s": round(wall, 1),
        "split": result.split_sizes,
    }


def classical(records: list[dict], seed: int) -> dict:
    """(c) char 1-3-gram counts -> L2 logistic regression (numpy, full-batch gradient descent), fitted on
    train + selection, scored on the same test records the loops report on."""
    import numpy as np

    split = split_three_way(records, 0.25, 0.25, seed)
    fit, test = split.train + split.selection, split.test

    def text(r):
        return " | ".join(t for _, t in sorted(r["per_image"].items()))

    vocab: dict[str, int] = {}
    for r in fit:
        s = text(r)
        for n in (1, 2, 3):
            for i in range(len(s) - n + 1):
                vocab.setdefault(s[i : i + n], len(vocab))

    def features(rs):
        x = np.zeros((len(rs), len(vocab)))
        for row, r in enumerate(rs):
            s = text(r)
            for n in (1, 2, 3):
                for i in range(len(s) - n + 1):
                    j = vocab.get(s[i : i + n])
                    if j is not None:
                        x[row, j] = 1.0
        return x

    x, y = features(fit), np.array([r["label"] == "fail" for r in fit], dtype=float)
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(500):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= 0.5 * (x.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.5 * float((p - y).mean())
    xt = features(test)
    pred = (1 / (1 + np.exp(-(xt @ w + b)))) > 0.5
    acc = float(np.mean([p == (r["label"] == "fail") for p, r in zip(pred, test, strict=True)]))
    return {
        "setup": "(c) classical baseline",
        "what": "char 1-3-gram logistic regression (numpy), no LLM",
        "test_accuracy": acc,
        "test_groups": split.group_count("test"),
        "features": len(vocab),
        "fit_records": len(fit),
    }


def start_llama_server(threads: int):
    from benchmarks.fastdistill_teacher import start_server

    return start_server(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=120)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=1, help="max epochs of the real-model setup")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setups", default="a,b,c", help="which of a (real model), b (simulated), c (classical)")
    parser.add_argument(
        "--base-url",
        default=None,
        help="an OpenAI-compatible server for setup (a); default: llama_cpp.server on SmolLM2",
    )
    parser.add_argument("--model", default="smollm2", help="model id the server serves (setup a)")
    parser.add_argument("--structured-output", default="llama_cpp", help="how verdict regexes reach the server")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads for the embedded server")
    parser.add_argument("--no-constrained", dest="constrained", action="store_false")
    parser.add_argument("--json-schema", action="store_true", help="reflection under the rule-operation schema")
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    setups = set(args.setups.split(","))
    records, data_stats = generate(args.groups, args.noise, args.seed)
    rows = []
    if "a" in setups:
        proc, url = (None, args.base_url) if args.base_url else start_llama_server(args.threads)
        try:
            llm = OpenAIChatLLM(
                url, args.model, structured_output=args.structured_output, timeout_s=300.0, max_in_flight=2
            )
            name = "(a) embedded SmolLM2" if proc else f"(a) {args.model}"
            rows.append(
                run_loop(
                    name,
                    f"real model at {'llama_cpp.server' if proc else url}",
                    llm,
                    records,
                    loop_config(args, "real"),
                )
            )
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    if "b" in setups:
        with ScriptedRuleFollowingServer(simulated_replies()) as server:
            rows.append(
                run_loop(
                    "(b) simulated student and reflector",
                    "simulated (test double): keyword-rule-following student, scripted reflector",
                    server.client(),
                    records,
                    loop_config(args, "simulated"),
                )
            )
    if "c" in setups:
        rows.append(classical(records, args.seed))
    report = {"data": data_stats, "seed": args.seed, "groups": args.groups, "noise": args.noise, "rows": rows}
    print(json.dumps(report, ensure_ascii=False, indent=2))
    write_section(args.doc, render(report, args))


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def render(report: dict, args) -> str:
    lines = [
        SECTION,
        "",
        f"Generated hidden-rule data (`generate({report['groups']}, noise={report['noise']}, "
        f"seed={report['seed']})`): {json.dumps(report['data'], ensure_ascii=False)}. Split by group, seeded "
        "and stratified: train (reflection) / selection (gate, veto, kept version) / test (read once).",
        "",
        "| setup | what it is | baseline test acc % | kept test acc % | kept - baseline [95% CI] | accepted | "
        "rejected | LLM calls per accepted edit | stop | harmful edits accepted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        if "test" not in r:
            lines.append(f"| {r['setup']} | {r['what']} | — | {_pct(r['test_accuracy'])} | — | — | — | — | — | — |")
            continue
        t = r["test"]
        if t["conclusive"]:
            base, kept = _pct(t["baseline_accuracy"]), _pct(t["kept_accuracy"])
            diff = f"{_pct(t['difference'])} [{_pct(t['ci_low'])}, {_pct(t['ci_high'])}]"
        else:
            base = kept = diff = f"inconclusive ({t['n_groups']} test groups)"
        calls = "—" if r["calls_per_accepted"] is None else f"{r['calls_per_accepted']:.0f}"
        lines.append(
            f"| {r['setup']} | {r['what']} | {base} | {kept} | {diff} | {r['accepted']} | {r['rejected']} "
            f"| {calls} | {r['stop_reason']} | {r['harmful_accepted']} of {r['harmful_gated']} gated |"
        )
    lines.append("")
    for r in report["rows"]:
        if "test" in r:
            lines.append(
                f"- {r['setup']}: model `{r['model']}`, {r['llm_calls']} LLM calls ({r['failed_calls']} "
                f"failed), {r['wall_s']} s wall, decisions {json.dumps(r['decisions'])}, kept rules "
                f"{json.dumps(r['kept_rules'], ensure_ascii=False)}."
                + (
                    f" True rules the gate refused: {'; '.join(r['true_rules_refused'])}."
                    if r["true_rules_refused"]
                    else ""
                )
            )
    lines += [
        "",
        "How to read it: (b) is a simulation of the control loop, not a model: its student follows "
        "whatever 「keyword」 rules the guidance holds and its reflector replays the true rules mixed with "
        "harmful and useless ones, so the row measures the gate and the memory of refused edits (a true rule "
        "that fixes too few selection groups is refused too: the price of a conservative gate). (a) is the "
        "real model the project ships (too small to learn rules). (c) is the bar learned guidance must beat "
        "with a real model. Run (a) against any OpenAI-compatible server (vLLM serving Qwen3, say) with "
        "`--base-url http://host:8000/v1 --model Qwen/Qwen3-32B --structured-output vllm --setups a`.",
        "",
        "Command:",
        "",
        "```bash",
        COMMAND,
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
