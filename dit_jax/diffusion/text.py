"""Prompt encoding with the diffusers pipelines' own `encode_prompt` (exact preprocessing), cached on disk.

Text encoders stay in PyTorch: they run once per prompt, while the DiT runs steps x prompts x
interventions times. Localization re-encodes the same prompts many times, so every encoding is kept
in an on-disk cache keyed by the encoder's identity and the prompt.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

from ports.checkpoints import torch_to_numpy

EXPECTED_LAYOUT = ("a diffusers pipeline folder, as save_pretrained writes it or as published on "
                   "Hugging Face, with {} subfolders")


def check_components(folder: str, names: Sequence[str]) -> None:
  """Fail early, naming each missing component folder and the layout expected."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"pipeline folder {folder} does not exist; expected "
                            + EXPECTED_LAYOUT.format(", ".join(f"{n}/" for n in names)))
  missing = [n for n in names if not os.path.isdir(os.path.join(folder, n))]
  if missing:
    raise FileNotFoundError(f"{folder} has no {', '.join(f'{n}/' for n in missing)} folder; expected "
                            + EXPECTED_LAYOUT.format(", ".join(f"{n}/" for n in names)))


def folder_fingerprint(folder: str, names: Sequence[str]) -> str:
  """Changes when any file of the named components changes (path, size, modification time)."""
  digest = hashlib.sha256()
  for name in names:
    for root, _, files in sorted(os.walk(os.path.join(folder, name))):
      for file in sorted(files):
        stat = os.stat(os.path.join(root, file))
        digest.update(f"{os.path.relpath(os.path.join(root, file), folder)}:{stat.st_size}:"
                      f"{stat.st_mtime_ns};".encode())
  return digest.hexdigest()[:16]


def pipeline_default(class_name: str, argument: str):
  """The default the diffusers pipeline's __call__ gives `argument` (e.g. SANA's instruction)."""
  import inspect
  import diffusers
  return inspect.signature(getattr(diffusers, class_name).__call__).parameters[argument].default


class PromptEncoder:
  """prompts -> dict of NumPy arrays, as the family's diffusers pipeline encodes them.

  pixart / sana: {"caption": (B, S, D), "caption_mask": (B, S)}
  flux:          {"caption": (B, S, D) T5 states, "pooled": (B, 768) CLIP pooled vector}
  sd3:           {"caption": (B, 77 + S, D) CLIP ++ T5 states, "pooled": (B, 2048) CLIP vectors}

  `negative=True` encodes prompts the way the pipeline encodes its negative prompt (for SANA: without
  the instruction prefix).
  """

  def __init__(self, family, folder: str, cache_dir: str | None = None,
               max_sequence_length: int | None = None, device: str = "cpu", torch_dtype=None):
    self.family = family   # the family's record (dit_jax/families): how its pipeline encodes prompts
    self.folder, self.device = os.path.abspath(folder), device
    self.max_length = max_sequence_length or self.family.max_sequence_length
    class_name, self.components = self.family.pipeline_class, self.family.text_components
    check_components(self.folder, self.components)
    self.encode_kwargs = self.family.encode_kwargs(class_name)
    self._pipeline, self._class_name, self._torch_dtype = None, class_name, torch_dtype
    key = json.dumps([family.name, folder_fingerprint(self.folder, self.components), self.max_length,
                      str(torch_dtype), sorted(self.encode_kwargs.items())], default=str)
    self.cache_dir = cache_dir and os.path.join(cache_dir, hashlib.sha256(key.encode()).hexdigest()[:16])

  @property
  def pipeline(self):
    """The diffusers pipeline with only its text components loaded (built on first use)."""
    if self._pipeline is None:
      import diffusers
      import torch
      cls = getattr(diffusers, self._class_name)
      dtype = self._torch_dtype or torch.float32
      self._pipeline = cls.from_pretrained(self.folder, dtype=dtype, transformer=None,
                                           vae=None).to(self.device)
    return self._pipeline

  @property
  def tokenizer(self):
    """The tokenizer whose tokens the DiT's attention sees (FLUX: T5's, not CLIP's)."""
    return getattr(self.pipeline, self.family.attention_tokenizer)

  def _encode_uncached(self, prompts: list[str], negative: bool) -> dict[str, np.ndarray]:
    import torch
    with torch.no_grad():
      return self.family.encode_prompts(self.pipeline, prompts, negative, self.device,
                                        self.max_length, **self.encode_kwargs)

  def _cache_path(self, prompt: str, negative: bool) -> str:
    name = hashlib.sha256(f"{negative}:{prompt}".encode()).hexdigest()[:24]
    return os.path.join(self.cache_dir, name + ".npz")

  def __call__(self, prompts: str | Sequence[str], negative: bool = False) -> dict[str, np.ndarray]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not self.cache_dir:
      return self._encode_uncached(prompts, negative)
    os.makedirs(self.cache_dir, exist_ok=True)
    todo = sorted({p for p in prompts if not os.path.exists(self._cache_path(p, negative))})
    if todo:
      fresh = self._encode_uncached(todo, negative)
      for i, prompt in enumerate(todo):
        path = self._cache_path(prompt, negative)
        # Atomic (a killed run leaves no torn file), and per process: processes splitting a run's
        # concepts share its cache and encode the same negative prompt.
        tmp = f"{path}.tmp{os.getpid()}.npz"
        np.savez(tmp, **{k: v[i] for k, v in fresh.items()})
        os.replace(tmp, path)
    rows = []
    for prompt in prompts:
      with np.load(self._cache_path(prompt, negative)) as f:
        rows.append({k: f[k] for k in f.files})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

  def concept_mask(self, prompts: Sequence[str], concepts: Sequence[str]) -> np.ndarray:
    """(B, S) 0/1 mask of each concept's tokens, in the caption states this encoder returns."""
    from dit_jax.diffusion.concepts import concept_token_mask, joint_concept_mask
    if self.family.attention_segments:   # several tokenizers' tokens, one after the other (SD3)
      segments = self.family.attention_segments(self.pipeline, self.max_length)
      return joint_concept_mask([(getattr(self.pipeline, name), n) for name, n in segments], prompts,
                                concepts)
    prefix, length, select = "", self.max_length, None
    instruction = self.encode_kwargs.get("complex_human_instruction")
    if instruction:   # SANA: instruction + prompt, then the first and the last max_length - 1 tokens
      prefix = "\n".join(instruction)
      length = len(self.tokenizer.encode(prefix)) + self.max_length - 2
      select = [0] + list(range(length - self.max_length + 1, length))
    return concept_token_mask(self.tokenizer, prompts, concepts, length, prefix, select)


def encode_cross_attention(pipe, prompts: list[str], negative: bool, device: str, max_length: int,
                           **kwargs) -> dict[str, np.ndarray]:
  """Caption states and key mask, as a cross-attention pipeline (PixArt, SANA) encodes them."""
  # The negative branch of encode_prompt is how the pipeline encodes negative prompts.
  out = pipe.encode_prompt(prompts, do_classifier_free_guidance=negative, negative_prompt=prompts,
                           device=device, clean_caption=False, max_sequence_length=max_length,
                           **kwargs)
  caption, mask = out[2:] if negative else out[:2]
  return {"caption": torch_to_numpy(caption), "caption_mask": torch_to_numpy(mask).astype(np.int32)}
