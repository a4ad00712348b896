"""The student asset on a real Dagster instance: LoRA SFT (TRL SFTTrainer) of the embedded SmolLM2 on a run's export,
base vs student exec-eval on the dev split, Born-Again lineage. The export is written here from gold
SQL (the teacher stages have their own tests), so the training data does not depend on SmolLM2's luck."""

import json

import dagster as dg
import pytest
import torch

from qc_assets.fastdistill.assets import fastdistill_student, teacher_llm_for
from qc_assets.fastdistill.config import FastDistillSettings, TextStudentConfig
from qc_assets.fastdistill.pipeline import read_rows, stage_inputs
from qc_assets.fastdistill.prompts import build_messages
from resources.llm.resource import LLMResource
from resources.llm.smollm2 import smollm2_gguf_path
from resources.llm.transformers_backend import load_model
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl
from resources.training.sft_text import build_trainer, train_lora
from resources.training.spec import ATTENTION_PROJECTIONS, LoraTrainingSpec
from resources.training.text_student import TextStudentResource


@pytest.mark.slow
def test_student_asset_trains_evaluates_and_chains(tmp_path):
    gguf = smollm2_gguf_path()
    storage = StorageResource(data_root=str(tmp_path / "data"))
    text_student = TextStudentResource(cpu_threads=1)
    run = tmp_path / "data" / "fastdistill" / "r0"
    stage_inputs(run, "r0", FastDistillSettings(max_train=3, max_dev=2))
    train = [r for r in read_rows(run / "dedup" / "records.parquet") if r["split"] == "train"]
    sft = [
        {"sample_id": r["sample_id"], "messages": build_messages(r) + [{"role": "assistant", "content": r["gold_sql"]}]}
        for r in train
    ]
    atomic_write_jsonl(run / "export" / "sft_chatml.jsonl", sft)

    model, tokenizer = load_model(gguf.parent, gguf.name, "cpu", "float32")
    probe_before = next(model.parameters()).detach().clone()
    # TRL's prompt-completion rows: loss only on the reply (the gold SQL), none on the prompt
    spec = LoraTrainingSpec(
        last_k=0,
        projections=ATTENTION_PROJECTIONS,
        max_steps=1,
        batch_size=1,
        learning_rate=1e-3,
        r=4,
        alpha=8,
        max_length=512,
        seed=0,
    )
    trainer, _ = build_trainer(gguf.parent, gguf.name, [sft[0]["messages"]], spec, tmp_path / "probe", "cpu", "float32")
    row = trainer.train_dataset[0]
    reply = [t for t in row["labels"] if t != -100]  # TRL folds the completion mask into the labels
    assert row["labels"][0] == -100 and train[0]["gold_sql"] in tokenizer.decode(reply)
    assert "Question" not in tokenizer.decode(reply)
    del trainer

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("fastdistill_runs", ["r0"])
        # no warmup: with 2 steps the first would run at lr 0, and LoRA A only moves once B is non-zero
        config = {
            "lora": {"max_steps": 2, "batch_size": 1, "max_length": 256, "warmup_ratio": 0.0},
            "eval_max_new_tokens": 16,
        }
        result = dg.materialize(
            [fastdistill_student],
            partition_key="r0",
            instance=instance,
            resources={"storage": storage, "text_student": text_student},
            run_config={"ops": {"fastdistill_student": {"config": config}}},
        )
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("fastdistill_student")[-1].metadata.items()}
    assert meta["dagster/row_count"] == 3

    report = json.loads((run / "train" / "train_report.json").read_text())
    assert report["trainable_tensors"] > 0 and report["max_length"] == 256
    assert report["trainable_tensors_changed"] == report["trainable_tensors"]
    assert report["frozen_tensors_changed"] == 0
    assert report["train_tokens"] > 0 and len(report["losses"]) == 2
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    assert torch.equal(next(model.parameters()).detach(), probe_before)  # shared base untouched
    assert (run / "train" / "adapter" / "adapter_config.json").exists()

    evals = json.loads((run / "eval" / "eval_report.json").read_text())
    for side in ("before", "after"):
        s = evals[side]
        assert s["count"] == 2
        assert 0.0 <= s["gold_match_rate"] <= s["exec_pass_rate"] <= s["rule_pass_rate"] <= 1.0
    assert evals["before"]["model"] != evals["after"]["model"]
    assert meta["fastdistill/eval_after_gold_match_rate"] == evals["after"]["gold_match_rate"]
    metrics = json.loads((run / "reports" / "metrics.json").read_text())
    assert metrics["train_tokens_per_sec"] == pytest.approx(report["train_tokens"] / report["train_wall_s"])
    timing = json.loads((run / "reports" / "timing_report.json").read_text())
    assert {"train", "eval"} <= set(timing["stages"])

    # Born-Again: a later run names r0 as its teacher and gets r0's merged student
    lineage = json.loads((run / "reports" / "lineage.json").read_text())
    teacher = teacher_llm_for(FastDistillSettings(teacher_from_run="r0"), storage, LLMResource())
    assert teacher.fingerprint == lineage["student_fingerprint"] == evals["after"]["model"]
    with pytest.raises(ValueError, match="has no trained student"):
        teacher_llm_for(FastDistillSettings(teacher_from_run="nope"), storage, LLMResource())
    assert meta["fastdistill/student_reused"] is False

    # the same request again reuses the finished train + eval; a changed input would redo them
    trained_at = (run / "train" / "train_report.json").stat().st_mtime_ns
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("fastdistill_runs", ["r0"])
        again = dg.materialize(
            [fastdistill_student],
            partition_key="r0",
            instance=instance,
            resources={"storage": storage, "text_student": text_student},
            run_config={"ops": {"fastdistill_student": {"config": config}}},
        )
    again_meta = {
        k: v.value for k, v in again.asset_materializations_for_node("fastdistill_student")[-1].metadata.items()
    }
    assert again_meta["fastdistill/student_reused"] is True
    assert again_meta["fastdistill/eval_after_gold_match_rate"] == meta["fastdistill/eval_after_gold_match_rate"]
    assert (run / "train" / "train_report.json").stat().st_mtime_ns == trained_at
    from qc_assets.fastdistill.student_run import inputs_key

    cfg = TextStudentConfig(lora=LoraTrainingSpec(**config["lora"]))
    identity = text_student.identity()
    key = inputs_key(cfg, identity, sft, [])
    assert key != inputs_key(
        TextStudentConfig(lora=LoraTrainingSpec(**{**config["lora"], "max_steps": 3})), identity, sft, []
    )
    assert key != inputs_key(cfg, identity, sft[:1], [])
    assert key != inputs_key(cfg, TextStudentResource(dtype="bfloat16").identity(), sft, [])

    with pytest.raises(ValueError, match="no SFT conversations"):
        train_lora(gguf.parent, gguf.name, [], spec, tmp_path / "empty")
    with pytest.raises(ValueError, match="needs model_path"):
        TextStudentResource(gguf_file="x.gguf").base_llm()
