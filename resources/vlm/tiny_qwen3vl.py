"""A tiny Qwen3-VL smoke model, built locally because no small Qwen3-VL weights can be downloaded.

Random weights, a BPE tokenizer trained on the project's own prompt text (with Qwen's chat and
vision special tokens and a chatml template), and the real Qwen3-VL processor code. Its summaries are
meaningless; it exists so that every code path a real checkpoint takes (image tokens, chat template,
left padding, batched generation, LoRA) runs on a CPU in tests and in `make demo`.
"""

from __future__ import annotations

import json
from pathlib import Path

SMOKE_MODEL_NOTE = "random-weight tiny Qwen3-VL smoke model: outputs are not meaningful"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen-VL style chatml: content is a string or a list of {"type": "image"|"text"} parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text in the style of the project's prompts and of summaries of these photos, so the smoke tokenizer
# has their words as tokens (kept here: a backend imports nothing from the pipeline).
_CORPUS = [
    "你是通信基站安装质检助手。请客观描述照片中可见的设备与安装细节，只写看得到的内容，不做推测。",
    "若照片是图纸、屏幕截图或非现场照片，请直接说明“非现场照片”。",
    "请用一句中文概括这张照片中与本任务相关的内容。任务重点：只输出一行摘要。",
    "场景提示：BBU安装在室内机柜或挂架上，常见部件有BBU主机、接地线（黄绿色）、电源线、光纤、挡风板、线缆标签。",
    "场景提示：RRU安装在室外抱杆或墙面上，常见部件有RRU主机、安装支架、紧固件、电源线、光纤、接地线、防水弯和防水胶带。",
    "照片显示BBU设备安装在机柜内，接地线连接正常，线缆绑扎整齐。",
    "照片中RRU安装在抱杆上，紧固件齐全，防水弯完好，未见接地线。",
    "挡风板缺失，机柜空槽位未安装挡风板。通过 不通过 理由：",
    "The photo shows equipment, a cable, a ground wire and a cabinet.",
]


def build_tiny_qwen3vl(out_dir: str | Path, seed: int = 0, vocab_size: int = 1200) -> Path:
    """Write config, random weights, tokenizer and processor to `out_dir`; returns the folder.

    Idempotent: an existing complete folder is reused, so tests and the demo build it once.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from resources.vlm.qwen3vl_processor import ImageOnlyQwen3VLProcessor

    out = Path(out_dir)
    if (out / "smoke_model.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}

    torch.manual_seed(seed)
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)

    # Small pixel budget keeps the number of vision tokens (and CPU time) low.
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=32 * 32 * 4,
        max_pixels=128 * 128 * 4,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = ImageOnlyQwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(out)
    (out / "smoke_model.json").write_text(
        json.dumps({"note": SMOKE_MODEL_NOTE, "seed": seed}, ensure_ascii=False), encoding="utf-8"
    )
    return out
