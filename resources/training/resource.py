"""Dagster resource for student training: which base checkpoint, on which device, in which dtype.

No silent fallback to the random-weight smoke model: with `model_path` empty the resource refuses
unless `smoke_model=True` says so (the demo does), and the smoke note travels with every result.
"""

from __future__ import annotations

import dagster as dg

from resources.store import data_root


class StudentTrainingResource(dg.ConfigurableResource):
    """Production: `model_path=/models/Qwen3-VL-4B-Instruct, device=cuda, dtype=bfloat16`."""

    model_path: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    smoke_model: bool = False  # empty model_path = the tiny random-weight Qwen3-VL; only when set

    def get_student(self):
        from resources.training.student import VLStudent

        if self.model_path:
            return VLStudent(self.model_path, self.device, self.dtype)
        if not self.smoke_model:
            raise ValueError(
                "no student checkpoint configured: set QC_STUDENT_MODEL to a Qwen3-VL checkpoint "
                "folder, or QC_STUDENT_SMOKE_MODEL=1 to train the random-weight smoke model"
            )
        from resources.vlm.tiny_qwen3vl import SMOKE_MODEL_NOTE, build_tiny_qwen3vl

        folder = build_tiny_qwen3vl(data_root() / "models" / "tiny-qwen3vl")
        return VLStudent(str(folder), self.device, self.dtype, note=SMOKE_MODEL_NOTE)
