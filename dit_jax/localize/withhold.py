"""Withhold operators: what the selected blocks read instead of the concept prompt (config.withhold).

    neutral = withhold.replacement(pipe, pairs, "empty", knowledge_set, size)
    images = sweep.run_interventions(pipe, prompts, neutral, seeds, size, plan)

  "neutral"  the pair's neutral prompt: the concept replaced by its category's neutral phrase (the
             paper's; the default)
  "empty"    the empty prompt ""
  "removed"  the prompt with the concept phrase cut out ("a red star in the sky" -> "a star in the
             sky"), spaces and commas tidied
  "mean"     the mean text state of the knowledge set (mean_text_state): no prompt at all

One operator serves the whole sweep: the forward interventions, the reverse experiment (the concept
only in the selected blocks, the operator's text elsewhere) and the "neutral" row (the operator's
text in every block), so the rows of one run stay comparable. The first three give prompts,
encoded like any prompt; "mean" gives a conditioning dict of the same shape as the prompts' (one
row per pair), which run_interventions takes in their place.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from dit_jax.diffusion.concepts import char_span
from dit_jax.knowledge import KnowledgeSet, PromptPair

OPERATORS = ("neutral", "empty", "removed", "mean")


def check_operator(operator: str) -> str:
  if operator not in OPERATORS:
    raise ValueError(f"withhold={operator!r}: use one of {list(OPERATORS)} (what the selected blocks "
                     "read instead of the concept prompt)")
  return operator


def remove_concept(prompt: str, concept: str) -> str:
  """`prompt` without the first whole-word occurrence of `concept` (concepts.char_span), with the
  doubled spaces and commas, and the leading or trailing ones, the cut leaves tidied away."""
  start, end = char_span(prompt, concept)
  text = prompt[:start] + " " + prompt[end:]
  text = re.sub(r"\s+", " ", text)
  text = re.sub(r"\s+,", ",", text)          # "in , dotted" -> "in, dotted"
  text = re.sub(r",(\s*,)+", ",", text)      # "a, , b" -> "a, b"
  return text.strip(" ,")


def withheld_prompts(pairs: Sequence[PromptPair], operator: str) -> list[str]:
  """The prompt each pair's selected blocks read under a prompt operator (neutral, empty, removed)."""
  rules = {"neutral": lambda p: p.neutral, "empty": lambda p: "",
           "removed": lambda p: remove_concept(p.prompt, p.concept)}
  if check_operator(operator) not in rules:
    raise ValueError(f"withhold={operator!r} is a text state, not a prompt: use replacement()")
  return [rules[operator](p) for p in pairs]


def mean_text_state(states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """One row (leading axis 1) averaging every row of an encoder's output (text.PromptEncoder).

  Without a key mask (FLUX's T5 states and pooled CLIP vector, SD3's) the plain mean over prompts,
  position by position. With one ("caption_mask", PixArt and SANA), position s averages the prompts
  whose mask keeps s (the masked mean; the plain mean where none does, a value no attention reads),
  and the mean mask keeps s if any prompt's does, so the mean is as long as the longest prompt.
  """
  mask = states.get("caption_mask")
  out = {}
  for key, value in states.items():
    value = np.asarray(value)
    if key == "caption_mask":
      out[key] = value.max(axis=0, keepdims=True)
    elif key == "caption" and mask is not None:
      weight = np.asarray(mask, np.float64)[..., None]                   # (B, S, 1)
      count = weight.sum(axis=0, keepdims=True)
      masked = (value * weight).sum(axis=0, keepdims=True) / np.maximum(count, 1)
      out[key] = np.where(count > 0, masked, value.mean(axis=0, keepdims=True)).astype(value.dtype)
    else:
      out[key] = value.mean(axis=0, keepdims=True, dtype=np.float64).astype(value.dtype)
  return out


def mean_conditioning(pipe, prompts: Sequence[str], rows: int, size: tuple[int, int]) -> dict:
  """A conditioning dict of `rows` identical rows whose text is the mean state of `prompts`; the
  rest (negative prompt, micro-conditions) as pipe.conditioning gives any prompt."""
  mean = mean_text_state(pipe.encoder(list(prompts)))
  cond = pipe.conditioning(list(prompts[:1]), *size)
  cond.update(mean)
  return {k: np.repeat(v, rows, axis=0) for k, v in cond.items()}


def replacement(pipe, pairs: Sequence[PromptPair], operator: str, knowledge: KnowledgeSet | None,
                size: tuple[int, int]) -> list[str] | dict:
  """What run_interventions gets in place of the neutral prompts: one prompt per pair, or ("mean")
  a conditioning dict with one row per pair, the mean over the knowledge set's train prompts (the
  concept prompts localization reads; the eval prompts intervened on are not among them)."""
  if check_operator(operator) != "mean":
    return withheld_prompts(pairs, operator)
  if knowledge is None:
    raise ValueError("withhold='mean' averages the knowledge set's prompts: pass the knowledge set")
  prompts = [p.prompt for p in knowledge.all_pairs("train")]
  return mean_conditioning(pipe, prompts, len(pairs), size)
