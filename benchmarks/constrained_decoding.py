"""Format-ok rate of two-line verdicts with and without constrained decoding, on the embedded model.

Runs the embedded SmolLM2-135M-Instruct (transformers, CPU) over 24 short Chinese QC prompts, greedy
and sampled, each with `constraint=None` and `constraint=VERDICT_CONSTRAINT`, parses every answer strictly and
writes the section "## Constrained decoding (format-ok rate)" of docs/benchmarks.md.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.constrained_decoding
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from benchmarks.report import write_section
from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT, VERDICT_REGEX, parse_verdict
from resources.llm import DecodeParams
from resources.llm.smollm2 import smollm2_gguf_path
from resources.llm.transformers_backend import TransformersChatLLM

SECTION = "## Constrained decoding (format-ok rate)"
COMMAND = "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.constrained_decoding"
SYSTEM = (
    "你是通信站点安装质量审核员。根据照片摘要判断是否通过审核。\n"
    "输出格式（严格两行，不要输出其他内容）：\n第一行只写「通过」或「不通过」；\n第二行写「理由: 」加一句话理由。"
)
SUMMARIES = [
    "BBU安装牢固，螺丝齐全，标签清晰。", "挡风板缺失，机柜内部可见灰尘。", "接地线已连接，线径符合要求。",
    "RRU抱杆安装，抱箍松动。", "光纤弯曲半径过小，有折痕。", "电源线与信号线分开走线，绑扎整齐。",
    "BBU倒装，风扇朝向错误。", "馈线接头已做防水处理。", "机柜门无法关闭，门锁损坏。",
    "标签缺失，无法识别端口。", "RRU安装高度符合设计，固定可靠。", "接地排锈蚀严重。",
    "线缆未绑扎，散落在地面。", "挡风板安装到位，无缝隙。", "电源端子有烧蚀痕迹。",
    "BBU槽位正确，板卡插紧。", "防雷器指示窗为红色。", "走线架安装平直，无变形。",
    "光模块未插到位。", "机房温度正常，设备运行指示灯为绿色。", "RRU防水胶泥脱落。",
    "接地线颜色为黄绿色，连接牢固。", "照片模糊，看不清设备型号。", "螺丝缺少两颗，面板晃动。",
]  # fmt: skip


def format_checker():
    return "qc_assets.stage_b.verdict.parse_verdict", lambda text: parse_verdict(text).format_ok


def run(seed: int, max_new_tokens: int, threads: int) -> dict:
    gguf = smollm2_gguf_path()
    llm = TransformersChatLLM(gguf.parent, gguf_file=gguf.name, batch_size=8, num_threads=threads)
    parser_name, is_ok = format_checker()
    conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": s}] for s in SUMMARIES]
    rows = []
    for temperature in (0.0, 0.7):
        for constraint in (None, VERDICT_CONSTRAINT):
            params = DecodeParams(
                temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, constraint=constraint
            )
            started = time.perf_counter()
            out = [row[0] for row in llm.chat(conversations, params)]
            wall = time.perf_counter() - started
            oks = [is_ok(c.text) for c in out]
            rows.append({
                "temperature": temperature,
                "constrained": constraint is not None,
                "n": len(out),
                "regex_match_rate": sum(re.fullmatch(VERDICT_REGEX, c.text or "") is not None for c in out) / len(out),
                "format_ok_rate": sum(oks) / len(out),
                "pass_share": sum((c.text or "").startswith("通过") for c in out) / len(out),
                "mean_completion_tokens": sum(c.completion_tokens for c in out) / len(out),
                "wall_s": round(wall, 1),
                "example": out[0].text,
            })  # fmt: skip
    return {
        "model": llm.fingerprint,
        "parser": parser_name,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "rows": rows,
    }


def render(result: dict) -> str:
    lines = [
        SECTION,
        "",
        f"Model `{result['model']}` (transformers, CPU), {len(SUMMARIES)} Chinese QC prompts, "
        f"max_new_tokens={result['max_new_tokens']}, seed={result['seed']}, parser `{result['parser']}`.",
        "Constrained = `DecodeParams(constraint=VERDICT_CONSTRAINT)`: the backend forces "
        "`通过|不通过` + `\\n理由: ` "
        "(chosen by model likelihood), a CJK first reason token, and stops at the first newline.",
        "",
        "| temperature | constrained | n | matches VERDICT_REGEX | format-ok rate (parser) | pass share "
        "| mean completion tokens | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['temperature']} | {'yes' if r['constrained'] else 'no'} | {r['n']} | {r['regex_match_rate']:.1%} "
            f"| {r['format_ok_rate']:.1%} "
            f"| {r['pass_share']:.1%} | {r['mean_completion_tokens']:.1f} | {r['wall_s']} |"
        )
    lines += [
        "",
        "The parser is stricter than the regex (it also rejects, e.g., a reason that only restates the verdict); "
        "wall times are on a shared 2-core CPU and only comparable within one run.",
    ]
    lines += ["", "Command:", "", "```bash", COMMAND, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    result = run(args.seed, args.max_new_tokens, args.threads)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    write_section(args.doc, render(result))


if __name__ == "__main__":
    main()
