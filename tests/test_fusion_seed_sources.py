"""Fusion reads the seed's source YAML (seed 000), honours row weights and hard cases by repetition,
never upsamples a `sample_without_replacement` source, and trains image-bearing chatml rows with the
vision tower frozen."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from qc_assets.student.config import SourceConfig, load_fusion_config
from qc_assets.student.mixing import mix
from qc_assets.student.sources import load_source
from resources.store import atomic_write_jsonl

# The seed's example block, verbatim (000_*.txt, "SFT / Fusion 集成").
SEED_BLOCK = """\
sources:
  - name: stageb_teacher
    dataset: chat
    train_jsonl: data/stage_b/distill_chatml.train.jsonl
    ratio: 0.05   # 示例，实际需实验
    template: chatml
    mode: dense
    sample_without_replacement: true
    augmentation_enabled: false
    curriculum_enabled: false
"""


def chat_row(reply: str, **extra) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "质检"},
            {"role": "user", "content": "摘要"},
            {"role": "assistant", "content": reply},
        ],
        **extra,
    }


def test_the_seed_source_block_loads_verbatim(tmp_path):
    atomic_write_jsonl(tmp_path / "data/stage_b/distill_chatml.train.jsonl", [chat_row("通过\n理由: 齐全")])
    (tmp_path / "fusion.yaml").write_text(SEED_BLOCK, encoding="utf-8")
    (src,) = load_fusion_config(tmp_path / "fusion.yaml").sources
    assert (src.name, src.type, src.ratio, src.sample_without_replacement) == (
        "stageb_teacher",
        "chatml_file",
        0.05,
        True,
    )
    assert src.path == str(tmp_path / "data/stage_b/distill_chatml.train.jsonl")


@pytest.mark.parametrize("key", ["augmentation_enabled", "curriculum_enabled"])
def test_an_unimplemented_seed_flag_set_to_true_fails_naming_it(tmp_path, key):
    atomic_write_jsonl(tmp_path / "data/stage_b/distill_chatml.train.jsonl", [chat_row("通过\n理由: 齐全")])
    (tmp_path / "fusion.yaml").write_text(SEED_BLOCK.replace(f"{key}: false", f"{key}: true"), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"sources\[0\]: {key}: True is not implemented"):
        load_fusion_config(tmp_path / "fusion.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        (("template: chatml", "template: qwen"), "template 'qwen' is not supported"),
        (("mode: dense", "mode: summary"), "mode 'summary' is not supported"),
        (("dataset: chat", "dataset: lvis"), "dataset 'lvis' is not supported"),
    ],
)
def test_seed_values_we_do_not_have_fail_clearly(tmp_path, change, message):
    atomic_write_jsonl(tmp_path / "data/stage_b/distill_chatml.train.jsonl", [chat_row("通过\n理由: 齐全")])
    (tmp_path / "fusion.yaml").write_text(SEED_BLOCK.replace(*change), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_fusion_config(tmp_path / "fusion.yaml")


def test_sample_without_replacement_never_upsamples_and_says_so():
    pools = {"small": [1, 2], "big": list(range(10, 20))}
    ratios = {"small": 0.5, "big": 0.5}
    rows, reports = mix(pools, ratios, 10, seed=0, without_replacement={"small"})
    small = next(r for r in reports if r.name == "small")
    assert small.realised == 2 and not small.upsampled and "quota 5 > pool 2" in small.note
    assert sorted(r for r in rows if r < 10) == [1, 2]
    _, upsampled = mix(pools, ratios, 10, seed=0)
    assert next(r for r in upsampled if r.name == "small").realised == 5  # the default upsamples


def test_a_weight_of_3_triples_a_rows_share(tmp_path):
    path = tmp_path / "weighted.jsonl"
    atomic_write_jsonl(path, [chat_row("heavy", weight=3), chat_row("plain"), chat_row("plain copy", copy=1)])
    loaded = load_source(
        SourceConfig(name="w", type="chatml_file", path=str(path)),
        mission="",
        data_root=tmp_path,
        images_root=tmp_path,
        exclude_groups=set(),
    )
    assert loaded.dropped == {"weighted_copy": 1}  # an old export's copy row: its weight is on copy 0
    rows, _ = mix({"w": loaded.examples}, {"w": 1.0}, 400, seed=5)
    replies = [r["messages"][-1]["content"] for r in rows]
    assert replies.count("heavy") == 3 * replies.count("plain") == 300


def test_hard_cases_weigh_the_sources_hard_case_factor(tmp_path):
    mission = "挡风板安装检查"
    rows = [
        chat_row("不通过\n理由: 缺", group_id="g1", mission=mission, hard_case=True, weight=1, copy=0),
        chat_row("通过\n理由: 齐", group_id="g2", mission=mission, hard_case=False, weight=1, copy=0),
    ]
    atomic_write_jsonl(tmp_path / "distill_chatml" / mission / "distill_chatml.jsonl", rows)
    for factor, expected in ((1, 2), (4, 5)):
        src = SourceConfig(name="t", type="distill_chatml", hard_case_factor=factor)
        loaded = load_source(src, mission=mission, data_root=tmp_path, images_root=tmp_path, exclude_groups=set())
        assert len(loaded.examples) == expected
    with pytest.raises(ValueError, match="hard_case_factor must be an integer >= 1"):
        SourceConfig(name="t", type="distill_chatml", hard_case_factor=0)


def image_chatml(tmp_path, n_rows: int = 2):
    """A dense-caption chatml file whose user turns carry a photo, beside its images."""
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n_rows):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(tmp_path / "img" / f"{i}.jpg")
        rows.append(
            {
                "images": [f"img/{i}.jpg"],
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "描述这张图片。"}]},
                    {"role": "assistant", "content": f"机柜正面，挡风板齐全，第{i}层"},
                ],
            }
        )
    path = tmp_path / "dense.jsonl"
    atomic_write_jsonl(path, rows)
    return SourceConfig(name="dense", type="chatml_file", path=str(path))


def test_an_image_bearing_chatml_source_resolves_its_photos(tmp_path):
    src = image_chatml(tmp_path)
    loaded = load_source(src, mission="", data_root=tmp_path, images_root=tmp_path, exclude_groups=set())
    assert [ex["images"] for ex in loaded.examples] == [[str(tmp_path / "img" / f"{i}.jpg")] for i in range(2)]
    (tmp_path / "img" / "1.jpg").unlink()
    loaded = load_source(src, mission="", data_root=tmp_path, images_root=tmp_path, exclude_groups=set())
    assert len(loaded.examples) == 1 and loaded.dropped == {"missing_image": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {**json.loads(Path(src.path).read_text(encoding="utf-8").splitlines()[0]), "images": []}, ensure_ascii=False
        )
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="0 images for 1 image parts"):
        load_source(
            SourceConfig(name="b", type="chatml_file", path=str(bad)),
            mission="",
            data_root=tmp_path,
            images_root=tmp_path,
            exclude_groups=set(),
        )


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_image_chatml_rows_train_the_language_lora_only(tiny_vlm_dir, tmp_path):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from resources.training import sft_vl
    from resources.training.lora_policy import is_vision_param
    from resources.training.spec import LoraTrainingSpec
    from resources.training.student import VLStudent

    loaded = load_source(
        image_chatml(tmp_path), mission="", data_root=tmp_path, images_root=tmp_path, exclude_groups=set()
    )
    model, processor = sft_vl.load_student(str(tiny_vlm_dir))
    collator = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)
    batch = collator([dict(sft_vl.trl_row(loaded.examples[0]))])
    kept = (batch["labels"][0] != -100).nonzero().flatten()
    reply = loaded.examples[0]["messages"][-1]["content"]
    assert processor.tokenizer.decode(batch["input_ids"][0][kept]) == reply + "<|im_end|>\n"  # loss on the reply only

    before = {n: p.detach().clone() for n, p in model.named_parameters() if is_vision_param(n)}
    spec = LoraTrainingSpec(last_k=1, max_steps=2, batch_size=2, learning_rate=3e-2, warmup_ratio=0.0, seed=1)
    session = VLStudent(str(tiny_vlm_dir)).sft(loaded.examples, spec, tmp_path / "run", log=lambda m: None)
    after = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in session.model.named_parameters()
        if "lora_" not in n
    }
    assert before and all(torch.equal(before[n], after[n]) for n in before), "the vision tower moved"
    assert any(p.abs().sum() > 0 for n, p in session.model.named_parameters() if "lora_B" in n)
