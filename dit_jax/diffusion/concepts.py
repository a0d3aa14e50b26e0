"""Which text tokens carry a concept: found with the tokenizer that feeds the attention.

Token positions come from the tokenizer's offset mapping (character spans), so they are right for
any tokenizer (T5's sentencepiece, Gemma, the Shapes word tokenizer) and for prompts where the concept
is split into several tokens or glued to punctuation.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ConceptNotFound(ValueError):
  pass


def char_span(prompt: str, concept: str) -> tuple[int, int]:
  """[start, end) of the first case-insensitive, whole-word occurrence of `concept` in `prompt`
  ("in the sky" does not match inside "in the skyline")."""
  text, word = prompt.lower(), concept.lower()
  start = text.find(word) if concept else -1
  while start >= 0:
    end = start + len(word)
    if (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
      return start, end
    start = text.find(word, start + 1)
  raise ConceptNotFound(f"concept {concept!r} not found in prompt {prompt!r}: it does not occur "
                        "as whole words")


def concept_token_mask(tokenizer, prompts: Sequence[str], concepts: Sequence[str], length: int,
                       prefix: str = "", select: Sequence[int] | None = None,
                       required: bool = True) -> np.ndarray:
  """(B, L) float32 0/1 mask of the tokens of concepts[b] in prompts[b], L = len(select) or length.

  Each prompt is tokenized exactly as the pipeline does: `prefix` prepended (SANA's instruction),
  padded and truncated to `length` tokens, then the positions in `select` kept, in order (SANA keeps
  the first token and the last ones). A concept whose tokens were all cut away is an error, like a
  concept absent from the prompt, unless not `required` (one segment of a joint text sequence,
  where another segment may still hold the concept: joint_concept_mask).
  """
  if len(prompts) != len(concepts):
    raise ValueError(f"{len(prompts)} prompts but {len(concepts)} concepts")
  if not getattr(tokenizer, "is_fast", False):
    raise TypeError("concept positions need a fast tokenizer (offset mappings): load it with "
                    "AutoTokenizer.from_pretrained(..., use_fast=True)")
  rows = []
  for prompt, concept in zip(prompts, concepts):
    start, end = char_span(prompt, concept)
    start, end = start + len(prefix), end + len(prefix)
    enc = tokenizer(prefix + prompt, padding="max_length", max_length=length, truncation=True,
                    add_special_tokens=True, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"]).reshape(-1, 2)
    hit = (offsets[:, 0] < end) & (offsets[:, 1] > start) & (offsets[:, 1] > offsets[:, 0])
    if select is not None:
      hit = hit[np.asarray(select)]
    if required and not hit.any():
      raise ConceptNotFound(f"concept {concept!r} of prompt {prompt!r} has no token left after "
                            f"truncation to {length} tokens")
    rows.append(hit.astype(np.float32))
  return np.stack(rows)


def joint_concept_mask(segments: Sequence[tuple[object, int]], prompts: Sequence[str],
                       concepts: Sequence[str]) -> np.ndarray:
  """(B, sum of lengths) mask over a text sequence joined from several tokenizers' tokens.

  segments: (tokenizer, length) in sequence order, each tokenizing the whole prompt (SD3: CLIP's
  77 tokens, then T5's). The concept is marked in every segment that kept it; one that no segment
  kept is an error.
  """
  mask = np.concatenate([concept_token_mask(tokenizer, prompts, concepts, length, required=False)
                         for tokenizer, length in segments], axis=1)
  for row, prompt, concept in zip(mask, prompts, concepts):
    if not row.any():
      raise ConceptNotFound(f"concept {concept!r} of prompt {prompt!r} has no token left after "
                            f"truncation to {[length for _, length in segments]} tokens")
  return mask
