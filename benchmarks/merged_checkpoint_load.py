"""Merged student checkpoint: merge + save time, size on disk, load time and first answer latency.

What `fused_sft_checkpoint` does at the end of a run (peft `merge_and_unload`, `save_pretrained`) and
what serving does first (`from_pretrained` onto the device, one greedy answer). `--size 4b` builds
a random-weight model with Qwen3-VL-4B-Instruct's shapes (benchmarks.lora_step.SHAPES), `--size tiny`
uses the smoke model and the project's `save_merged` (processor and chat template copied beside the
weights); both load with the same `from_pretrained(dtype).to(device)` call as the Stage-A backend.
Writes the section "## Merged checkpoint load" of docs/benchmarks.md with `--write-doc`.

    .venv/bin/python -m benchmarks.merged_checkpoint_load --size tiny            # CPU smoke run
    python -m benchmarks.merged_checkpoint_load --size 4b --device cuda --dtype bfloat16 --write-doc   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.lora_step import build_model
from resources.training.spec import LoraTrainingSpec
from resources.training.trl_common import lora_config

SECTION = "## Merged checkpoint load"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _tiny_base(folder: Path, device: str, dtype: str):
    from resources.training.sft_vl import load_student
    from resources.vlm.tiny_qwen3vl import build_tiny_qwen3vl

    base = build_tiny_qwen3vl(folder / "base")
    model, _ = load_student(str(base), device, dtype)
    return model, str(base)


def run(args) -> dict:
    from peft import get_peft_model

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(dir=args.tmp_dir or None) as tmp:
        tmp = Path(tmp)
        if args.size == "tiny":
            model, base_path = _tiny_base(tmp, args.device, args.dtype)
        else:
            model, base_path = build_model(args.size, args.device, dtype), ""
        spec = LoraTrainingSpec(last_k=args.last_k, r=args.rank, alpha=2 * args.rank)
        peft_config, targets = lora_config(model, spec)
        peft_model = get_peft_model(model, peft_config)
        with torch.no_grad():  # a trained adapter has non-zero B; make the merge do real work
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        out = tmp / "merged"
        _sync(args.device)
        start = time.perf_counter()
        if base_path:
            from resources.training.sft_vl import save_merged

            save_merged(peft_model, base_path, out)
        else:
            peft_model.merge_and_unload().save_pretrained(str(out))
        merge_save_s = time.perf_counter() - start
        disk_gib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**30
        del peft_model, model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

        start = time.perf_counter()
        from transformers import Qwen3VLForConditionalGeneration

        loaded = Qwen3VLForConditionalGeneration.from_pretrained(str(out), dtype=dtype).to(args.device).eval()
        _sync(args.device)
        load_s = time.perf_counter() - start
        ids = torch.randint(16, loaded.config.text_config.vocab_size, (1, 64), device=args.device)
        start = time.perf_counter()
        with torch.inference_mode():
            loaded.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
            )
        _sync(args.device)
        answer_s = time.perf_counter() - start
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    return {
        "size": args.size,
        "device": device_name,
        "dtype": args.dtype,
        "lora_modules": len(targets),
        "merge_save_s": merge_save_s,
        "disk_gib": disk_gib,
        "load_s": load_s,
        "new_tokens": args.new_tokens,
        "first_answer_s": answer_s,
    }


def section(results: list[dict], command: str) -> str:
    lines = [
        SECTION,
        "",
        "peft merge_and_unload + save_pretrained of a LoRA student (last K blocks), then from_pretrained onto "
        "the device and one greedy answer of N tokens from a 64-token text prompt. Random weights.",
        "",
        "| size | device | dtype | LoRA modules | merge+save s | on disk GiB | load s | answer s (N tokens) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['device']} | {r['dtype']} | {r['lora_modules']} | {r['merge_save_s']:.2f} | "
            f"{r['disk_gib']:.3f} | {r['load_s']:.2f} | {r['first_answer_s']:.3f} ({r['new_tokens']}) |"
        )
    lines += ["", "Command:", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "4b"), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--last-k", type=int, default=None, help="default: 4 at 4b, 1 at tiny (2 blocks)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp-dir", default="", help="where the merged checkpoint is written (default: system temp)")
    p.add_argument("--write-doc", action="store_true", help="write the section of docs/benchmarks.md")
    args = p.parse_args(argv)
    args.last_k = args.last_k or (4 if args.size == "4b" else 1)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.write_doc:
        from benchmarks.report import DOC, command_line, write_section

        cmd = command_line("benchmarks.merged_checkpoint_load", args, skip=("write_doc", "tmp_dir"))
        write_section(DOC, section([result], cmd))
    return result


if __name__ == "__main__":
    main()
