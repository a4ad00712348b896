"""Model-library-free pieces of the LoRA policy: which modules get adapters and which stay frozen.
Shared by SFT, DPO and GRPO (all through TRL with a peft `LoraConfig` naming these modules).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# A decoder block's projection: `model.language_model.layers.3.mlp.up_proj` (Qwen3-VL) or
# `model.layers.3.self_attn.q_proj` (a plain causal LM such as SmolLM2).
_LAYER_PROJ = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<idx>\d+)\.(?:self_attn|mlp)\.(?P<proj>\w+)$")
# Everything under the vision tower, its merger and the deepstack mergers.
VISION_MARKERS = ("visual.",)


def is_vision_param(name: str) -> bool:
    return any(m in name for m in VISION_MARKERS) or name.startswith("visual")


def lora_target_modules(module_names: Iterable[str], last_k: int, projections: Sequence[str]) -> list[str]:
    """Full module names of the chosen projections in the language model's last `last_k` blocks
    (`last_k=0`: every block).

    Names are built from the model's own layer list, so a model with fewer blocks than `last_k`, or one
    without the named projections, is an error rather than a silently different adapter.

    >>> names = [f"model.language_model.layers.{i}.self_attn.q_proj" for i in range(3)]
    >>> lora_target_modules(names + ["model.visual.blocks.0.attn.qkv"], 2, ["q_proj"])
    ['model.language_model.layers.1.self_attn.q_proj', 'model.language_model.layers.2.self_attn.q_proj']
    """
    if last_k < 0:
        raise ValueError(f"last_k must be >= 0 (0 = every block), got {last_k}")
    found: dict[int, list[str]] = {}
    prefixes = set()
    for name in module_names:
        if is_vision_param(name):
            continue
        m = _LAYER_PROJ.match(name)
        if m and m.group("proj") in projections:
            found.setdefault(int(m.group("idx")), []).append(name)
            prefixes.add(m.group("prefix"))
    if not found:
        raise ValueError(f"no language-model projections named {list(projections)} under a '.layers.<n>.' path")
    if len(prefixes) != 1:
        raise ValueError(f"expected one decoder layer list, found several: {sorted(prefixes)}")
    n_layers = max(found) + 1
    if last_k > n_layers:
        raise ValueError(f"last_k={last_k} but the language model has {n_layers} decoder layers")
    chosen = range(n_layers - last_k if last_k else 0, n_layers)
    missing = [i for i in chosen if i not in found]
    if missing:
        raise ValueError(f"decoder layers {missing} have none of the projections {list(projections)}")
    targets = [name for i in chosen for name in sorted(found[i])]
    per_layer = {len(found[i]) for i in chosen}
    if len(per_layer) != 1:
        raise ValueError(f"layers {list(chosen)} differ in which of {list(projections)} they have")
    return targets
