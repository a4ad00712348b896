#!/usr/bin/env bash
# Builds llama.cpp for a CPU target chosen by flags, never by the machine that builds it (issue 16:
# a native build on an AMX CPU segfaults in ggml_backend_amx_mul_mat, llama.cpp #20824).
#
#   build.sh wheel  VERSION TARGET CACHE_DIR PYTHON   -> prints the path of a llama-cpp-python wheel
#   build.sh server VERSION TARGET CACHE_DIR PYTHON   -> prints the path of a llama-server binary
#
# The server binary is checked for AMX (resources/llm/llama_cpp_build.py) before it enters the cache;
# the wheel is checked by `make install` once installed, since only an installed library can say.
#
# TARGET: portable (x86-64 AVX2 + FMA + F16C + BMI2, no AVX-512, no AMX: runs on any x86-64 host
# with AVX2) or native (-march=native for this CPU, AMX still switched off; faster here, and the
# result runs only on CPUs like this one). The cache folder is keyed by version, target and a hash
# of the flags, so pip's wheel cache (keyed by the sdist alone) is never consulted (--no-cache-dir).
set -euo pipefail
what=$1 version=$2 target=$3 cache=$4 python=$5
pip="$python -m pip"

case "$target" in
  portable) flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
  # GCC keeps explicit -mno-* ISA flags over -march=native whatever their order.
  native) flags="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16 -DCMAKE_CXX_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16" ;;
  *) echo "LLAMA_CPU must be portable or native, got '$target'" >&2; exit 2 ;;
esac
key=$(printf '%s|%s|%s' "$what" "$version" "$flags" | sha256sum | cut -c1-12)
dest="$cache/$what-$version-$target-$key"

if [ "$what" = wheel ]; then
  found=$(ls "$dest"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$found" ]; then
    echo "building llama-cpp-python $version ($target): a few minutes on 2 cores" >&2
    tmp="$dest.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
    CMAKE_ARGS="$flags" $pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
      -w "$tmp" "llama-cpp-python==$version" >&2
    rm -rf "$dest"; mv "$tmp" "$dest"
    found=$(ls "$dest"/llama_cpp_python-*.whl | head -n1)
  fi
  echo "$found"
elif [ "$what" = server ]; then
  if [ ! -x "$dest/bin/llama-server" ]; then
    echo "building llama-server $version ($target): about 11 minutes on 2 cores" >&2
    work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
    $pip download -q --no-cache-dir --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version" >&2
    tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
    src="$work/llama_cpp_python-$version/vendor/llama.cpp"
    # shellcheck disable=SC2086  # flags are a word list on purpose
    eval cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF $flags >&2
    cmake --build "$work/build" --target llama-server -j"${LLAMA_SERVER_JOBS:-2}" >&2
    "$python" -m resources.llm.llama_cpp_build --server "$work/build/bin/llama-server" >&2
    mkdir -p "$dest/bin.tmp"; cp "$work/build/bin/llama-server" "$dest/bin.tmp/"
    rm -rf "$dest/bin"; mv "$dest/bin.tmp" "$dest/bin"
  fi
  echo "$dest/bin/llama-server"
else
  echo "usage: build.sh wheel|server VERSION TARGET CACHE_DIR PYTHON" >&2; exit 2
fi
