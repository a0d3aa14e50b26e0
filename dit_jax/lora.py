"""LoRA on the selected blocks: each targeted projection's kernel W becomes W + (alpha / r) A B.

The trainable tree holds only the factors {module path + ("lora_A",): (in, r), + ("lora_B",):
(r, out)}; `combine` (training.make_train_step's merge) rebuilds the full parameters, so the base
weights stay frozen and Adam state exists for the factors alone. B starts at zero (the model
starts as the base model), as in PEFT.

Exported in the diffusers/PEFT layout (what diffusers' save_lora_weights writes): keys
"transformer.<module>.lora_A.weight" (r, in) and ".lora_B.weight" (out, r) in
pytorch_lora_weights.safetensors, next to adapter_config.json (peft.LoraConfig fields).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# The attention projections, as in diffusers' LoRA training scripts.
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FACTORS = ("lora_A", "lora_B")


def targeted_modules(flat_params: dict, selected: Callable[[str], bool]) -> list[tuple[str, ...]]:
  """Module paths (without "kernel") of the targeted projections in selected parameters."""
  modules = [k[:-1] for k in flat_params
             if k[-1] == "kernel" and k[-2] in TARGETS and selected("/".join(k))]
  if not modules:
    raise ValueError(f"no {TARGETS} projection in the selected blocks: nothing for LoRA to adapt")
  return sorted(modules)


def init(flat_params: dict, selected: Callable[[str], bool], rank: int, seed: int = 0) -> dict:
  factors, key = {}, jax.random.key(seed)
  for module in targeted_modules(flat_params, selected):
    d_in, d_out = flat_params[module + ("kernel",)].shape
    key, sub = jax.random.split(key)
    factors[module + ("lora_A",)] = jax.random.normal(sub, (d_in, rank), jnp.float32) / np.sqrt(d_in)
    factors[module + ("lora_B",)] = jnp.zeros((rank, d_out), jnp.float32)
  return factors


def combiner(rank: int, alpha: float) -> Callable:
  """(factors, frozen flat params) -> full params tree, for training.make_train_step."""
  scale = alpha / rank

  def combine(factors: dict, frozen: dict):
    from dit_jax.training import merge_params
    kernels = {}
    for path, a in factors.items():
      if path[-1] == "lora_A":
        module = path[:-1]
        base = frozen[module + ("kernel",)]
        kernels[module + ("kernel",)] = (base + scale * a @ factors[module + ("lora_B",)]).astype(base.dtype)
    return merge_params(kernels, frozen)

  return combine


def base_kernels(factors: dict, frozen: dict) -> dict:
  """The frozen kernels LoRA adapts: what a teacher (the model before fine-tuning) needs."""
  return {p[:-1] + ("kernel",): frozen[p[:-1] + ("kernel",)] for p in factors if p[-1] == "lora_A"}


def export_peft(folder: str, factors: dict, rank: int, alpha: float, prefix: str = "transformer") -> None:
  """pytorch_lora_weights.safetensors + adapter_config.json in the diffusers/PEFT layout."""
  from safetensors.numpy import save_file
  os.makedirs(folder, exist_ok=True)
  tensors = {f"{prefix}.{'.'.join(p[:-1])}.{p[-1]}.weight": np.ascontiguousarray(np.asarray(v, np.float32).T)
             for p, v in factors.items()}
  modules = sorted({".".join(p[:-1]) for p in factors})
  config = {"r": rank, "lora_alpha": alpha, "target_modules": modules, "lora_dropout": 0.0,
            "bias": "none", "init_lora_weights": True}
  # diffusers' load_lora_weights reads the LoRA config from this header entry, not from
  # adapter_config.json; without it, it assumes lora_alpha = r.
  metadata = {"lora_adapter_metadata": json.dumps({f"{prefix}.{k}": v for k, v in config.items()})}
  save_file(tensors, os.path.join(folder, "pytorch_lora_weights.safetensors"), metadata=metadata)
  with open(os.path.join(folder, "adapter_config.json"), "w") as f:
    json.dump({"peft_type": "LORA", **config}, f, indent=2)
