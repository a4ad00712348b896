"""Dagster resource for FastDistill's text student: which base model, on which device, in which dtype,
with how many CPU threads. It trains LoRA through TRL's SFTTrainer (`sft_text`) and hands back the
base and the trained model as `ChatLLM`s for the evaluation, so domain code (qc_assets/fastdistill)
never builds a backend or a trainer itself.

Settings come from the environment (`text_student_from_env`, used by definitions.py and the
FastDistill CLI): QC_TEXT_STUDENT_MODEL (HF folder, a folder holding QC_TEXT_STUDENT_GGUF_FILE, or a
.gguf file; empty = the embedded SmolLM2-135M GGUF), QC_TEXT_STUDENT_DEVICE (default QC_DEVICE),
QC_TEXT_STUDENT_DTYPE (default QC_DTYPE) and QC_CPU_THREADS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.env import env, env_number
from resources.llm import ChatLLM
from resources.training.spec import LoraTrainingSpec
from resources.training.trl_common import check_device_dtype


class TextStudentResource(dg.ConfigurableResource):
    """The text student's base and where it trains: `train` (LoRA SFT), `base_llm` and `trained_llm` (eval)."""

    model_path: str = Field(
        default="",
        description="HF folder, a folder holding gguf_file, or a .gguf file; empty = the embedded SmolLM2 GGUF",
    )
    gguf_file: str = Field(default="", description="GGUF file name inside model_path")
    device: str = Field(default="cpu", description="training and eval device, e.g. cuda")
    dtype: str = Field(default="float32", description="float32, bfloat16 (bf16 mixed precision) or float16")
    cpu_threads: int = Field(
        default=0,
        description="torch intra-op threads for training and eval decode; "
        "0 = torch default, 1 is fastest on a busy CPU",
    )
    eval_batch_size: int = Field(default=8, description="conversations per generate call in the eval")

    def check(self) -> None:
        check_device_dtype(self.device, self.dtype)
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.gguf_file and not self.model_path:
            raise ValueError(f"gguf_file {self.gguf_file!r} needs model_path (the folder that holds it)")

    def base_location(self) -> tuple[Path, str | None]:
        """(folder, gguf file or None) of the base model, resolving the embedded default."""
        self.check()
        if not self.model_path:
            from resources.llm.smollm2 import smollm2_gguf_path

            gguf = smollm2_gguf_path()
            return gguf.parent, gguf.name
        path = Path(self.model_path).expanduser()
        if path.suffix == ".gguf" and not self.gguf_file:
            return path.parent, path.name
        return path, self.gguf_file or None

    def identity(self) -> dict:
        """What a trained student depends on besides its data and LoRA settings: the base model's files (by
        name and size) and the precision it trains in."""
        folder, gguf_file = self.base_location()
        base = folder / gguf_file if gguf_file else folder
        files = [base] if base.is_file() else sorted(p for p in base.glob("*") if p.is_file())
        return {"base": [(str(p), p.stat().st_size) for p in files], "dtype": self.dtype}

    def train(self, conversations: Sequence[Sequence[dict]], spec: LoraTrainingSpec, out_dir: Path) -> dict:
        """LoRA SFT on chat `conversations` (the last message is the reply learned); saves `adapter/` and
        the merged `model/` under `out_dir`; returns the training report (`model_dir` names the merged model)."""
        from resources.training.sft_text import train_lora

        folder, gguf_file = self.base_location()
        return train_lora(
            folder,
            gguf_file,
            conversations,
            spec,
            Path(out_dir),
            device=self.device,
            dtype=self.dtype,
            cpu_threads=self.cpu_threads,
        )

    def base_llm(self) -> ChatLLM:
        folder, gguf_file = self.base_location()
        return self._llm(folder, gguf_file)

    def trained_llm(self, model_dir: str | Path) -> ChatLLM:
        """The merged student that `train` saved (its report's `model_dir`)."""
        self.check()
        return self._llm(Path(model_dir), None)

    def _llm(self, folder: Path, gguf_file: str | None) -> ChatLLM:
        from resources.llm.transformers_backend import TransformersChatLLM

        return TransformersChatLLM(
            folder,
            gguf_file=gguf_file,
            batch_size=self.eval_batch_size,
            num_threads=self.cpu_threads,
            device=self.device,
            dtype=self.dtype,
        )


def text_student_from_env() -> TextStudentResource:
    """The text student from QC_TEXT_STUDENT_* (see the module docstring)."""
    return TextStudentResource(
        model_path=env("QC_TEXT_STUDENT_MODEL", ""),
        gguf_file=env("QC_TEXT_STUDENT_GGUF_FILE", ""),
        device=env("QC_TEXT_STUDENT_DEVICE", env("QC_DEVICE", "cpu")),
        dtype=env("QC_TEXT_STUDENT_DTYPE", env("QC_DTYPE", "float32")),
        # one torch thread by default, as the LLM resources: torch's default threads oversubscribe a small CPU
        cpu_threads=env_number("QC_CPU_THREADS", "1", int),
    )
