"""A first decode in a child process, before a local model backend is used in this one.

A native library that crashes (llama.cpp's AMX kernels on some Intel CPUs, llama.cpp #20824) takes
the whole process with it: in the middle of Stage-B, with a pool slot held. The resources therefore
run one tiny decode in a child process the first time they load a local backend (llama.cpp,
transformers) in a process. A crash there becomes a clear error naming the backend, the signal and
the build to use, before any asset step starts.

    python -m resources.self_check llama_cpp MODEL.gguf [N_GPU_LAYERS]
    python -m resources.self_check transformers_llm MODEL_FOLDER [GGUF_FILE] DEVICE DTYPE
    python -m resources.self_check transformers_vlm MODEL_FOLDER DEVICE DTYPE
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

_PASSED: set[tuple] = set()  # probes that passed in this process
_LOCK = threading.Lock()


class SelfCheckError(RuntimeError):
    """The backend crashed or failed in its first decode (in a child process)."""


def _hint(backend: str) -> str:
    if backend == "llama_cpp":
        from resources.llm.llama_cpp_build import PORTABLE_BUILD_HINT, library_system_info

        try:
            build = library_system_info().strip()
        except (ImportError, OSError) as e:
            build = f"unreadable ({e})"
        return f"this llama.cpp build: {build}; {PORTABLE_BUILD_HINT}"
    return "check the model folder, and QC_DEVICE / QC_DTYPE for the device and dtype it should load with"


def run_self_check(backend: str, argv: list[str], timeout_s: float = 300.0) -> float:
    """Run `argv` (a child that loads `backend` and decodes a few tokens); return the seconds it took.

    Raises SelfCheckError when the child dies of a signal, exits non-zero or outlives `timeout_s`.
    Each distinct probe runs once per process: a probe that already passed returns 0.0 at once.
    """
    key = (backend, *argv)
    with _LOCK:
        if key in _PASSED:
            return 0.0
        started = time.perf_counter()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise SelfCheckError(
                f"{backend} self-check: no answer to a one-token decode within {timeout_s:.0f}s "
                f"in a child process ({' '.join(argv)})"
            ) from e
        seconds = time.perf_counter() - started
        tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise SelfCheckError(
                f"{backend} backend crashed with {name} in its self-check (a few tokens decoded in "
                f"a child process, before any asset step): {_hint(backend)}\n{tail}"
            )
        if proc.returncode != 0:
            raise SelfCheckError(
                f"{backend} backend failed its self-check (exit {proc.returncode}) in a child "
                f"process: {_hint(backend)}\n{tail}"
            )
        _PASSED.add(key)
        return seconds


def llm_probe(
    backend: str, folder: str, gguf_file: str | None, device: str, dtype: str, n_gpu_layers: int
) -> list[str]:
    me = [sys.executable, "-m", "resources.self_check"]
    if backend == "llama_cpp":
        return [*me, "llama_cpp", f"{folder}/{gguf_file}", str(n_gpu_layers)]
    return [*me, "transformers_llm", folder, gguf_file or "", device, dtype]


def vlm_probe(folder: str, device: str, dtype: str) -> list[str]:
    return [sys.executable, "-m", "resources.self_check", "transformers_vlm", folder, device, dtype]


# A prompt long enough for a batched matmul (the AMX crash came in a 200-token prefill, not in decode).
_PROBE_TEXT = "检查机柜安装：螺丝、线缆、接地、标签。" * 12


def _probe_llama_cpp(gguf: str, n_gpu_layers: str) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=512, n_threads=1, n_gpu_layers=int(n_gpu_layers), verbose=False)
    tokens = llm.tokenize(_PROBE_TEXT.encode())
    llm.eval(tokens)
    llm.create_completion(_PROBE_TEXT, max_tokens=2, temperature=0.0)
    llm.close()


def _probe_transformers_llm(folder: str, gguf_file: str, device: str, dtype: str) -> None:
    from resources.llm import DecodeParams
    from resources.llm.transformers_backend import TransformersChatLLM

    llm = TransformersChatLLM(folder, gguf_file=gguf_file or None, device=device, dtype=dtype, batch_size=1)
    (answers,) = llm.chat([[{"role": "user", "content": _PROBE_TEXT}]], DecodeParams(max_new_tokens=2))
    if not answers[0].ok:
        raise RuntimeError(f"decode failed: {answers[0].error}")


def _probe_transformers_vlm(folder: str, device: str, dtype: str) -> None:
    import tempfile

    from PIL import Image

    from resources.vlm import VisionDecode, VisionPrompt
    from resources.vlm.transformers_backend import TransformersVLM

    with tempfile.TemporaryDirectory() as tmp:
        image = f"{tmp}/probe.png"
        Image.new("RGB", (64, 64), (120, 120, 120)).save(image)
        vlm = TransformersVLM(folder, device, dtype)
        vlm.generate([VisionPrompt(image, "概括照片。", _PROBE_TEXT[:40])], VisionDecode(max_new_tokens=2))


if __name__ == "__main__":
    probes = {
        "llama_cpp": _probe_llama_cpp,
        "transformers_llm": _probe_transformers_llm,
        "transformers_vlm": _probe_transformers_vlm,
    }
    probes[sys.argv[1]](*sys.argv[2:])
