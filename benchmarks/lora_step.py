"""LoRA SFT step speed and memory of the Qwen3-VL student, random weights, with the project's LoRA policy.

Builds Qwen3-VL from a config (no download): `--size 4b` uses Qwen3-VL-4B-Instruct's shapes, `--size
tiny` the smoke model's. Adapters from the same peft `LoraConfig` the TRL trainers get
(resources.training.trl_common.lora_config: last K language blocks, vision tower and merger frozen);
each row carries a synthetic image (random pixel patches, an `--image-grid` patch grid) so the
frozen vision forward is timed too. The step is SFTTrainer's compute step (forward, backward,
gradient clipping, AdamW) without its data pipeline, so the number is the model's, not the
collator's. Reports optimizer steps per second, target tokens per second and peak memory (CUDA
allocator peak on GPU, max RSS on CPU), and
writes the section "## LoRA SFT step" of docs/benchmarks.md with `--write-doc`.

    .venv/bin/python -m benchmarks.lora_step --size tiny            # CPU smoke run
    python -m benchmarks.lora_step --size 4b --device cuda --dtype bfloat16 --write-doc   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from resources.training.spec import LoraTrainingSpec
from resources.training.trl_common import check_frozen, lora_config, trainable_parameters

SECTION = "## LoRA SFT step"
# Qwen3-VL-4B-Instruct shapes (config.json of the released checkpoint).
SHAPES = {
    "4b": dict(
        text=dict(
            vocab_size=151936,
            hidden_size=2560,
            intermediate_size=9728,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=262144,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        ),
        vision=dict(
            depth=24,
            hidden_size=1024,
            intermediate_size=4096,
            num_heads=16,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=2560,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17],
        ),
        tie=True,
    ),
    "tiny": dict(
        text=dict(
            vocab_size=1200,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=4096,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        ),
        vision=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=64,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0],
        ),
        tie=False,
    ),
}
# Special token ids placed at the top of the vocabulary (the random model does not care which).
IMAGE, VSTART, VEND, VIDEO = 4, 5, 6, 7


def build_model(size: str, device: str, dtype: torch.dtype):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    shape = SHAPES[size]
    config = Qwen3VLConfig(
        text_config=shape["text"],
        vision_config=shape["vision"],
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VSTART,
        vision_end_token_id=VEND,
        tie_word_embeddings=shape["tie"],
    )
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(torch.float32)
    return model


def synthetic_batch(size: str, batch: int, seq_len: int, grid: int, device: str, dtype: torch.dtype, seed: int):
    """Rows of [text, vision_start, image tokens, vision_end, text]; loss on the second half."""
    shape = SHAPES[size]
    g = torch.Generator().manual_seed(seed)
    vision = shape["vision"]
    n_image = (grid // vision["spatial_merge_size"]) ** 2
    if seq_len < n_image + 16:
        raise ValueError(f"seq_len {seq_len} is too short for {n_image} image tokens")
    ids = torch.randint(16, shape["text"]["vocab_size"], (batch, seq_len), generator=g)
    ids[:, 4] = VSTART
    ids[:, 5 : 5 + n_image] = IMAGE
    ids[:, 5 + n_image] = VEND
    mm = (ids == IMAGE).long()
    labels = ids.clone()
    labels[:, : seq_len // 2] = -100
    patch_dim = 3 * vision["temporal_patch_size"] * vision["patch_size"] ** 2
    pixels = torch.randn(batch * grid * grid, patch_dim, generator=g)
    thw = torch.tensor([[1, grid, grid]] * batch)
    return {
        "input_ids": ids.to(device),
        "labels": labels.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "mm_token_type_ids": mm.to(device),
        "pixel_values": pixels.to(device, dtype),
        "image_grid_thw": thw.to(device),
    }


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(args) -> dict:
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = build_model(args.size, args.device, dtype)
    build_s = time.perf_counter() - t0
    cfg = LoraTrainingSpec(last_k=args.last_k, r=args.rank, alpha=2 * args.rank, seed=args.seed)
    from peft import get_peft_model

    peft_config, targets = lora_config(model, cfg)
    model = get_peft_model(model, peft_config)
    check_frozen(model)
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    trainable, total = trainable_parameters(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = synthetic_batch(args.size, args.batch_size, args.seq_len, args.image_grid, args.device, dtype, args.seed)
    model.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    target_tokens = int((batch["labels"] != -100).sum())
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    return {
        "size": args.size,
        "device": device_name,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "image_tokens": (args.image_grid // 2) ** 2,
        "last_k": args.last_k,
        "rank": args.rank,
        "grad_checkpointing": args.grad_checkpointing,
        "lora_modules": len(targets),
        "trainable_params": trainable,
        "total_params": total,
        "steps": args.steps,
        "steps_per_s": args.steps / elapsed,
        "target_tokens_per_s": args.steps * target_tokens / elapsed,
        "peak_memory_gib": peak_memory_gib(args.device),
        "build_s": build_s,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


def section(results: list[dict], command: str) -> str:
    lines = [
        SECTION,
        "",
        "Random-weight Qwen3-VL built from a config, LoRA on the last K language blocks (vision frozen), "
        "synthetic rows with one image each; forward, backward, clip, AdamW (SFTTrainer's compute step). "
        "Peak memory: CUDA allocator peak on GPU, max RSS on CPU.",
        "",
        "| size | device | dtype | batch x seq | image tokens | last K / rank | trainable / total params | "
        "steps/s | target tok/s | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['device']} | {r['dtype']} | {r['batch_size']} x {r['seq_len']} | "
            f"{r['image_tokens']} | {r['last_k']} / {r['rank']} | {r['trainable_params']:,} / "
            f"{r['total_params']:,} | {r['steps_per_s']:.3f} | {r['target_tokens_per_s']:.0f} | "
            f"{r['peak_memory_gib']:.2f} |"
        )
    lines += ["", "Command:", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--image-grid", type=int, default=16, help="patch grid per image (16 -> 64 image tokens)")
    p.add_argument("--last-k", type=int, default=None, help="default: 4 at 4b, 1 at tiny (2 blocks)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--write-doc", action="store_true", help="write the section of docs/benchmarks.md")
    args = p.parse_args()
    args.last_k = args.last_k or (4 if args.size == "4b" else 1)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.write_doc:
        from benchmarks.report import DOC, command_line, write_section

        cmd = command_line("benchmarks.lora_step", args, skip=("write_doc",), flags=("grad_checkpointing",))
        write_section(DOC, section([result], cmd))


if __name__ == "__main__":
    main()
