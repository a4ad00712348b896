"""Does Stage-B learn? G0-only vs learned guidance on a held-out split of generated summaries.

Generates Stage-A-style records for one mission whose labels follow hidden rules (several failure
patterns, label noise, near-miss wording that mentions a defect word but describes a pass), runs the
real loop on the embedded SmolLM2-135M-Instruct (transformers, CPU) and reports the eval accuracy of
the initial guidance (G0 + scaffold) and of the kept guidance, the format-ok rate, the LLM calls and
what the reflector produced. Writes the section "## Stage-B learning" of docs/benchmarks.md.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.stage_b_learning

The generator is fixed before the model runs; it is never tuned to make the model look good.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from qc_assets.missions import get_mission
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.loop import run_stage_b
from benchmarks.report import write_section
from resources.store import read_jsonl

SECTION = "## Stage-B learning"
COMMAND = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.stage_b_learning"
MISSION = "挡风板安装检查"

# Hidden rules: a group fails if any photo shows one of these (the scaffold covers only drawings).
FAIL_PATTERNS = {
    "empty_slot": ["第{k}槽位空置，未安装挡风板", "机柜下部有{k}个空槽位没有挡风板"],
    "loose": ["挡风板松动，边缘有明显缝隙", "一块挡风板向外翘起，未卡紧"],
    "screws": ["挡风板固定螺丝缺失{k}颗", "挡风板只用一颗螺丝固定，另一侧螺丝缺失"],
    "drawing": ["照片为设计图纸截图，非现场照片"],
}
# Near misses: defect words, negated or resolved; the group still passes.
NEAR_MISS = ["挡风板无松动，未见缝隙", "未发现螺丝缺失，挡风板固定牢固", "槽位无空置，挡风板齐全",
             "原空槽位已补装挡风板"]
FIXED = "问题已整改，挡风板安装到位"
FILLER = ["机柜正面，BBU安装在第二层，指示灯正常", "机柜侧面，线缆绑扎整齐", "空槽位均已安装挡风板，安装到位",
          "机柜整体照片，柜门完好", "挡风板齐全，螺丝紧固", "接地排清晰可见，标签完整"]


def generate(n_groups: int, noise: float, seed: int) -> tuple[list[dict], dict]:
    rng = random.Random(seed)
    records, stats = [], Counter()
    for g in range(n_groups):
        n_images = rng.randint(2, 3)
        texts = rng.sample(FILLER, n_images)
        fail = rng.random() < 0.5
        spot = rng.randrange(n_images)
        if fail:
            rule = rng.choice(sorted(FAIL_PATTERNS))
            texts[spot] = rng.choice(FAIL_PATTERNS[rule]).format(k=rng.randint(1, 3))
            stats[f"rule:{rule}"] += 1
        elif rng.random() < 0.5:
            texts[spot] = rng.choice(NEAR_MISS)
            stats["near_miss"] += 1
        label = "fail" if fail else "pass"
        if rng.random() < noise:
            label = "pass" if fail else "fail"
            stats["noisy_label"] += 1
        records.append(_record(f"g{g:03d}", label, texts))
        if g % 8 == 0 and fail:  # a resubmission: the same group with the defect fixed, passed
            fixed = [*texts[:spot], FIXED, *texts[spot + 1:]]
            records.append(_record(f"g{g:03d}", "pass", fixed, suffix="resub"))
            stats["resubmission"] += 1
    stats["records"] = len(records)
    stats["fail_labels"] = sum(r["label"] == "fail" for r in records)
    return records, dict(stats)


def _record(group_id: str, label: str, texts: list[str], suffix: str = "") -> dict:
    return {"record_id": f"{MISSION}/{label}/{group_id}{suffix}", "group_id": group_id, "mission": MISSION,
            "label": label, "images": [f"{group_id}/{i}.jpg" for i in range(1, len(texts) + 1)],
            "per_image": {f"image_{i}": t for i, t in enumerate(texts, start=1)}}


def run(args) -> dict:
    from resources.llm.transformers_backend import TransformersChatLLM
    from resources.llm.smollm2 import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    llm = TransformersChatLLM(gguf.parent, gguf_file=gguf.name, batch_size=8, num_threads=args.threads)
    records, data_stats = generate(args.groups, args.noise, args.seed)
    config = StageBLoopConfig(epochs=args.epochs, decode_grid=((0.0, 1.0),), samples=1, seed=args.seed,
                              eval_fraction=0.35, max_candidates_per_round=2, gate_chunk_size=4,
                              label_hint=args.label_hint)
    out = Path(args.out or tempfile.mkdtemp(prefix="stage_b_learning_"))
    started = time.perf_counter()
    result = run_stage_b(records, get_mission(MISSION), llm, config, out, log=print)
    wall = time.perf_counter() - started
    candidates = [r for r in read_jsonl(out / "rule_candidates.jsonl") if r["run_id"] == result.run_id]
    reflections = [r for r in read_jsonl(out / "reflections.jsonl") if r["run_id"] == result.run_id]
    v0 = [s for s in read_jsonl(out / "selections.jsonl")
          if s["run_id"] == result.run_id and s["epoch"] == 1 and s["guidance_version"] == 0]
    return {
        "model": llm.fingerprint, "seed": args.seed, "threads": args.threads, "data": data_stats,
        "config": config.to_dict(), "out_dir": str(out), "wall_s": round(wall, 1),
        "n_train": result.n_train_records, "n_eval": result.n_eval_records,
        "g0_eval_accuracy": result.baseline_eval_accuracy, "learned_eval_accuracy": result.kept_eval_accuracy,
        "g0_train_accuracy": result.version_stats[0]["train_accuracy"],
        "format_ok_rate": result.version_stats[0]["train_format_ok_rate"],
        "kept_version": result.kept_version, "epochs_run": len(result.epochs), "converged": result.converged,
        "accepted": result.accepted_edits, "rejected": result.rejected_edits, "counts": result.counts,
        "v0_predicted_fail_share": sum(s["predicted"] == "fail" for s in v0) / len(v0) if v0 else None,
        "reflections": len(reflections),
        "reflections_valid_json": len(reflections) - sum(c["decision"] == "invalid_json" for c in candidates),
        "decisions": dict(Counter(c["decision"] for c in candidates)),
        "filter_reasons": dict(Counter(c["reason"] for c in candidates if c["decision"] == "filtered")),
        "reflection_example": (reflections[0]["raw"] or "")[:200] if reflections else None,
        "kept_guidance": result.kept_guidance.to_markdown(),
    }


def render(r: dict) -> str:
    c = r["counts"]
    example = (r["reflection_example"] or "").replace("\n", " ").replace("`", "'")
    lines = [
        SECTION, "",
        f"Model `{r['model']}` (transformers, CPU, {r['threads'] or 'default'} torch threads), mission `{MISSION}`, "
        f"seed {r['seed']}. Generated data: {json.dumps(r['data'], ensure_ascii=False)}; "
        f"{r['n_train']} train / {r['n_eval']} eval records (split by group).",
        f"Loop: {r['config']['epochs']} max epochs, grid {r['config']['decode_grid']} x {r['config']['samples']} "
        f"sample(s), max_new_tokens={r['config']['max_new_tokens']}, constrained={r['config']['constrained']}, "
        f"{r['config']['rounds_per_epoch']} reflection "
        f"rounds/epoch, label_hint={r['config']['label_hint']}.", "",
        "| guidance | eval accuracy (held out) | train accuracy | format-ok rate |", "|---|---|---|---|",
        f"| G0 + scaffold only (v0) | {r['g0_eval_accuracy']:.3f} | {r['g0_train_accuracy']:.3f} "
        f"| {r['format_ok_rate']:.3f} |",
        f"| learned, kept v{r['kept_version']} | {r['learned_eval_accuracy']:.3f} | | |", "",
        f"LLM calls: {c['llm_calls']} ({c['rollout_calls']} rollouts, {c['reflection_calls']} reflections), "
        f"{c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens, {r['wall_s']} s wall. "
        f"Epochs run: {r['epochs_run']} (converged: {r['converged']}). Edits accepted: {r['accepted']}, "
        f"rejected or vetoed: {r['rejected']}. Candidate decisions: {json.dumps(r['decisions'])}; "
        f"filter reasons: {json.dumps(r['filter_reasons'])}.",
        f"Reflector answers that parsed as JSON: {r['reflections_valid_json']} of {r['reflections']}. "
        f"Share of groups the initial guidance predicted `fail`: {r['v0_predicted_fail_share']:.2f} "
        f"(true fail share {r['data']['fail_labels'] / r['data']['records']:.2f}).", "",
        f"First reflector answer (truncated): `{example}`", "",
        "How to read it: v0 is the initial guidance (mission focus G0 plus scaffold rules), the learned row is "
        "the version the loop kept by eval accuracy (the same version when no edit was accepted). Eval "
        "records belong to groups the reflector never saw. Rollouts are greedy and constrained to the "
        "verdict contract, so the format-ok rate measures the constraint, not the model; accuracy measures "
        "the model's choice between the two forced first lines.", "",
        "Command:", "", "```bash", COMMAND, "```", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--label-hint", action="store_true")
    parser.add_argument("--out", default=None, help="loop out dir (default: a fresh temp dir)")
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    write_section(args.doc, render(result))


if __name__ == "__main__":
    main()
