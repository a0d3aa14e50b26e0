"""LoRA on the selected blocks: each targeted projection's kernel W becomes W + (alpha / r) A B.

The trainable tree holds only the factors {module path + ("lora_A",): (in, r), + ("lora_B",):
(r, out)}; `combine` (training.make_train_step's merge) rebuilds the full parameters, so the base
weights stay frozen and Adam state exists for the factors alone. B starts at zero (the model
starts as the base model), as in PEFT.

Targets are module-path suffixes (families.Family.lora_targets): the attention projections of
each family, FLUX's text-stream projections and single blocks' fused projections included.

Exported for both public loaders, from one key rule (`state_dict`), each factor transposed to
torch's (out, in): lora_A.weight (r, in), lora_B.weight (out, r).
- diffusers: pytorch_lora_weights.safetensors, keys "transformer.<module>.lora_A.weight" (what
  save_lora_weights writes), with the LoraConfig (rank, alpha, targets) in the file's
  "lora_adapter_metadata", so that `pipe.load_lora_weights(folder)` applies alpha / r rather than
  guessing it (SANA, FLUX, SD3; diffusers has no LoRA loader for PixArt, pipeline or model).
- PEFT: adapter_model.safetensors, keys "base_model.model.<module>.lora_A.weight", and
  adapter_config.json (what PeftModel.save_pretrained writes), so that
  `PeftModel.from_pretrained(transformer, folder)` loads it into any family's diffusers transformer.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The attention projections, as in diffusers' LoRA training scripts.
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FACTORS = ("lora_A", "lora_B")


def is_target(module: tuple[str, ...], targets: Sequence[str]) -> bool:
  """Whether a module path ends with one of the targets ("to_q", "attn/add_q_proj", ...)."""
  path = "/".join(module)
  return any(path == t or path.endswith("/" + t) for t in targets)


def targeted_modules(flat_params: dict, selected: Callable[[str], bool],
                     targets: Sequence[str] = TARGETS) -> list[tuple[str, ...]]:
  """Module paths (without "kernel") of the targeted projections in selected parameters."""
  modules = [k[:-1] for k in flat_params
             if k[-1] == "kernel" and is_target(k[:-1], targets) and selected("/".join(k))]
  if not modules:
    raise ValueError(f"LoRA: no projection named {', '.join(targets)} in the selected blocks, "
                     "nothing for LoRA to adapt; select blocks that have them or train their full "
                     "weights (lora_rank=0)")
  return sorted(modules)


def init(flat_params: dict, selected: Callable[[str], bool], rank: int, seed: int = 0,
         targets: Sequence[str] = TARGETS) -> dict:
  factors, key = {}, jax.random.key(seed)
  for module in targeted_modules(flat_params, selected, targets):
    d_in, d_out = flat_params[module + ("kernel",)].shape
    key, sub = jax.random.split(key)
    factors[module + ("lora_A",)] = jax.random.normal(sub, (d_in, rank), jnp.float32) / np.sqrt(d_in)
    factors[module + ("lora_B",)] = jnp.zeros((rank, d_out), jnp.float32)
  return factors


def combiner(rank: int, alpha: float) -> Callable:
  """(factors, frozen flat params) -> full params tree, for training.make_train_step."""
  scale = alpha / rank

  def combine(factors: dict, frozen: dict):
    from dit_jax.train.loop import merge_params
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


# File name -> key prefix, as each loader reads it: diffusers' load_lora_weights looks for the
# pipeline component's name (filled in by export_peft), PeftModel.from_pretrained for PeftModel's
# own wrapping (PeftModel.base_model is a LoraModel whose .model is the transformer).
FILES = {"pytorch_lora_weights.safetensors": "{component}.", "adapter_model.safetensors": "base_model.model."}


def state_dict(factors: dict, prefix: str) -> dict[str, np.ndarray]:
  """The factors as torch tensors under PEFT's names: "<prefix><module>.lora_A.weight" (r, in) and
  ".lora_B.weight" (out, r), the transposes of our (in, r) and (r, out)."""
  return {f"{prefix}{'.'.join(p[:-1])}.{p[-1]}.weight": np.ascontiguousarray(np.asarray(v, np.float32).T)
          for p, v in factors.items()}


def export_peft(folder: str, factors: dict, rank: int, alpha: float, prefix: str = "transformer") -> None:
  """pytorch_lora_weights.safetensors (diffusers), adapter_model.safetensors + adapter_config.json
  (PEFT): the same tensors under each loader's keys. prefix: the pipeline component LoRA adapts."""
  from safetensors.numpy import save_file
  os.makedirs(folder, exist_ok=True)
  modules = sorted({".".join(p[:-1]) for p in factors})
  config = {"r": rank, "lora_alpha": alpha, "target_modules": modules, "lora_dropout": 0.0,
            "bias": "none", "init_lora_weights": True}
  metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(
      {f"{prefix}.{k}": v for k, v in config.items()}, sort_keys=True)}
  for name, keys in FILES.items():
    path = os.path.join(folder, name)
    save_file(state_dict(factors, keys.format(component=prefix)), path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)
  with open(os.path.join(folder, "adapter_config.json"), "w") as f:
    json.dump({"peft_type": "LORA", **config}, f, indent=2)
