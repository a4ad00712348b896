"""Student LoRA SFT on the embedded SmolLM2: only LoRA weights change, the shared base stays intact,
the merged student loads through the ordinary transformers backend and is exec-evaluated."""

import pytest
import torch

from qc_assets.fastdistill.assets import teacher_llm_for
from qc_assets.fastdistill.config import RunConfig, StudentConfig
from qc_assets.fastdistill.prompts import build_messages
from qc_assets.fastdistill.student import evaluate_llm
from qc_assets.fastdistill.student_backend import IGNORE, encode_chat, train_lora
from qc_assets.fastdistill.text2sql_data import synthetic_dataset
from resources.llm import DecodeParams
from resources.llm_resource import LLMResource
from resources.llm_transformers import TransformersChatLLM, load_model
from resources.smollm2 import smollm2_gguf_path
from resources.storage import StorageResource


@pytest.fixture(scope="module")
def base():
    gguf = smollm2_gguf_path()
    return gguf.parent, gguf.name


@pytest.mark.slow
def test_lora_sft_trains_only_adapters_and_student_is_evaluable(tmp_path, base):
    records = synthetic_dataset(tmp_path / "data", seed=1, per_template=1)
    train = [r for r in records if r["split"] == "train"][:4]
    dev = [r for r in records if r["split"] == "dev"][:2]
    conversations = [build_messages(r) + [{"role": "assistant", "content": r["gold_sql"]}] for r in train]
    model, tokenizer = load_model(base[0], base[1], "cpu", "float32")
    probe_before = next(model.parameters()).detach().clone()

    ids, labels = encode_chat(tokenizer, conversations[0], max_length=512)
    assert len(ids) == len(labels) and labels[0] == IGNORE
    answer = tokenizer.decode([t for t in labels if t != IGNORE])
    assert train[0]["gold_sql"] in answer

    train_dir = tmp_path / "data" / "fastdistill" / "r0" / "train"
    cfg = StudentConfig(steps=2, batch_size=1, max_length=256)
    report = train_lora(base[0], base[1], conversations, cfg, train_dir)
    assert report["trainable_tensors"] > 0
    assert report["trainable_tensors_changed"] == report["trainable_tensors"]
    assert report["frozen_tensors_changed"] == 0
    assert report["train_tokens"] > 0 and len(report["losses"]) == 2
    assert torch.equal(next(model.parameters()).detach(), probe_before)  # shared base untouched
    assert (train_dir / "adapter" / "adapter_config.json").exists()

    student = TransformersChatLLM(report["model_dir"], batch_size=4)
    assert student.fingerprint != TransformersChatLLM(base[0], gguf_file=base[1]).fingerprint
    rows, summary = evaluate_llm(student, dev, "sql", DecodeParams(max_new_tokens=16, seed=0))
    assert summary["count"] == 2 and len(rows) == 2
    assert 0.0 <= summary["gold_match_rate"] <= summary["exec_pass_rate"] <= summary["rule_pass_rate"] <= 1.0
    assert all(r["exec_pass"] or r["reject_reason"] or r["exec_error_class"] for r in rows)

    # Born-Again: a later run names r0 as its teacher and gets r0's merged student
    storage = StorageResource(data_root=str(tmp_path / "data"))
    teacher = teacher_llm_for(RunConfig(teacher_from_run="r0"), storage, LLMResource())
    assert teacher.fingerprint == student.fingerprint
    with pytest.raises(ValueError, match="has no trained student"):
        teacher_llm_for(RunConfig(teacher_from_run="nope"), storage, LLMResource())

    with pytest.raises(ValueError, match="no SFT conversations"):
        train_lora(base[0], base[1], [], StudentConfig(steps=1), tmp_path / "empty")
