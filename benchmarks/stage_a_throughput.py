"""Stage-A throughput: the same VLM at batch 1 vs batch N, in one run, with a fixed number of new tokens.

    python -m benchmarks.stage_a_throughput                 # CPU: the tiny smoke model
    python -m benchmarks.stage_a_throughput --size 4b --device cuda --dtype bfloat16 --batch 16   # GPU

`--size 4b` builds a Qwen3-VL-4B-shaped model from its config with random weights (no download), on
the target device, and reuses the tiny model's tokenizer and processor. Every image goes through the
image budget `--max-pixels` (default: the BBU missions' budget), as Stage-A sends it. Writes the
section "## Stage-A throughput (<size>, <device>)" of docs/benchmarks.md (relative to the current
directory), so the CPU and GPU rows live side by side.
"""

import argparse
import gc
import os
import resource
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.report import DOC, write_section
from qc_assets.missions import DEFAULT_MAX_PIXELS, get_mission
from qc_assets.stage_a import prompts
from resources.vlm import VisionDecode, VisionPrompt
from resources.vlm.tiny_qwen3vl import build_tiny_qwen3vl
from resources.vlm.transformers_backend import TransformersVLM, _load

SIZES = [(320, 240), (240, 320), (400, 300), (256, 256)]
# Qwen3-VL-4B-Instruct's shapes (config.json of the released checkpoint), random weights.
SHAPE_4B = {
    "text": {
        "vocab_size": 151936,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262144,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
    },
    "vision": {
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 2560,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
    },
}


def build_4b(out_dir: Path, tiny_dir: Path, device: str, dtype: str) -> Path:
    """A Qwen3-VL-4B-shaped model (random weights) with the tiny model's tokenizer/processor.

    The real vocabulary size keeps the LM head's cost; ids the tiny tokenizer lacks decode to nothing,
    which a throughput run does not mind. Built on `device` so a GPU run skips a slow CPU init.
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from resources.vlm.qwen3vl_processor import ImageOnlyQwen3VLProcessor

    if (out_dir / "config.json").exists():
        return out_dir
    processor = ImageOnlyQwen3VLProcessor.from_pretrained(tiny_dir)
    tiny = Qwen3VLConfig.from_pretrained(tiny_dir)
    config = Qwen3VLConfig(
        text_config={**SHAPE_4B["text"], "pad_token_id": tiny.text_config.pad_token_id},
        vision_config=SHAPE_4B["vision"],
        image_token_id=tiny.image_token_id,
        video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id,
        vision_end_token_id=tiny.vision_end_token_id,
        tie_word_embeddings=True,
    )
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(torch.float32)
    model.generation_config.pad_token_id = tiny.text_config.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    del model
    gc.collect()  # free the built copy before the measured one loads, so peak memory is the loaded model's
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out_dir


def make_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.new("RGB", SIZES[i % len(SIZES)], (30 * (i % 8), 120, 200 - 20 * (i % 8))).save(path)
        paths.append(path)
    return paths


def measure(vlm: TransformersVLM, prompts_: list[VisionPrompt], batch: int, decode: VisionDecode, device: str) -> float:
    started = time.perf_counter()
    for i in range(0, len(prompts_), batch):
        vlm.generate(prompts_[i : i + batch], decode)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(prompts_) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=["tiny", "4b"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS["bbu"])
    parser.add_argument("--work", type=Path, default=Path("data/bench"))
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other jobs on a shared machine move the absolute numbers

    model_dir = build_tiny_qwen3vl(args.work / "tiny-qwen3vl")
    build_s = 0.0
    if args.size == "4b":
        started = time.perf_counter()
        model_dir = build_4b(args.work / f"qwen3vl-4b-random-{args.dtype}", model_dir, args.device, args.dtype)
        build_s = time.perf_counter() - started
    started = time.perf_counter()
    vlm = TransformersVLM(str(model_dir), args.device, args.dtype)
    model, _ = _load(str(model_dir), args.device, args.dtype)
    load_s = time.perf_counter() - started
    # a fixed number of new tokens, so both settings do the same work: EOS is never allowed early
    model.generation_config.min_new_tokens = args.new_tokens
    mission = get_mission("BBU接地线检查")
    prompt_list = [
        VisionPrompt(str(p), prompts.system_prompt(), prompts.user_prompt(mission), args.max_pixels)
        for p in make_images(args.work / "images", args.images)
    ]
    decode = VisionDecode(max_new_tokens=args.new_tokens, repetition_penalty=1.0)
    vlm.generate(prompt_list[:2], decode)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    single = measure(vlm, prompt_list, 1, decode, args.device)
    batched = measure(vlm, prompt_list, args.batch, decode, args.device)
    if args.device.startswith("cuda"):
        memory = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB GPU peak ({torch.cuda.get_device_name()})"
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB process peak RSS"
    params = sum(p.numel() for p in model.parameters())
    command = "python -m benchmarks.stage_a_throughput " + " ".join(sys.argv[1:])
    section = "\n".join(
        [
            f"## Stage-A throughput ({args.size}, {args.device})",
            "",
            f"Model: {args.size} Qwen3-VL ({params / 1e6:.1f}M params, random weights), {args.device}, {args.dtype}; "
            f"{args.images} images of 4 mixed sizes (up to 400x300) under max_pixels={args.max_pixels}, exactly "
            f"{args.new_tokens} new tokens each, greedy, left padding, transformers `generate`.",
            "",
            "| batch | images/s |",
            "|---|---|",
            f"| 1 | {single:.2f} |",
            f"| {args.batch} | {batched:.2f} |",
            "",
            f"Batched / unbatched: **{batched / single:.2f}x** (one run). Memory: {memory}. "
            f"Model build {build_s:.0f} s, load {load_s:.0f} s. Machine: {os.cpu_count()} CPUs, load average "
            f"{load_before:.1f} before the run (absolute numbers compare only within one run).",
            "",
            "Command:",
            "",
            "```bash",
            f"HF_HUB_OFFLINE=1 .venv/bin/{command.strip()}",
            "```",
            "",
        ]
    )
    write_section(args.doc, section)
    print(section)


if __name__ == "__main__":
    main()
