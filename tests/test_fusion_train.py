"""LoRA SFT through TRL's SFTTrainer on the tiny random-weight Qwen3-VL: the completion-only loss
mask of TRL's vision-language collator, the freeze policy (vision tower and merger untouched), the
warmup + cosine schedule, a falling loss, and the merged checkpoint reproducing the adapter."""

from pathlib import Path

import pytest
import torch
from support.fusion import MISSION, distill_rows, stage_a_records

from qc_assets.student.sources import stage_a_examples
from resources.store import read_jsonl
from resources.training import sft_vl
from resources.training.lora_policy import is_vision_param
from resources.training.spec import LoraTrainingSpec
from resources.training.student import VLStudent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def examples(sample_images):
    records = stage_a_records(sample_images)
    text = [{**r, "images": [], "source": "d"} for r in distill_rows(records)]
    image, _ = stage_a_examples(records, MISSION, sample_images)
    return text, image


def test_collator_puts_loss_on_the_reply_only_for_text_and_photo_rows(tiny_vlm_dir, examples):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    _, processor = sft_vl.load_student(str(tiny_vlm_dir))
    collator = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)
    text, image = examples
    rows = [sft_vl.trl_row(text[0]), sft_vl.trl_row(image[0])]
    batch = collator([dict(r) for r in rows])  # one text row and one photo row in one batch
    assert batch["image_grid_thw"].shape[0] == 1 and int(batch["mm_token_type_ids"][1].sum()) > 0
    for i, ex in enumerate((text[0], image[0])):
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        kept = (labels != -100).nonzero().flatten().tolist()
        assert kept == list(range(kept[0], kept[-1] + 1)), "the trained tokens must be one contiguous span"
        # the reply, its end-of-turn token and the template's newline; nothing of the prompt
        assert processor.tokenizer.decode(ids[kept]) == ex["messages"][-1]["content"] + "<|im_end|>\n"
        prompt = processor.tokenizer.decode(ids[: kept[0]][batch["attention_mask"][i][: kept[0]] == 1])
        assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>system" in prompt
    assert sft_vl.token_length(rows[1], processor) > sft_vl.token_length(rows[0], processor) > 20


def test_sft_trains_only_language_lora_with_warmup_cosine_and_loss_falls(tiny_vlm_dir, examples, tmp_path):
    before = {n: p.detach().clone() for n, p in sft_vl.load_student(str(tiny_vlm_dir))[0].named_parameters()}
    spec = LoraTrainingSpec(last_k=1, max_steps=12, batch_size=2, learning_rate=3e-2, warmup_ratio=0.25, seed=3)
    fixed = [examples[0][0], examples[1][0]]  # one text row, one photo row: the same batch every step
    session = VLStudent(str(tiny_vlm_dir)).sft(fixed, spec, tmp_path, log=lambda m: None)
    assert session.targets and all(".layers.1." in t for t in session.targets)  # 2 blocks, last 1 adapted
    assert session.losses[-1] < session.losses[0] * 0.9
    log = read_jsonl(tmp_path / "train_log.jsonl")
    lrs = [r["learning_rate"] for r in log]
    assert len(log) == 12 and lrs[0] < max(lrs) == pytest.approx(3e-2) and lrs[-1] < max(lrs) / 2
    assert all(r["grad_norm"] > 0 for r in log)

    after = dict(session.model.named_parameters())
    base_after = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in after.items() if "lora_" not in n
    }
    assert set(base_after) == set(before)
    vision = [n for n in before if is_vision_param(n)]
    assert any("merger" in n for n in vision) and any("blocks" in n for n in vision)
    assert all(torch.equal(before[n], base_after[n]) for n in before), "a base parameter changed"
    lora_b = [p for n, p in after.items() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "LoRA B matrices start at zero and must move"
    assert session.trainable_params == sum(p.numel() for n, p in after.items() if "lora_" in n)
    assert session.trainable_params < session.total_params / 10

    # base and student differ; the merged checkpoint answers exactly like the adapter it came from
    convs = [examples[0][0]["messages"][:-1], examples[1][0]["messages"][:-1]]
    imgs = [[], examples[1][0]["images"]]
    base = session.generator(adapter=False).generate(convs, imgs, max_new_tokens=6)
    fused = session.generator(adapter=True).generate(convs, imgs, max_new_tokens=6)
    assert fused != base
    assert session.save_adapter(tmp_path / "adapter") > 0
    merged_dir = session.save_merged(tmp_path / "merged")
    model, processor = sft_vl.load_student(str(merged_dir))
    assert sft_vl.StudentGenerator(model, processor, adapter=True).generate(convs, imgs, max_new_tokens=6) == fused
    reloaded = sft_vl.load_adapter(str(tiny_vlm_dir), tmp_path / "adapter", merge=True)
    assert any(
        "lora" in n for n in dict(sft_vl.load_adapter(str(tiny_vlm_dir), tmp_path / "adapter").named_parameters())
    )
    assert not any("lora" in n for n, _ in reloaded.named_parameters())


def _benchmark(module: str, *args: str) -> dict:
    """Run `python -m benchmarks.<module>` (tests never import benchmarks) and read the result it prints."""
    import json
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{") :])


def test_lora_step_benchmark_runs_at_tiny_size():
    result = _benchmark(
        "lora_step",
        "--size",
        "tiny",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--batch-size",
        "1",
        "--seq-len",
        "96",
        "--image-grid",
        "8",
        "--last-k",
        "1",
        "--rank",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
    )
    assert result["steps_per_s"] > 0 and result["lora_modules"] == 7 and result["image_tokens"] == 16
    assert 0 < result["trainable_params"] < result["total_params"]


def test_merged_checkpoint_load_benchmark_runs_at_tiny_size(tmp_path):
    result = _benchmark(
        "merged_checkpoint_load", "--size", "tiny", "--device", "cpu", "--new-tokens", "4", "--tmp-dir", str(tmp_path)
    )
    assert result["lora_modules"] == 7 and result["disk_gib"] > 0
    assert result["merge_save_s"] > 0 and result["load_s"] > 0 and result["first_answer_s"] > 0


def test_bfloat16_student_trains_with_bf16_weights_and_float32_adapters(tiny_vlm_dir, examples, tmp_path):
    """The dtype comes from the student resource (QC_DTYPE), nothing pins float32: bf16 base weights,
    bf16 mixed precision in TRL, float32 LoRA weights (peft keeps adapters in float32)."""
    import math

    spec = LoraTrainingSpec(last_k=1, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0)
    session = VLStudent(str(tiny_vlm_dir), dtype="bfloat16").sft(
        [examples[0][0], examples[1][0]], spec, tmp_path, log=lambda m: None
    )
    params = dict(session.model.named_parameters())
    assert {p.dtype for n, p in params.items() if "lora_" not in n} == {torch.bfloat16}
    assert {p.dtype for n, p in params.items() if "lora_" in n} == {torch.float32}
    assert all(math.isfinite(x) for x in session.losses) and len(session.losses) == 2
    assert any(p.abs().sum() > 0 for n, p in params.items() if "lora_B" in n)
