"""LoRA SFT on the tiny random-weight Qwen3-VL: the assistant-only mask, the freeze policy, a falling
loss on a fixed batch, and the saved adapter's load/merge round trip."""

import pytest
import torch

from fusion_fixtures import distill_rows, one_torch_thread, stage_a_records  # noqa: F401
from resources.training import lora_sft_vl as lora_sft
from qc_assets.fusion.config import LoraSFTConfig
from qc_assets.fusion.policy import IGNORE_INDEX, is_vision_param
from qc_assets.fusion.sources import stage_a_examples
from fusion_fixtures import MISSION

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def examples(sample_images):
    records = stage_a_records(sample_images)
    text = [{**r, "images": [], "source": "d"} for r in distill_rows(records)]
    image, _ = stage_a_examples(records, MISSION, sample_images)
    return text, image


def _reply_span(enc, processor):
    labels = enc["labels"]
    kept = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert kept == list(range(kept[0], kept[-1] + 1)), "the trained tokens must be one contiguous span"
    assert [enc["input_ids"][i] for i in kept] == [labels[i] for i in kept]
    return processor.tokenizer.decode([enc["input_ids"][i] for i in kept]), kept


def test_mask_is_exactly_the_assistant_reply_and_its_end_token(tiny_vlm_dir, examples):
    _, processor = lora_sft.load_student(str(tiny_vlm_dir))
    text, image = examples
    for ex in (text[0], image[0]):
        enc = lora_sft.encode_example(ex, processor)
        decoded, kept = _reply_span(enc, processor)
        assert decoded == ex["messages"][-1]["content"] + "<|im_end|>"
        # everything after the end token (the template's newline) is masked too
        assert kept[-1] == len(enc["input_ids"]) - 2
        prompt = processor.tokenizer.decode(enc["input_ids"][: kept[0]])
        assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>system" in prompt
    image_enc = lora_sft.encode_example(image[0], processor)
    assert "pixel_values" in image_enc and sum(image_enc["mm_token_type_ids"]) > 0
    assert lora_sft.encode_example(text[0], processor, max_length=5) is None


def test_lora_trains_only_adapters_and_loss_falls_on_a_fixed_batch(tiny_vlm_dir, examples, tmp_path):
    from resources.store import read_jsonl

    model, processor = lora_sft.load_student(str(tiny_vlm_dir))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = LoraSFTConfig(last_k=1, max_steps=8, batch_size=2, learning_rate=1e-2, seed=3)
    peft_model, targets = lora_sft.apply_lora(model, cfg)
    assert targets and all(".layers.1." in t for t in targets)  # tiny model: 2 blocks, last 1 adapted
    fixed = [examples[0][0], examples[1][0]]  # one text row, one image row: the same batch every step
    result = lora_sft.train_lora(peft_model, processor, fixed, cfg, log_path=tmp_path / "log.jsonl", log=lambda m: None)
    assert result.losses[-1] < result.losses[0] * 0.9
    log = read_jsonl(tmp_path / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 9)) and log[0]["loss"] == pytest.approx(result.losses[0])

    after = dict(peft_model.named_parameters())
    base_after = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
                  for n, p in after.items() if "lora_" not in n}
    assert set(base_after) == set(before)
    vision = [n for n in before if is_vision_param(n)]
    assert any("merger" in n for n in vision) and any("blocks" in n for n in vision)
    assert all(torch.equal(before[n], base_after[n]) for n in before), "a base parameter changed"
    lora_b = [p for n, p in after.items() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "LoRA B matrices start at zero and must move"
    assert result.trainable_params == sum(p.numel() for n, p in after.items() if "lora_" in n)
    assert result.trainable_params < result.total_params / 10

    # the saved adapter reloads onto the base, reproduces the fused logits, and merges
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    assert lora_sft.adapter_size_bytes(tmp_path / "adapter") > 0
    batch = lora_sft.collate([lora_sft.encode_example(examples[0][0], processor)], processor.tokenizer.pad_token_id)
    batch.pop("labels")
    with torch.no_grad():
        want = peft_model(**batch).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(**batch).logits
        merged = lora_sft.load_adapter(str(tiny_vlm_dir), tmp_path / "adapter", merge=True)
        got = merged(**batch).logits
    assert torch.allclose(want, got, atol=1e-4) and not torch.allclose(want, base_logits, atol=1e-4)


def test_generator_runs_base_and_fused_on_text_and_image_prompts(tiny_vlm_dir, examples):
    model, processor = lora_sft.load_student(str(tiny_vlm_dir))
    peft_model, _ = lora_sft.apply_lora(model, LoraSFTConfig(last_k=1))
    text, image = examples
    convs = [text[0]["messages"][:-1], image[0]["messages"][:-1]]
    side = processor.tokenizer.padding_side
    outs = [lora_sft.StudentGenerator(peft_model, processor, adapter=adapter).generate(
        convs, [[], image[0]["images"]], max_new_tokens=4) for adapter in (False, True)]
    assert len(outs[0]) == 2 and all(isinstance(t, str) and t for t in outs[0])
    # a fresh adapter has B = 0, so adapter on and off must decode the same text
    assert outs[0] == outs[1]
    assert processor.tokenizer.padding_side == side


def test_lora_step_benchmark_runs_at_tiny_size():
    import argparse

    from benchmarks.lora_step import run, section

    args = argparse.Namespace(size="tiny", device="cpu", dtype="float32", batch_size=1, seq_len=96, image_grid=8,
                              last_k=1, rank=4, steps=2, warmup=1, seed=0, grad_checkpointing=False)
    result = run(args)
    assert result["steps_per_s"] > 0 and result["lora_modules"] == 7 and result["image_tokens"] == 16
    assert 0 < result["trainable_params"] < result["total_params"]
    assert section([result], "cmd").startswith("## LoRA SFT step\n")
