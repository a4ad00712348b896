"""Batched greedy generation must equal one-at-a-time generation: the reason for left padding."""

import torch
from PIL import Image
from transformers import Qwen3VLForConditionalGeneration

from resources.vlm import VisionDecode, VisionPrompt
from resources.vlm.qwen3vl_processor import ImageOnlyQwen3VLProcessor

SIZES = [(320, 240), (96, 300), (64, 64), (400, 128)]


def _prompts(tmp_path):
    prompts = []
    for i, size in enumerate(SIZES):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)).save(path)
        prompts.append(VisionPrompt(str(path), "你是质检助手。", "请概括照片。" * (i + 1)))
    return prompts


def test_batched_greedy_equals_unbatched_on_mixed_resolutions(tiny_vlm, tmp_path):
    prompts = _prompts(tmp_path)
    decode = VisionDecode(max_new_tokens=12, repetition_penalty=1.0)
    one_by_one = [tiny_vlm.generate([p], decode)[0].text for p in prompts]
    batched = [o.text for o in tiny_vlm.generate(prompts, decode)]
    assert batched == one_by_one
    assert len(set(one_by_one)) > 1  # the prompts really differ, so equality is not trivial


def test_right_padding_changes_batched_output(tiny_vlm_dir, tmp_path):
    """The earlier system's bug, reproduced on purpose: right padding corrupts the shorter prompts."""
    processor = ImageOnlyQwen3VLProcessor.from_pretrained(tiny_vlm_dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_vlm_dir).eval()
    prompts = _prompts(tmp_path)
    texts = [
        processor.apply_chat_template(
            [
                {"role": "system", "content": p.system},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.user}]},
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in prompts
    ]
    images = [Image.open(p.image_path).convert("RGB") for p in prompts]

    def run(side, idx):
        processor.tokenizer.padding_side = side
        inputs = processor(
            text=[texts[i] for i in idx], images=[images[i] for i in idx], padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        pad = processor.tokenizer.pad_token_id
        rows = [row[inputs["input_ids"].shape[1] :].tolist() for row in out]
        return [[t for t in row if t != pad] for row in rows]  # finished rows are padded after EOS

    single = [run("left", [i])[0] for i in range(len(prompts))]
    assert run("left", list(range(len(prompts)))) == single
    assert run("right", list(range(len(prompts)))) != single
