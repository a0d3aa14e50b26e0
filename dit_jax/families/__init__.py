"""One record per backbone family, looked up by name: everything that differs between families.

    family = families.get("flux")
    family.module_cls, family.pipeline_class, family.predictor(module, guidance_scale), ...

A family is its network (dit_jax/models/<name>.py), its record (dit_jax/families/<name>.py: the
original single-file layout, the diffusers pipeline it mirrors, its sampling and intervention rules)
and one line in REGISTRY below. Generic modules ask the record; they never branch on a family name
(docs/design.md, "Families").
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dit_jax import registry

# name -> "module:FAMILY". The one line a new backbone adds.
REGISTRY = registry.Registry("model family", {
    "pixart": "dit_jax.families.pixart:FAMILY",
    "sana": "dit_jax.families.sana:FAMILY",
    "flux": "dit_jax.families.flux:FAMILY",
    "sd3": "dit_jax.families.sd3:FAMILY",
})


# The attention projections, as diffusers' LoRA scripts target them (module-path suffixes).
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def no_schedule_kwargs(scheduler_config: dict, num_steps: int, latent_shape) -> dict:
  return {}


@dataclasses.dataclass(frozen=True)
class Family:
  """What a backbone family adds to the shared mechanisms (conversion, sampling, localization)."""
  name: str
  title: str                          # how messages name it ("PixArt", "FLUX")
  # The network and its conversion (ports.checkpoints is the one rule; these fill it in).
  config_cls: type                    # from_diffusers(dict) -> config; config.to_diffusers() -> dict
  module_cls: type                    # Flax module: module_cls(config=..., dtype=...)
  diffusers_class: str                # class name written to config.json
  example_inputs: Callable[[Any], tuple]      # config -> positional inputs, to trace param shapes
  # Original single-file layout: state dict (+ user overrides) -> (diffusers config, diffusers state).
  from_original: Callable[[Mapping[str, np.ndarray], dict], tuple[dict, Mapping[str, np.ndarray]]]
  published: str                      # where real weights are published, for error messages
  # The diffusers pipeline whose text encoding and defaults we mirror.
  pipeline_class: str                 # e.g. "PixArtAlphaPipeline"
  text_components: tuple[str, ...]    # pipeline subfolders prompt encoding needs
  max_sequence_length: int            # the pipeline's default text length
  # encode(pipeline, prompts, negative, device, max_length, **kwargs) -> dict of NumPy arrays
  encode_prompts: Callable[..., dict]
  # The pipeline attribute holding the tokenizer whose tokens the DiT's attention sees.
  attention_tokenizer: str = "tokenizer"
  # When the attention's text joins several tokenizers' tokens: fn(pipeline, max_length) ->
  # [(tokenizer attribute, token count), ...] in sequence order (SD3: CLIP's 77, then T5's). None:
  # attention_tokenizer's tokens alone.
  attention_segments: Callable[[Any, int], list[tuple[str, int]]] | None = None
  # Extra encode_prompt arguments, read from the pipeline class (SANA's instruction prefix).
  encode_kwargs: Callable[[str], dict] = lambda pipeline_class: {}
  # Sampling: predictor(module, guidance_scale) -> predict(params, x, t, cond).
  predictor: Callable = None
  guidance: str = "cfg"               # "cfg" (negative prompt, 2B batch) or "distilled"
  schedule_kwargs: Callable[[dict, int, Any], dict] = no_schedule_kwargs
  latent_patch: int = 1               # the sampler's NHWC latents are packed in patch x patch tokens
  # Localization: one intervention run, fn(loop, params, noise, concept, neutral, mask, reverse,
  # **options) -> final latents, and the options it accepts: name -> allowed values.
  intervene: Callable = None
  intervention_options: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  ignore_key: Callable[[str], bool] = lambda key: False   # diffusers keys that are not parameters
  # Training (dit_jax/train/trainer.py). The objective comes from the scheduler config (dit_jax.diffusion.noising);
  # the backbone is called through `predictor` without classifier-free guidance, a "distilled"
  # family with its guidance input set (FLUX-dev: the DreamBooth script's guidance_scale); ESD's
  # unconditional is the negative-prompt encoding for "cfg" families, the empty prompt otherwise.
  # LoRA targets: module-path suffixes of the projections LoRA adapts in a selected block.
  lora_targets: tuple[str, ...] = ATTENTION_PROJECTIONS


names, get = REGISTRY.names, REGISTRY.get   # get(name) -> Family; an unknown name lists the known ones


def register(name: str, module: str) -> None:
  """Add a family from outside the package: `module` defines FAMILY."""
  REGISTRY.register(name, f"{module}:FAMILY")
