"""The exact verdict: top-K ranked among every K-block set (docs/design.md, "Exact verdict").

With 12 blocks there are 12 one-block, 66 two-block and 495 four-block sets: where C(n, K) is at
most config.exact_limit the sweep runs every one of them (sweep.plan_interventions; rows
with null="exact"), and the rank of top-K among them is an exact p-value. Above the limit the sweep
runs a sample of sets drawn without replacement (null="sampled") and p is estimated with its
Monte-Carlo standard error.

For one concept at one K, with d(S) the drop of set S (presence at K=0 minus presence with the
neutral text in S, mean over the concept's (prompt, seed) units):

    rank r = #{S : d(S) >= d(top)}   (top-K itself counts, and ties count against it)
    p = r / N                        (exact; sampled: (1 + #{drawn S >= top}) / (R + 1))

Under a placebo (top-K a uniformly random set) P(p <= a) <= a for every a, whatever the blocks
carry and however the images vary: the false-positive rate is at most the level, exactly.

Hypotheses are tested in a stated hierarchy (HIERARCHY), each level with its own correction:

1. primary, per K: all concepts whose presence floor holds, pooled by the sum of their ranks; its
   exact null is the sum of independent uniform ranks (a convolution of the enumerated
   distributions). Holm over the K grid: the chance of any "yes" in a run without knowledge is at
   most ALPHA.
2. category x K: the same rank sum over the category's concepts, tested where the primary at that K
   holds; Benjamini-Hochberg over the tested cells.
3. concept x K: the concept's own rank, tested where its category x K holds; Benjamini-Hochberg.

The interval printed beside each p is for the statistic that p tests: the share of sets that
remove at least as much as top-K (the rank percentile), bootstrapped over concepts, prompts and
seeds. Specificity is an equivalence test: top-K may disturb the rest of the image (the judge's
context) at most SPECIFICITY_MARGIN more than the neutral prompt everywhere, one-sided 95%.
NumPy only.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np

from dit_jax.verdict.sets import ALPHA, benjamini_hochberg, hierarchical_weights, measure, _floor

# Top-K may lower the judge's accuracy on the other categories at most this much more than the
# neutral prompt everywhere does (one image in ten), decided before any run.
SPECIFICITY_MARGIN = 0.10
EXACT_LIMIT = 500       # default config.exact_limit: C(12, 4) = 495 sets are enumerated
# Mean drops are compared on a grid of TIE (tie_level): drops in one step of it tie, and ties count
# against top-K. Presence is a probability: a set that changes nothing differs from another by
# float32 rounding (up to 2e-5 in the stored runs, where the judge is saturated near 1), and
# ranking by rounding called a concept that no set removes "localized" (replicate 1's solid at
# K = 1: first of 12 with a drop of 9e-7). 1e-3 is a thousandth of one image's presence. A grid, not
# a tolerance band: ties must be an equivalence (a band lets A tie B and B tie C but not A and C),
# or the tie-randomised placebo p-values are not uniform.
TIE = 1e-3


def tie_level(drops) -> np.ndarray:
  """Drops on the TIE grid: equal levels tie."""
  return np.round(np.asarray(drops, float) / TIE)

HIERARCHY = (
    "Hierarchy of hypotheses (each level tested only where the one above holds):\n"
    f"1. primary, per K: every present concept pooled (sum of exact ranks); Holm over the K grid, {ALPHA}.\n"
    f"2. category x K: the category's concepts pooled the same way; Benjamini-Hochberg, {ALPHA}.\n"
    f"3. concept x K: the concept's exact rank among all K-sets; Benjamini-Hochberg, {ALPHA}.\n"
    "A test that could not reach the level even at rank 1 (one concept among 12 one-block sets:\n"
    "p >= 1/12) is reported but left out of its level's correction (Tarone).\n"
    f"p = (sets removing at least as much as top-K, top-K included) / (all sets); mean drops are\n"
    f"compared on a grid of {TIE}: a set in top-K's step ties with it and counts against it.\n"
    "Replicates (other noise and prompts) are cells of their own, pooled at every level by the\n"
    "same rank sum.\n"
    "The interval beside p: the 95% bootstrap interval (concepts, prompts, seeds) of that share.\n"
    f"specific: top-K disturbs the rest of the image at most {SPECIFICITY_MARGIN} more than the\n"
    "neutral prompt everywhere (upper one-sided 95% bound). localized = present and removable and specific.")


def is_exact(num_blocks: int, k: int, limit: int) -> bool:
  """Whether every K-block set is swept: C(num_blocks, K) <= limit (limit 0: never)."""
  return 0 < k <= num_blocks and math.comb(num_blocks, k) <= limit


def all_sets(num_blocks: int, k: int) -> list[tuple[int, ...]]:
  """Every K-block set, in lexicographic order (a set's index is its draw number)."""
  return list(itertools.combinations(range(num_blocks), k))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
  """Holm-adjusted p-values (None stays None and does not count)."""
  tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
  adjusted: list[float | None] = [None] * len(p_values)
  running = 0.0
  for rank, (p, i) in enumerate(tested):
    running = max(running, min(1.0, p * (len(tested) - rank)))
    adjusted[i] = running
  return adjusted


class ConceptAtK:
  """One concept's sets at one K: per-unit drops of every swept set (sets x units), top-K's index
  among them, and whether the sets are all of them (exact) or a sample."""

  def __init__(self, concept: str, category: str, k: int, base: np.ndarray, top: dict,
               sets: Sequence[dict], exact: bool, neutral: dict | None, replicate: int = 0):
    self.concept, self.category, self.k, self.exact = concept, category, k, exact
    self.replicate = replicate
    self.seeds = int(top.get("seeds", 1))
    self.blocks = tuple(top["blocks"])
    self.set_blocks = [tuple(s["blocks"]) for s in sets]
    self.drops = np.stack([base - measure(s) for s in sets])        # (sets, units)
    self.top_drop = base - measure(top)
    self.top_context = np.asarray(top.get("context") or [], float)
    contexts = [np.asarray(s.get("context") or [], float) for s in sets]
    self.set_contexts = (np.stack(contexts) if all(c.size == base.size for c in contexts)
                         else None)                                   # (sets, units) or None
    self.neutral_context = np.asarray((neutral or {}).get("context") or [], float)

  @property
  def units(self) -> int:
    return self.drops.shape[1]

  def rank(self, weights: np.ndarray | None = None) -> np.ndarray:
    """Rank of top-K among the sets (sampled: among the draws and top-K itself), under unit
    weights (None: the observed mean; (B, units): one rank per bootstrap resample)."""
    w = np.full(self.units, 1.0 / self.units) if weights is None else weights
    top, sets = tie_level(self.top_drop @ w.T), tie_level(self.drops @ w.T)   # (...), (sets, ...)
    ahead = np.sum(sets >= top, axis=0)
    return ahead if self.exact else ahead + 1

  @property
  def size(self) -> int:
    """How many ranks are possible: every set (exact), or the draws and top-K (sampled)."""
    return len(self.set_blocks) + (0 if self.exact else 1)

  def p(self) -> float:
    return float(self.rank()) / self.size

  def monte_carlo_se(self) -> float | None:
    if self.exact:
      return None
    p = self.p()
    return float(math.sqrt(p * (1 - p) / len(self.set_blocks)))

  def best_sets(self, count: int = 3) -> list[tuple[tuple[int, ...], float]]:
    """The sets that remove the most, with their drops (the data's own answer to "which blocks")."""
    means = self.drops.mean(axis=1)
    order = np.argsort(-means, kind="stable")[:count]
    return [(self.set_blocks[i], float(means[i])) for i in order]


def concept_cells(rows: Sequence[dict]) -> list[ConceptAtK]:
  """A ConceptAtK for every concept and K whose random rows carry a null (row["null"]: "exact" or
  "sampled"; rows of runs before the exact verdict have none and are left to dit_jax/verdict/sets.py)."""
  original = {unit_of(r): r for r in rows if r["kind"] == "none"}
  neutral = {unit_of(r): r for r in rows if r["kind"] == "neutral"}
  groups: dict[tuple[str, int, int], dict] = {}
  for r in rows:
    if r["kind"] in ("top", "random") and r.get("window", "all") == "all":
      cell = groups.setdefault((*unit_of(r), r["k"]), {"top": None, "sets": []})
      if r["kind"] == "top":
        cell["top"] = r
      elif r.get("null") in ("exact", "sampled"):
        cell["sets"].append(r)
  cells = []
  for (concept, replicate, k), cell in groups.items():
    top, sets, unit = cell["top"], cell["sets"], (concept, replicate)
    if top is None or not sets or unit not in original or not measure(top).size:
      continue
    base = measure(original[unit])
    if any(measure(s).shape != base.shape for s in sets) or measure(top).shape != base.shape:
      continue
    exact = all(s["null"] == "exact" for s in sets)
    cells.append(ConceptAtK(concept, top["category"], k, base, top, sets, exact, neutral.get(unit),
                            replicate))
  return cells


def unit_of(row: dict) -> tuple[str, int]:
  """(concept, replicate): a replicate (another noise seed and prompt set, studies/
  localization_result.py --also) has its own original, neutral prompt, top-K and sets."""
  return row["concept"], int(row.get("replicate", 0))


def _weights(cells: Sequence[ConceptAtK]) -> np.ndarray:
  sizes = [(c.units // c.seeds, c.seeds) for c in cells]
  return hierarchical_weights(sizes)


def percentile_interval(cells: Sequence[ConceptAtK]) -> list[float]:
  """95% bootstrap interval of the mean over `cells` of the share of sets removing at least as
  much as top-K (concepts, then prompts, then seeds resampled): the statistic the rank sum tests."""
  weights = _weights(cells)
  offsets = np.cumsum([0] + [c.units for c in cells])
  share = np.zeros(weights.shape[0])
  for c, cell in enumerate(cells):
    w = weights[:, offsets[c]:offsets[c + 1]]
    mass = w.sum(axis=1)                       # the concept's weight in each resample
    picked = mass > 0
    within = np.zeros_like(w)
    within[picked] = w[picked] / mass[picked, None]
    ranks = np.zeros(weights.shape[0])
    ranks[picked] = cell.rank(within[picked])
    share += mass * ranks / cell.size
  low, high = np.percentile(share, [2.5, 97.5])
  return [float(low), float(high)]


def specificity(cells: Sequence[ConceptAtK]) -> dict | None:
  """Equivalence: top-K's damage to the rest of the image beyond the neutral prompt's is below
  SPECIFICITY_MARGIN (the upper one-sided 95% bound of the hierarchical bootstrap)."""
  if any(c.top_context.size != c.units or c.neutral_context.size != c.units for c in cells):
    return None
  excess = np.nan_to_num(np.concatenate([c.neutral_context - c.top_context for c in cells]), nan=0.0)
  uniform = np.concatenate([np.full(c.units, 1.0 / (len(cells) * c.units)) for c in cells])
  upper = float(np.percentile(_weights(cells) @ excess, 95))
  return {"excess_damage": float(uniform @ excess), "upper_95": upper,
          "margin": SPECIFICITY_MARGIN, "holds": bool(upper < SPECIFICITY_MARGIN)}


def floors(rows: Sequence[dict]) -> dict[str, dict]:
  """concept -> verdict's presence floor (the original above the neutral prompt and above chance);
  a second replicate's under "<concept> (replicate 2)" (floor_key)."""
  original = {unit_of(r): r for r in rows if r["kind"] == "none"}
  neutral = {unit_of(r): r for r in rows if r["kind"] == "neutral"}
  found = {}
  for unit, row in original.items():
    base = measure(row)
    if unit not in neutral or not base.size or measure(neutral[unit]).shape != base.shape:
      continue
    seeds = int(row.get("seeds", 1))
    weights = np.vstack([np.full(base.size, 1.0 / base.size),
                         hierarchical_weights([(base.size // seeds, seeds)])])
    found[floor_key(*unit)] = _floor(base, measure(neutral[unit]), [row.get("chance")], weights)
  return found


def floor_key(concept: str, replicate: int = 0) -> str:
  return concept if replicate == 0 else f"{concept} (replicate {replicate + 1})"


def is_present(present: dict, cell: "ConceptAtK") -> bool:
  return bool(present.get(floor_key(cell.concept, cell.replicate), {}).get("holds"))


def pooled_test(cells: Sequence[ConceptAtK]) -> dict:
  """The rank-sum test of a group of cells, with the interval of its statistic."""
  ranks = [int(c.rank()) for c in cells]
  sizes = [c.size for c in cells]
  share = float(np.mean([r / n for r, n in zip(ranks, sizes)]))
  return {"concepts": [c.concept for c in cells], "ranks": ranks, "sets": sizes,
          "share": share, "share_interval": percentile_interval(cells),
          "p": rank_sum_p(ranks, sizes), "exact": all(c.exact for c in cells),
          "monte_carlo_se": None if all(c.exact for c in cells) else
          float(np.sqrt(np.mean([c.monte_carlo_se() ** 2 for c in cells if not c.exact])))}


def rank_sum_cdf(sizes: Sequence[int]) -> np.ndarray:
  """cdf[j] = P(U_1 + ... + U_c <= j + c), per multiset of sizes."""
  return _rank_sum_cdf(tuple(sorted(int(n) for n in sizes)))


@functools.lru_cache(maxsize=None)
def _rank_sum_cdf(sizes: tuple[int, ...]) -> np.ndarray:
  """Cached: the placebo and power simulations ask for the same few thousands of times."""
  pmf = np.ones(1)
  for n in sizes:
    pmf = np.convolve(pmf, np.full(n, 1.0 / n))
  return np.minimum(np.cumsum(pmf), 1.0)


def rank_sum_p(ranks: Sequence[int], sizes: Sequence[int]) -> float:
  """P(U_1 + ... + U_c <= sum(ranks)) for independent U_i uniform on 1..sizes[i]: the exact null of
  the pooled statistic (ranks with ties counted against top-K are stochastically larger than
  uniform, so the test only gets more careful)."""
  return float(rank_sum_cdf(sizes)[int(sum(ranks)) - len(sizes)])


def hierarchy(keys: Sequence[tuple[str, str, int]], ranks: Sequence[int],
              sizes: Sequence[int]) -> dict:
  """The three levels (HIERARCHY) from the ranks of top-K alone: keys are (concept, category, K) of
  the cells whose concept is present; returns {"primary": {K: (p, p_adj, holds)}, "category":
  {(category, K): ...}, "concept": {(concept, K): ...}} with p_adj None where a cell is not tested.
  One function for the run's verdict and for every simulated placebo or effect."""
  def pooled(members):
    return rank_sum_p([ranks[i] for i in members], [sizes[i] for i in members])

  def can_pass(members):
    """Whether the test could reach ALPHA at all (every rank 1): one that cannot is left out of
    its level's correction (Tarone), so that it does not dilute the tests that can."""
    return rank_sum_p([1] * len(members), [sizes[i] for i in members]) < ALPHA
  ks = sorted({k for _, _, k in keys})
  at_k = [[i for i, key in enumerate(keys) if key[2] == k] for k in ks]
  primary_p = [pooled(m) for m in at_k]
  adjusted = holm([p if can_pass(m) else None for p, m in zip(primary_p, at_k)])
  primary = {k: (p, a, a is not None and a < ALPHA) for k, p, a in zip(ks, primary_p, adjusted)}
  groups, members = _grouped(keys, lambda key: (key[1], key[2]))
  group_p = [pooled(m) for m in members]
  adjusted = benjamini_hochberg([p if primary[g[1]][2] and can_pass(m) else None
                                 for g, p, m in zip(groups, group_p, members)])
  category = {g: (p, a, a is not None and a < ALPHA) for g, p, a in zip(groups, group_p, adjusted)}
  # A concept's replicates are pooled like a category's concepts (one cell: its rank / sets).
  cells, members = _grouped(keys, lambda key: key)
  cell_p = [pooled(m) for m in members]
  adjusted = benjamini_hochberg([p if category[(key[1], key[2])][2] and can_pass(m) else None
                                 for key, p, m in zip(cells, cell_p, members)])
  concept = {(key[0], key[2]): (p, a, a is not None and a < ALPHA)
             for key, p, a in zip(cells, cell_p, adjusted)}
  return {"primary": primary, "category": category, "concept": concept}


def _grouped(keys, group_of) -> tuple[list, list[list[int]]]:
  """The groups of `keys` in order of first appearance, and each group's indices (one pass: the
  placebo simulation asks for every run)."""
  found: dict = {}
  for i, key in enumerate(keys):
    found.setdefault(group_of(key), []).append(i)
  return list(found), list(found.values())


def decide(rows: Sequence[dict]) -> dict | None:
  """The whole hierarchy of a run's rows: {"primary", "category", "concept"} lists of cells, each
  with p, its adjusted p (None: not tested), the interval of its statistic and the verdict; None
  where the rows carry no exact or sampled null (an older run: dit_jax/verdict/sets.py decides)."""
  cells = concept_cells(rows)
  if not cells:
    return None
  present = floors(rows)
  counted = [c for c in cells if is_present(present, c)]
  levels = hierarchy([(c.concept, c.category, c.k) for c in counted],
                     [int(c.rank()) for c in counted], [c.size for c in counted])
  result = {"alpha": ALPHA, "rule": HIERARCHY, "floors": present, "primary": [], "category": [],
            "concept": []}
  for k in sorted({c.k for c in cells}):
    members = [c for c in counted if c.k == k]
    p, adjusted, holds = levels["primary"].get(k, (None, None, False))
    result["primary"].append({"k": k, **(pooled_test(members) if members else {"concepts": []}),
                              "p": p, "p_adjusted": adjusted, "holds": holds,
                              "correction": "holm over K"})
  for (category, k), (p, adjusted, holds) in levels["category"].items():
    members = [c for c in counted if (c.category, c.k) == (category, k)]
    spec = specificity(members)
    result["category"].append({"category": category, "k": k, **pooled_test(members),
                               "tested": adjusted is not None, "p_adjusted": adjusted,
                               "holds": holds, "removable": holds,
                               "correction": "benjamini-hochberg over tested cells",
                               "specificity": spec,
                               "localized": bool(holds and (spec is None or spec["holds"]))})
  for c in cells:
    p, adjusted, holds = levels["concept"].get((c.concept, c.k), (c.p(), None, False))
    spec = specificity([c])
    present_here = is_present(present, c)
    test = pooled_test([c])
    result["concept"].append({
        "concept": c.concept, "category": c.category, "k": c.k, "blocks": list(c.blocks),
        "replicate": c.replicate, "present": present_here, **test, "p": p, "p_adjusted": adjusted,
        "tested": adjusted is not None, "removable": holds,
        "correction": "benjamini-hochberg over tested cells",
        "localized": None if not present_here else bool(holds and (spec is None or spec["holds"])),
        "specificity": spec, "top_drop": float(c.top_drop.mean()),
        "set_drop_mean": float(c.drops.mean()),
        "best_sets": [[list(b), d] for b, d in c.best_sets()],
        "less_than_sets": bool(test["share_interval"][0] > 0.5)})
  return result


def localized_effects(result: dict) -> list[float]:
  """Per localized category x K cell, top-K's drop minus the mean set's, averaged over the cell's
  present concepts (and replicates): the effect `simulate` plants to measure power."""
  effects = []
  for cell in result["category"]:
    if cell["localized"]:
      members = [e["top_drop"] - e["set_drop_mean"] for e in result["concept"]
                 if (e["category"], e["k"]) == (cell["category"], cell["k"]) and e["present"]]
      effects.append(float(np.mean(members)))
  return effects


def answer(result: dict) -> list[str]:
  """The run's answer in words: per K the primary test; for every concept its top-K blocks at each
  K, what the hierarchy says about them and why (the level that stopped it, or the smallest p its
  sets allow)."""
  lines = []
  for e in result["primary"]:
    if e["p"] is None:
      lines.append(f"K={e['k']}: no concept is present above the neutral prompt; nothing to test.")
      continue
    said = ("top-K ranks above chance among the K-sets" if e["holds"] else
            "no evidence that top-K ranks above chance among the K-sets")
    cells = len(e["concepts"]) - len(set(e["concepts"]))     # the replicates' extra cells
    pooled = f"{len(e['concepts'])} concepts" if not cells else \
        f"{len(set(e['concepts']))} concepts in {len(e['concepts'])} replicate cells"
    lines.append(f"K={e['k']}: {said} (primary test, {pooled} pooled: "
                 f"p={_p(e['p'])}, Holm-adjusted {_p(e['p_adjusted'])}).")
  primary = {e["k"]: e for e in result["primary"]}
  category = {(e["category"], e["k"]): e for e in result["category"]}
  by_concept: dict[str, list[dict]] = {}
  for e in result["concept"]:
    by_concept.setdefault(e["concept"], []).append(e)
  for concept, entries in by_concept.items():
    if not entries[0]["present"]:
      lines.append(f"{concept}: not present in the original images (presence floor): no verdict.")
      continue
    parts = [_cell_words(e, primary[e["k"]], category.get((e["category"], e["k"])))
             for e in sorted(entries, key=lambda e: e["k"])]
    lines.append(f"{concept}: " + "; ".join(parts) + ".")
  return lines


def _cell_words(e: dict, primary: dict, category: dict | None) -> str:
  blocks = "{" + ", ".join(map(str, e["blocks"])) + "}"
  rank = f"rank {e['ranks'][0]} of {e['sets'][0]}" + ("" if e["exact"] else " sampled sets")
  floor = 1 / e["sets"][0]
  if e["localized"]:
    word = "localized"
  elif e["removable"]:
    word = "removable but not specific (disturbs the rest of the image)"
  elif e["tested"]:
    word = f"not removable (adjusted p={_p(e['p_adjusted'])})"
  elif category is not None and category["tested"]:
    word = f"not removable: its category's test p={_p(category['p'])}, adjusted {_p(category['p_adjusted'])}"
  elif not primary["holds"]:
    word = "not tested: the primary test at this K does not hold"
  else:
    word = "not tested"
  if not e["removable"] and floor >= ALPHA:
    word += (f"; with {e['sets'][0]} sets one concept's p cannot go below {floor:.3f} (more "
             "concepts per category can)")
  if e["less_than_sets"]:
    word += "; top-K removes less than most K-sets"
  best = e["best_sets"][0]
  if list(best[0]) != e["blocks"] and not e["removable"]:
    word += f"; the set removing most is {{{', '.join(map(str, best[0]))}}} ({best[1]:+.2f})"
  return f"K={e['k']} top {blocks}: {word} ({rank}, p={_p(e['p'])}, drop {e['top_drop']:+.2f})"


def _p(p: float | None) -> str:
  return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def apply(entries: list[dict], result: dict, by: str) -> None:
  """Give summary.summarize's entries (per category or concept, and K) the exact hierarchy's p,
  adjusted p and verdicts, so every table of a run says what the hierarchy says."""
  level = {(e[by], e["k"]): e for e in result[by]}
  for entry in entries:
    found = level.get((entry[by], entry["k"]))
    removal = (entry.get("tests") or {}).get("removal")
    if found is None:    # no concept of the group is present: nothing to decide
      entry.update(p_removal_adjusted=None, removable=None, localized=None)
      continue
    if removal is not None:
      removal.update(p=found["p"], exact=found["exact"], share=found["share"],
                     share_interval=found["share_interval"])
    entry.update(p_set=found["p"], p_removal_adjusted=found["p_adjusted"],
                 removable=found["removable"], localized=found["localized"])


def _set_specific(cell: ConceptAtK) -> np.ndarray:
  """Per set: would the specificity test hold were it top-K (all True where the judge has no
  context). The same bootstrap as `specificity`, for every set at once."""
  if cell.set_contexts is None or cell.neutral_context.size != cell.units:
    return np.ones(len(cell.set_blocks), bool)
  excess = np.nan_to_num(cell.neutral_context[None] - cell.set_contexts, nan=0.0)   # (sets, units)
  upper = np.percentile(_weights([cell]) @ excess.T, 95, axis=0)
  return upper < SPECIFICITY_MARGIN


def present_cells(rows: Sequence[dict]) -> list[ConceptAtK]:
  """The cells of the concepts whose presence floor holds: the ones the hierarchy tests."""
  present = floors(rows)
  return [c for c in concept_cells(rows) if is_present(present, c)]


def simulate(rows: Sequence[dict], runs: int, effect: float = 0.0, seed: int = 0,
             p_values: bool = False) -> dict:
  """What the hierarchy says when every present concept's top-K is a uniformly random K-set:
  effect 0 is a placebo (every "yes" is false); a positive effect plants one (every "yes" is
  found): the set's drop becomes the mean set's plus `effect`, the other sets as they are.
  Re-ranks the run's swept sets; computes no image. Returns per-run and per-cell counts of
  removable and localized; with p_values, every cell's p and its tie-randomised twin too."""
  cells = present_cells(rows)
  if not cells:
    return {"runs": 0}
  rng = np.random.default_rng(seed)
  keys = [(c.concept, c.category, c.k) for c in cells]
  sizes = [c.size for c in cells]
  means = [c.drops.mean(axis=1) for c in cells]
  levels = [tie_level(m) for m in means]
  ordered = [np.sort(q) for q in levels]
  specific = [_set_specific(c) for c in cells]
  picks = np.stack([rng.integers(0, len(m), runs) for m in means])          # (cells, runs)
  ranks = np.empty_like(picks)
  randomised = np.empty(picks.shape)
  for i, (m, q, o) in enumerate(zip(means, levels, ordered)):
    # A planted effect: the picked set removes `effect` more than the mean set does (the verdict
    # tables' "top-null"); a placebo: the picked set as it is.
    own = q[picks[i]]
    target = own if effect == 0 else np.full(runs, tie_level(m.mean() + effect))
    ahead = len(o) - np.searchsorted(o, target, side="left") - (own >= target)
    beyond = len(o) - np.searchsorted(o, target, side="right") - (own > target)
    extra = 0 if cells[i].exact else 1                                         # the draws + top-K
    ranks[i] = ahead + 1 + extra
    # The same rank with its ties (itself included) split at random: exactly uniform under a
    # placebo, for a goodness-of-fit check of the null (the verdict uses the careful rank).
    randomised[i] = (beyond + extra + rng.uniform(size=runs) * (ahead - beyond + 1)) / sizes[i]
  counts = {"removable": [], "localized": []}
  found = []
  for run in range(runs):
    levels = hierarchy(keys, [int(r) for r in ranks[:, run]], sizes)
    removable = [levels["concept"][(c.concept, c.k)][2] for c in cells]
    localized = [r and bool(specific[i][picks[i, run]]) for i, r in enumerate(removable)]
    counts["removable"].append(sum(removable))
    counts["localized"].append(sum(localized))
    found += [levels["concept"][(c.concept, c.k)][0] for c in cells]
  result = {"runs": runs, "effect": effect, "cells_per_run": len(cells),
            **{flag: {"runs_with_any": int(np.sum(np.asarray(v) > 0)),
                      "positive_cells": int(np.sum(v))} for flag, v in counts.items()}}
  if p_values:
    result.update(p_values=found, randomised_p_values=randomised.T.ravel().tolist())
  return result


def power_of_ranking(rows: Sequence[dict], resamples: int = 200) -> dict | None:
  """The rate of "yes" under the run's own ranking when its images are resampled (concepts'
  prompts and seeds, hierarchical bootstrap): how often the same answer comes back."""
  cells = present_cells(rows)
  if not cells:
    return None
  keys = [(c.concept, c.category, c.k) for c in cells]
  sizes = [c.size for c in cells]
  per_cell = []
  for i, c in enumerate(cells):
    sample = hierarchical_weights([(c.units // c.seeds, c.seeds)], resamples, seed=i)
    per_cell.append(c.rank(sample))
  found = np.zeros(len(cells))
  any_yes = 0
  for b in range(resamples):
    levels = hierarchy(keys, [int(r[b]) for r in per_cell], sizes)
    flags = np.array([levels["concept"][(c.concept, c.k)][2] for c in cells])
    found += flags
    any_yes += bool(flags.any())
  return {"resamples": resamples, "runs_with_any": any_yes,
          "cells": {f"{c.concept} K={c.k}": float(f / resamples) for c, f in zip(cells, found)}}
