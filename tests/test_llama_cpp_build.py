"""The installed llama.cpp is a portable build: it reports no AMX kernels (they segfault on some Intel
CPUs, llama.cpp #20824). This reads what the library was compiled with, not what this CPU has, so it
fails on a native build made on an AMX machine wherever the test then runs."""

import pytest

from resources.llm.llama_cpp_build import amx_features, check_no_amx, compiled_features, library_system_info, main

# llama_print_system_info() of llama-cpp-python 0.3.36 built with the AMX kernels compiled in
# (GGML_NATIVE=OFF plus GGML_AVX512*/GGML_AMX_*=ON: what GGML_NATIVE=ON gives on a Sapphire Rapids Xeon),
# copied from that build's output.
AMX_BUILD = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)


def test_the_installed_llama_cpp_has_no_amx_kernels():
    info = library_system_info()
    assert compiled_features(info).get("AVX2"), f"not the portable AVX2 build: {info}"
    check_no_amx(info, "the installed llama-cpp-python")


def test_a_build_with_amx_is_refused_with_the_flags_to_use():
    assert amx_features(AMX_BUILD) == ["AMX_INT8"]
    with pytest.raises(RuntimeError, match=r"compiled with AMX_INT8.*llama.cpp #20824.*GGML_NATIVE=OFF"):
        check_no_amx(AMX_BUILD, "this build")


def test_the_install_check_exits_non_zero_on_an_amx_build(monkeypatch, capsys):
    import resources.llm.llama_cpp_build as build

    assert main([]) == 0
    monkeypatch.setattr(build, "library_system_info", lambda: AMX_BUILD)
    assert main([]) == 1 and "AMX_INT8" in capsys.readouterr().err
