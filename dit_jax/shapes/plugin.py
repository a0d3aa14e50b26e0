"""The Shapes world as a client of the core: its judge, knowledge set and training tasks, registered by name
through the same interfaces a user's own judge or prompt set would use (docs/design.md, "Plugins").

    config.plugins = ("dit_jax.shapes.plugin",)       # configs/shapes.py
    judges.make_judge("shapes"); knowledge.load_knowledge("shapes")

The core never imports this module; an entry point imports the modules a config lists in
`plugins` before it resolves names.
"""
from __future__ import annotations

from dit_jax import knowledge
from dit_jax.localize.judges import register_judge
from dit_jax.knowledge import KnowledgeSet, PromptPair
from dit_jax.shapes import ASSETS, tasks, world   # noqa: F401  (tasks registers the training tasks)
from dit_jax.shapes.judge import ShapesJudge

# What a command says where a Shapes run's weights are missing (dit_jax.pipeline.checks.where_weights_are).
WHERE_WEIGHTS_ARE = (f"The shipped Shapes model is {ASSETS} (configs/shapes.py's default); a pretraining run "
                     "writes its pipeline to <workdir>/pipeline, a fine-tuning run its transformer to "
                     "<workdir>/transformer (pass that as --config.generate.transformer=...).")

register_judge("shapes", ShapesJudge)


# ------------------------------------------------------------------ knowledge set
@knowledge.register_knowledge("shapes")
def shapes(prompts_per_concept: int = 8, seed: int = 0, train_per_concept: int | None = None,
           eval_per_concept: int | None = None) -> KnowledgeSet:
  """The Shapes world's categories with `prompts_per_concept` distinct train and as many distinct
  eval pairs per concept (train_/eval_per_concept set the splits apart). Train and eval pairs come
  from different seeds and share no prompt.

  Where the world has fewer distinct captions than that, a concept gets what it has, shared
  between the splits: a named character's caption is its name, a position and a place, 20 in all,
  so at most 10 per split. KnowledgeSet.subset(prompts_per_concept=...), which a localization run
  always goes through, then names the concept and its count in an error; nothing is cut silently.
  """
  n_train, n_eval = train_per_concept or prompts_per_concept, eval_per_concept or prompts_per_concept
  splits = {s: {} for s in knowledge.SPLITS}
  for category in world.CATEGORIES:
    for concept in world.CONCEPTS[category]:
      train, fresh = _split_pairs(category, concept, n_train, n_eval, seed)
      splits["train"][concept] = [PromptPair(p, q, concept, category) for p, q in train]
      splits["eval"][concept] = [PromptPair(p, q, concept, category) for p, q in fresh]
  return KnowledgeSet("shapes", world.CATEGORIES, dict(world.CONCEPTS), splits["train"],
                      splits["eval"], neutral_phrases())


def neutral_phrases() -> dict[str, str | None]:
  """category -> the phrase its neutral caption puts in place of the concept (None: dropped)."""
  return {c: ("a shape" if c == "shape" else world.NEUTRAL[c]) for c in world.CATEGORIES}


# Draws tried before a concept is taken to be short of captions: the world's large caption sets
# (hundreds) fill any request long before this, a named character's 20 are all seen by then.
MAX_DRAWS_PER_PROMPT = 64


def _split_pairs(category, concept, n_train, n_eval, seed):
  """(train, eval): n_train distinct pairs from `seed`, n_eval from seed + 1 not among them; where
  the world has fewer than n_train + n_eval, half of what it has in each split."""
  train = _distinct_pairs(category, concept, n_train, seed)
  fresh = train and _distinct_pairs(category, concept, n_eval, seed + 1, {p for p, _ in train})
  if fresh:
    return train, fresh
  count = len({p for s in (seed, seed + 1) for p, _ in world.prompt_pairs(
      category, concept, MAX_DRAWS_PER_PROMPT * max(n_train, n_eval), s, split="train")})
  half = count // 2
  train = _distinct_pairs(category, concept, min(n_train, half), seed)
  return train, _distinct_pairs(category, concept, min(n_eval, half), seed + 1,
                                {p for p, _ in train})


def _distinct_pairs(category, concept, n, seed, taken=frozenset()):
  """n distinct pairs drawn from `seed` whose prompt is not in `taken`; None if the world has
  fewer within MAX_DRAWS_PER_PROMPT * n draws."""
  drawn_n = 2 * n
  while True:
    # prompt_pairs is prefix-stable: asking for more only appends candidates.
    drawn = world.prompt_pairs(category, concept, drawn_n, seed, split="train")
    fresh = [pair for pair in dict.fromkeys(drawn) if pair[0] not in taken]
    if len(fresh) >= n:
      return fresh[:n]
    if drawn_n >= MAX_DRAWS_PER_PROMPT * n:
      return None
    drawn_n *= 2
