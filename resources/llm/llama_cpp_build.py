"""What the installed llama.cpp was compiled for, and the refusal of builds that crash.

A native llama.cpp build on an Intel CPU with AMX compiles the AMX matmul kernels, which segfault in
`ggml_backend_amx_mul_mat` (llama.cpp #20824). This reads the build's own feature list (the library's
`llama_print_system_info()`, or the "system info" line `llama-server` logs at start-up), so it checks
the build, not the machine it runs on.

    python -m resources.llm.llama_cpp_build                  # the installed llama-cpp-python
    python -m resources.llm.llama_cpp_build --server PATH    # a llama-server binary
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

PORTABLE_BUILD_HINT = (
    "rebuild it for a portable target: `make install` (LLAMA_CPU=portable, the default) or "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" '
    "pip install --no-cache-dir --force-reinstall llama-cpp-python"
)


def library_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode()


def server_system_info(binary: str, timeout_s: float = 30.0) -> str:
    """llama-server logs its system info (at verbosity 4, trace) before it loads a model, so a missing
    model is enough."""
    proc = subprocess.run(
        [binary, "-lv", "4", "-m", "/nonexistent.gguf", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "system_info:" in line]
    if not lines:
        raise RuntimeError(f"{binary} printed no system info line (exit {proc.returncode})")
    return lines[0]


def compiled_features(info: str) -> dict[str, bool]:
    """{'AVX2': True, 'AMX_INT8': True, ...} from a llama.cpp system-info string."""
    return {name: value == "1" for name, value in re.findall(r"([A-Z][A-Z0-9_]*) = ([01])\b", info)}


def amx_features(info: str) -> list[str]:
    return sorted(name for name, on in compiled_features(info).items() if on and name.startswith("AMX"))


def check_no_amx(info: str, what: str) -> None:
    amx = amx_features(info)
    if amx:
        raise RuntimeError(
            f"{what} was compiled with {', '.join(amx)}: its AMX kernels segfault on some Intel CPUs "
            f"(llama.cpp #20824); {PORTABLE_BUILD_HINT}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="check this llama-server binary instead of the installed library")
    args = parser.parse_args(argv)
    what = args.server or "the installed llama-cpp-python"
    info = server_system_info(args.server) if args.server else library_system_info()
    on = [name for name, flag in compiled_features(info).items() if flag]
    print(f"llama.cpp build ({what}): {' '.join(on) or info.strip()}")
    try:
        check_no_amx(info, what)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
