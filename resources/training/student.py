"""The student backend that domain code trains through: it owns the base checkpoint, device and dtype,
and hands back sessions that generate, save the adapter and save a merged checkpoint.

Domain code (qc_assets/student) never loads a model itself; it calls `sft`, `dpo` or
`grpo` here with plain rows and a `LoraTrainingSpec`. Imports of torch/transformers/TRL happen inside methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from resources.training.session import StudentSession
from resources.training.spec import LoraTrainingSpec
from resources.training.trl_common import check_device_dtype


class VLStudent:
    """A Qwen3-VL student checkpoint trained on `device` in `dtype` (bf16 mixed precision when bfloat16)."""

    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32", note: str = ""):
        check_device_dtype(device, dtype)
        if not (Path(model_path) / "config.json").is_file():
            raise ValueError(f"no student checkpoint at {model_path!r}: expected a folder with config.json")
        self.model_path, self.device, self.dtype, self.note = str(model_path), device, dtype, note

    @property
    def fingerprint(self) -> str:
        from resources.vlm.transformers_backend import model_fingerprint

        return model_fingerprint(self.model_path, self.dtype)

    def _load(self):
        from resources.training.sft_vl import load_student

        return load_student(self.model_path, self.device, self.dtype)

    def sft(
        self, examples: Sequence[dict], spec: LoraTrainingSpec, work_dir: Path, log: Callable[[str], None] = print
    ) -> StudentSession:
        """LoRA SFT through TRL's SFTTrainer; `examples` are `{messages, images}` chatml rows."""
        from resources.training.sft_vl import train_sft
        from resources.training.trl_common import lora_config

        model, processor = self._load()
        _, targets = lora_config(model, spec)
        peft_model, result = train_sft(
            model, processor, examples, spec, Path(work_dir), self.device, self.dtype, log=log
        )
        return StudentSession(
            peft_model,
            processor,
            self.model_path,
            targets,
            result.losses,
            result.trainable_params,
            result.total_params,
            result.seconds,
            extra={"dropped_too_long": result.dropped_too_long},
        )

    def dpo(
        self,
        pairs: Sequence[dict],
        spec: LoraTrainingSpec,
        beta: float,
        work_dir: Path,
        log: Callable[[str], None] = print,
    ) -> StudentSession:
        """LoRA DPO through TRL's DPOTrainer on `{prompt, chosen, rejected}` conversational rows."""
        from resources.training.preference import train_dpo

        model, processor = self._load()
        return train_dpo(
            model, processor, self.model_path, pairs, spec, beta, Path(work_dir), self.device, self.dtype, log
        )

    def grpo(
        self,
        rows: Sequence[dict],
        spec: LoraTrainingSpec,
        rollout: dict,
        reward_funcs: list,
        work_dir: Path,
        log: Callable[[str], None] = print,
    ) -> StudentSession:
        """LoRA GRPO through TRL's GRPOTrainer on `{prompt, label, ...}` rows; `rollout`: num_generations,
        max_completion_length, beta, temperature."""
        from resources.training.preference import train_grpo

        model, processor = self._load()
        return train_grpo(
            model,
            processor,
            self.model_path,
            rows,
            spec,
            rollout,
            reward_funcs,
            Path(work_dir),
            self.device,
            self.dtype,
            log,
        )
