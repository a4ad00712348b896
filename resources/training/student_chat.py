"""The promoted student as a chat model: answers text-only Stage-B prompts (`verdict_model: student`).

It loads the checkpoint through the same loader as the Stage-A backend (`TransformersVLM`: the
image-only Qwen3-VL processor, left padding, one cached copy per process), so the folder that serves
Stage-A as `QC_VLM_MODEL=<data>/fused_sft_checkpoint/current` answers verdict prompts too. It satisfies
`resources.llm.ChatLLM`. Constrained decoding (`DecodeParams.constraint`) is not supported and is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from resources.llm import Completion, DecodeParams


class StudentChatLLM:
    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 8):
        from resources.vlm.transformers_backend import model_fingerprint

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"no student checkpoint at {model_path!r}: expected a merged checkpoint folder with "
                "config.json (e.g. <data>/fused_sft_checkpoint/current after a promoted run)"
            )
        # `current` is a symlink that moves on promotion: pin the run it points at now.
        self.model_path = str(path.resolve())
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self._fingerprint = "student:" + model_fingerprint(self.model_path, dtype)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def chat(self, conversations: Sequence[Sequence[dict]], params: DecodeParams) -> list[list[Completion]]:
        import torch

        from resources.vlm.transformers_backend import _load

        if params.constraint is not None:
            raise ValueError(
                "the student chat model does not support constrained decoding (DecodeParams.constraint); "
                "use structured_output none for verdict_model: student"
            )
        model, processor = _load(self.model_path, self.device, self.dtype)
        tok = processor.tokenizer
        end = tok.convert_tokens_to_ids("<|im_end|>")
        prompts = [
            processor.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False) for c in conversations
        ]
        sampling = params.temperature > 0
        out: list[list[Completion]] = []
        for i in range(0, len(prompts), self.batch_size):
            batch = prompts[i : i + self.batch_size]
            enc = tok(batch, padding=True, add_special_tokens=False, return_tensors="pt").to(self.device)
            kwargs = {
                "max_new_tokens": params.max_new_tokens,
                "do_sample": sampling,
                "pad_token_id": tok.pad_token_id,
                "eos_token_id": end,
                "num_return_sequences": params.n,
            }
            if sampling:
                kwargs.update(temperature=params.temperature, top_p=params.top_p)
                torch.manual_seed(params.seed)
            started = time.perf_counter()
            with torch.inference_mode():
                gen = model.generate(**enc, **kwargs)
            latency = time.perf_counter() - started
            width = enc["input_ids"].shape[1]
            for k, mask in enumerate(enc["attention_mask"]):
                rows = gen[k * params.n : (k + 1) * params.n, width:].tolist()
                answers = []
                for row in rows:
                    while row and row[-1] == tok.pad_token_id:
                        row.pop()
                    finished = bool(row) and row[-1] == end
                    answers.append(
                        Completion(
                            text=tok.decode(row, skip_special_tokens=True).strip(),
                            prompt_tokens=int(mask.sum()),
                            completion_tokens=len(row),
                            finish_reason="stop" if finished else "length",
                            latency_s=latency,
                        )
                    )
                out.append(answers)
        return out


def load_student_chat(checkpoint: str, device: str = "cpu", dtype: str = "float32") -> StudentChatLLM:
    """The loader for `qc_verdicts`' `verdict_model: student` (checkpoint = `.../fused_sft_checkpoint/current`)."""
    return StudentChatLLM(checkpoint, device, dtype)
