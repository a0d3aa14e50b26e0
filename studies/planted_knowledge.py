"""Planted knowledge: does localization find the blocks that were taught a new concept?

    python -m studies.planted_knowledge                       # every planting, resumable
    python -m studies.planted_knowledge --only single-4,late-9-11
    python -m studies.planted_knowledge --methods blocks mlp  # the old weight-restricted rows
    python -m studies.planted_knowledge --rescore             # the summary again from the units
    python -m studies.planted_knowledge --preset tiny --out /tmp/p --units /tmp/p/units

Each planting teaches the shipped Shapes model a new character under a reserved name (DreamBooth
with prior preservation, configs/shapes_personalize.py) so that we know where it lives:

  confined  (the ground truth) every weight of every block trains, but the training captions reach
            only the planted blocks' cross-attention; every other block reads the caption with "a
            character" in the name's place (config.confine_text_to, docs/design.md "Planted
            knowledge"). The name can only act through the planted blocks, by the architecture,
            whichever weights change: "which blocks' weights changed most" is a baseline here, not
            the answer.
  blocks    only the planted blocks' weights train (the old benchmark): partly circular, since the
            cross-attention the attention score reads is among them.
  mlp       only the planted blocks' feed-forward trains: weights the score does not read.

Then every localizer (dit_jax/localizers) ranks the blocks for the name on the fine-tuned model,
and precision@|set| (the share of its top-|set| blocks that are planted) is reported per localizer
with a bootstrap interval over the plantings that took, beside two baselines: the blocks whose
weights changed most (relative L2 change per block) and a random ranking (expected |set| / 12).
A planting counts only when it took (LOOK_FLOOR). A causal check withholds the name from the
planted blocks, from the found blocks and from random sets of as many other blocks.

Each planting is one unit: a JSON in --units, written when it finishes and skipped on a rerun (its
training resumes from its checkpoints in --out). The summary is results/planted_knowledge.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

import jax
import numpy as np

from studies import paired
from studies.paired import cell
from benchmarks.timing import write_result
from dit_jax.verdict import summary as summary_lib
from dit_jax import files, blocks
from dit_jax.localize import judges, localizers, sweep
from dit_jax.knowledge import PromptPair
from dit_jax.shapes import ASSETS, tasks, world


@dataclasses.dataclass(frozen=True)
class Planting:
  label: str                  # the unit's name
  kind: str                   # single block, contiguous, spread, early, late, distributed, redundant
  blocks: tuple[int, ...]
  name: str                   # a reserved name (world.RESERVED_NAMES): its look is fixed per name
  seed: int
  method: str = "confined"


# Fixed before the first confined run (2026-12-04), every kind the issue asks for; a name appears
# twice only with another seed and other blocks.
PLANTINGS = (
    Planting("single-4", "single block", (4,), "quib", 0),
    Planting("single-8", "single block", (8,), "vexa", 0),
    Planting("contiguous-3-5", "contiguous", (3, 4, 5), "nolo", 0),
    Planting("contiguous-6-8", "contiguous", (6, 7, 8), "pim", 0),
    Planting("spread-1-5-9", "spread", (1, 5, 9), "raxo", 0),
    Planting("spread-2-6-10", "spread", (2, 6, 10), "sulu", 0),
    Planting("early-0-2", "early", (0, 1, 2), "dobi", 0),
    Planting("late-9-11", "late", (9, 10, 11), "wren", 0),
    Planting("distributed-even", "distributed", (0, 2, 4, 6, 8, 10), "quib", 1),
    Planting("redundant-2-3-8-9", "redundant", (2, 3, 8, 9), "nolo", 1),
    Planting("single-10", "single block", (10,), "pim", 1),
    Planting("spread-0-6-11", "spread", (0, 6, 11), "raxo", 1),
)
# The old benchmark's plantings (whole blocks; feed-forward alone), kept as named rows.
OLD_SETS = (((1, 5, 9), "quib", 0), ((2, 6, 10), "vexa", 1), ((0, 4, 7), "nolo", 2))
OLD_PLANTINGS = tuple(Planting(f"{method}-{name}", "spread", blocks, name, seed, method)
                      for method in ("blocks", "mlp") for blocks, name, seed in OLD_SETS)
METHODS = {"confined": "", "blocks": "", "mlp": "ff"}     # method -> config.block_parts

# A planting counts when the fine-tuned model draws the character's whole look (shape, colour and
# texture, judged) in at least this share of 32 images: as reliably as the shipped model draws the
# weakest of its own pretrained characters (0.25 for zork and kiki; chance is 1/144). Set on the
# model before this one, and not changed after any result of the confined plantings existed.
LOOK_FLOOR = 0.25
# The tiny presets' fine-tuning (here and studies/planted_weights.py): a harness check on 2 images
# and 2 class images, without the fixed-batch loss nothing of a tiny run reads.
TINY_TRAIN = dict(num_images=2, num_prior_images=2, batch_size=2, warmup_steps=0, fixed_batch_loss=False)
PRESETS = {   # tiny: checks the harness in a minute on a CPU, measures nothing
    "full": dict(steps=600, mlp_steps=1500, learning_rate=1e-3, prompts=16, look_images=32,
                 causal_prompts=16, causal_seeds=2, random_draws=10, chunk=4, sample_steps=20),
    "tiny": dict(steps=2, mlp_steps=2, learning_rate=1e-3, prompts=2, look_images=4,
                 causal_prompts=2, causal_seeds=1, random_draws=2, chunk=4, sample_steps=4,
                 train=TINY_TRAIN),
}
# Ranking sources besides the localizers: the blocks whose weights changed most, and chance.
WEIGHT_CHANGE, RANDOM = "weight change (baseline)", "random ranking (baseline)"


def block_scores(gen, name: str, num_prompts: int, seeds=(0, 1)) -> np.ndarray:
  prompts = [world.caption(s) for s in world.planted_scenes(name, num_prompts, seed=200)]
  scores = sweep.concept_scores(gen.pipe, prompts, [name] * len(prompts), seeds, (32, 32),
                                       batch_size=16)
  return scores[..., 0].mean(axis=(0, 1))     # with_wo, mean over prompts x seeds and steps


class PlantedLook(judges.Judge):
  """Presence of the planted `name`: the judge's probability of its shape x colour x texture."""

  def __init__(self, gen, name: str):
    super().__init__()
    self.gen, self.look = gen, world.planted_look(name)

  def _presence(self, images, pairs):
    heads = self.gen.judge.predictions(images)
    probs = [heads[c].probs[:, world.JUDGE_CLASSES[c].index(v)]
             for c, v in zip(("shape", "colour", "texture"), self.look)]
    return np.prod(probs, axis=0)


def localizer_scores(gen, name: str, num_prompts: int, chunk: int, seeds=(0, 1)) -> dict:
  """label -> per-block scores of every localizer for the planted `name`, on block_scores' prompts
  and seeds (the neutral "a character" in the name's place)."""
  scenes = world.planted_scenes(name, num_prompts, seed=200)
  pairs = [PromptPair(world.caption(s), world.caption(s, ("character",)), name, "character")
           for s in scenes]
  judge = PlantedLook(gen, name)
  out = {}
  for localizer in localizers.names():
    record = localizers.get(localizer).score(gen.pipe, pairs, list(seeds), (32, 32), 16,
                                             judge=judge, chunk=chunk)
    out.update(localizers.named_scores(localizer, record.to_dict()))
  return out


def weight_change(base: dict, tuned: dict, num_blocks: int) -> list[float]:
  """Per block, ||tuned - base|| / ||base|| over all of the block's weights (Flax param trees,
  blocks named transformer_blocks.<i>)."""
  out = []
  for b in range(num_blocks):
    name = f"transformer_blocks.{b}"
    if name not in base:
      raise ValueError(f"no weights named {name} in the checkpoint")
    pairs = zip(jax.tree_util.tree_leaves(base[name]), jax.tree_util.tree_leaves(tuned[name]))
    diff, norm = 0.0, 0.0
    for a, t in pairs:
      a, t = np.asarray(a, np.float64), np.asarray(t, np.float64)
      diff, norm = diff + np.sum((t - a) ** 2), norm + np.sum(a ** 2)
    out.append(float(np.sqrt(diff / norm)))
  return out


def precision(block_scores, planted) -> float:
  top = blocks.rank_blocks(np.asarray(block_scores))[:len(planted)]
  return len(set(top.tolist()) & set(planted)) / len(planted)


def causal_check(gen, name: str, planted, found, num_prompts: int, num_seeds: int, draws: int,
                 seed: int) -> dict:
  """Look accuracy of the planted character with its name withheld (the neutral "a character" in
  its place) from the planted blocks, from the found blocks and from random sets outside the
  planted ones; "original": withheld nowhere. Prompts x noise seeds; the same noise for every
  intervention."""
  # The look accuracy's scenes: how often the character is drawn depends much on the prompt's
  # position and place, so "original" here is measured on the prompts that decided whether it counts.
  scenes = world.planted_scenes(name, num_prompts, seed=100)
  prompts = [world.caption(s) for s in scenes]
  neutral = [world.caption(s, ("character",)) for s in scenes]
  n, k = gen.pipe.module.config.num_blocks, len(planted)
  others = [b for b in range(n) if b not in planted]
  ranking = np.array(list(planted) + others)       # "outside the top-k" = outside the planted set
  sets = (sweep.draw_random_sets(ranking, k, draws, sweep.concept_seed(seed, name),
                                        overlap=False) if len(others) >= k else [])
  plan = [sweep.Intervention("none", 0, ()),
          sweep.Intervention("top", k, tuple(sorted(planted))),
          sweep.Intervention("top", k, tuple(sorted(found)), draw=1)]
  plan += [sweep.Intervention("random", k, s, d) for d, s in enumerate(sets)]
  images = sweep.run_interventions(gen.pipe, prompts, neutral, list(range(num_seeds)),
                                          (32, 32), plan, chunk=8)
  look = [float(np.mean(gen.look_hits(imgs, name))) for imgs in images]
  return {"original": look[0], "planted": look[1], "found": look[2], "random": look[3:],
          "random_blocks": [list(s) for s in sets], "images": num_prompts * num_seeds}


# ------------------------------------------------------------------------------------ one unit
def train_planting(p: Planting, preset: dict, out: str) -> str:
  """Fine-tune the shipped model to draw p.name the way p.method plants it; its workdir."""
  steps = preset["mlp_steps" if p.method == "mlp" else "steps"]
  workdir = os.path.join(out, f"{p.label}_steps{steps}")
  blocks = ",".join(map(str, p.blocks))
  overrides = dict(concept=p.name, seed=p.seed, learning_rate=preset["learning_rate"],
                   block_parts=METHODS[p.method])
  if p.method == "confined":
    overrides["confine_text_to"] = blocks
    blocks = "all"
  tasks.run_finetune(tasks.personalize_config(), workdir, blocks, steps,
                     **overrides, **preset.get("train", {}))
  return workdir


def measure_planting(gen, p: Planting, preset: dict, out: str, base_scores: np.ndarray) -> dict:
  from dit_jax.pipeline import loading
  workdir = train_planting(p, preset, out)
  tuned_folder = os.path.join(workdir, "transformer")
  gen.use(tuned_folder)
  tuned = block_scores(gen, p.name, preset["prompts"])
  found = blocks.rank_blocks(tuned)[:len(p.blocks)].tolist()
  n = gen.pipe.module.config.num_blocks
  return {**dataclasses.asdict(p), "planted_blocks": list(p.blocks), "workdir": workdir,
          "steps": preset["mlp_steps" if p.method == "mlp" else "steps"],
          "learning_rate": preset["learning_rate"],
          "look_accuracy": gen.look_accuracy(p.name), "scores": tuned.tolist(),
          "base_scores": base_scores.tolist(),
          "weight_change": weight_change(loading.load(str(ASSETS), "pixart")[1],
                                         loading.load(tuned_folder, "pixart")[1], n),
          "localizer_scores": localizer_scores(gen, p.name, preset["prompts"], preset["chunk"]),
          "causal": causal_check(gen, p.name, p.blocks, found, preset["causal_prompts"],
                                 preset["causal_seeds"], preset["random_draws"], p.seed)}


# ------------------------------------------------------------------------------------ summary
def score_row(r: dict, look_floor: float, num_blocks: int = 12) -> None:
  """The row's derived numbers: precision of every ranking source, whether it counts, the causal
  verdict."""
  tuned, base = np.asarray(r["scores"]), np.asarray(r["base_scores"])
  planted = r["planted_blocks"]
  r["top_blocks"] = sorted(blocks.rank_blocks(tuned)[:len(planted)].tolist())
  r["precision"] = precision(tuned, planted)
  r["base_model_precision"] = precision(base, planted)
  r["change_precision"] = precision(tuned - base, planted)
  r["counted"] = bool(r["look_accuracy"] >= look_floor)
  sources = dict(r.get("localizer_scores", {}))
  if "weight_change" in r:
    sources[WEIGHT_CHANGE] = r["weight_change"]
  r["localizer_precision"] = {label: precision(s, planted) for label, s in sources.items()}
  r["localizer_precision"][RANDOM] = len(planted) / num_blocks     # the expected share
  causal = r.get("causal")
  if not causal:
    r["causal_holds"] = None
    return
  r["causal_drop_planted"] = causal["original"] - causal["planted"]
  r["causal_drop_random"] = (float(np.mean([causal["original"] - x for x in causal["random"]]))
                             if causal["random"] else None)
  # The planting is where we put it when withholding the name there removes the look and
  # withholding it from as many other blocks removes at most half as much.
  r["causal_holds"] = bool(r["causal_drop_planted"] >= summary_lib.MIN_TOP_DROP
                           and r["causal_drop_planted"] >= 2 * (r["causal_drop_random"] or 0.0))


def summarize(rows: list[dict], look_floor: float = LOOK_FLOOR) -> dict:
  """method -> sets, counted (planting took), and per ranking source the mean precision@|set|
  over counted sets with a bootstrap 95 % interval over sets; each localizer minus each baseline,
  paired by planting (paired.difference: the exact sign-flip interval); causal holds over counted
  sets."""
  for r in rows:
    score_row(r, look_floor)
  out = {}
  for method in dict.fromkeys(r.get("method", "blocks") for r in rows):
    mine = [r for r in rows if r.get("method", "blocks") == method]
    counted = [r for r in mine if r["counted"]]
    labels = dict.fromkeys(label for r in counted for label in r["localizer_precision"])
    by_source = {}
    for label in labels:
      values = [r["localizer_precision"][label] for r in counted if label in r["localizer_precision"]]
      by_source[label] = {"mean": float(np.mean(values)), "sets": len(values),
                          "interval": paired.interval(values)}
    versus = {label: {baseline: paired.difference(
        [r["localizer_precision"][label] for r in both], [r["localizer_precision"][baseline] for r in both])
        for baseline in (RANDOM, WEIGHT_CHANGE) if baseline in labels
        for both in [[r for r in counted if {label, baseline} <= r["localizer_precision"].keys()]]}
        for label in labels if label not in (RANDOM, WEIGHT_CHANGE)}
    out[method] = {"sets": len(mine), "counted": len(counted), "look_floor": look_floor,
                   "versus_baselines": versus,
                   "not_counted": [r["label"] if "label" in r else r["name"] for r in mine
                                   if not r["counted"]],
                   "precision": by_source,
                   "causal_checked": sum(r["causal_holds"] is not None for r in counted),
                   "causal_holds": sum(bool(r["causal_holds"]) for r in counted)}
  return out


def fmt(v) -> str:
  return "-" if v is None else f"{v:.2f}"


def table(result: dict) -> str:
  """The summary as markdown: one row per method, one column per ranking source."""
  lines = []
  for method, s in result["summary"].items():
    lines.append(f"**{method}**: {s['counted']} of {s['sets']} plantings took (look >= "
                 f"{s['look_floor']}); the causal check holds in {s['causal_holds']} of "
                 f"{s['causal_checked']} of them.")
    if s["precision"]:
      lines += ["", "| ranking | precision@\\|set\\| | 95 % interval over plantings | minus random "
                "ranking, paired | minus weight change, paired |", "|---|---|---|---|---|"]
      for label, p in sorted(s["precision"].items(), key=lambda kv: -kv[1]["mean"]):
        interval = (f"n = {p['sets']}" if p["sets"] < paired.MIN_PAIRS else "-" if p["interval"] is None
                    else f"[{p['interval'][0]:.2f}, {p['interval'][1]:.2f}]")
        versus = s.get("versus_baselines", {}).get(label, {})
        minus = [cell(versus[b]) if b in versus else "-" for b in (RANDOM, WEIGHT_CHANGE)]
        lines.append(f"| {label} | {p['mean']:.2f} | {interval} | {minus[0]} | {minus[1]} |")
    lines.append("")
  return "\n".join(lines)


def claims(summary: dict) -> str:
  """What the plantings that took support, per method, in words that follow the paired verdicts
  (studies/paired.py): a localizer "finds the planted blocks" only where its precision is
  higher than both the random ranking's and the weight-change baseline's."""
  out = []
  for method, s in summary.items():
    found, beats_random, unsaid = [], [], []
    for label, rows in s["versus_baselines"].items():
      verdicts = {b: paired.verdict(row) for b, row in rows.items()}
      if verdicts and all(v == "higher" for v in verdicts.values()):
        found.append(label)
      elif verdicts.get(RANDOM) == "higher":
        beats_random.append(label)
      elif any(v not in ("higher", "lower", "no difference shown") for v in verdicts.values()):
        unsaid.append(label)
    pairs = max((row["pairs"] for rows in s["versus_baselines"].values() for row in rows.values()),
                default=0)
    parts = [f"**{method}** ({s['counted']} of {s['sets']} plantings took, {pairs} paired):"]
    if found:
      parts.append("Above both baselines (paired intervals exclude 0): " + ", ".join(found) + ".")
    if beats_random:
      parts.append("Above the random ranking only: " + ", ".join(beats_random) + ".")
    rest = [l for l in s["versus_baselines"] if l not in found + beats_random + unsaid]
    if rest:
      parts.append("Not shown above the random ranking: " + ", ".join(rest) + ".")
    if unsaid:
      parts.append(f"Not yet said (fewer than {paired.MIN_PAIRS} plantings or no interval): "
                   + ", ".join(unsaid) + ".")
    if s["not_counted"]:
      parts.append("Says nothing about the plantings that did not take: " + ", ".join(s["not_counted"]) + ".")
    out.append(" ".join(parts))
  return "\n\n".join(out)


def report(rows: list[dict], path: str, settings: dict) -> dict:
  result = {**settings, "look_floor": LOOK_FLOOR, "sets": rows,
            "summary": summarize(rows, LOOK_FLOOR)}
  write_result(path, result)
  print(f"{'label':18} {'method':8} {'planted':>17} {'found':>17} {'look':>5} {'counts':>6} "
        f"{'attn':>5} {'w-chg':>5} {'none':>5} {'plant':>5} {'rand':>5} {'causal':>6}")
  for r in rows:
    c = r.get("causal") or {}
    print(f"{r.get('label', r['name']):18} {r.get('method', 'blocks'):8} "
          f"{str(r['planted_blocks']):>17} {str(r['top_blocks']):>17} {r['look_accuracy']:5.2f} "
          f"{str(r['counted']):>6} {r['precision']:5.2f} "
          f"{fmt(r['localizer_precision'].get(WEIGHT_CHANGE)):>5} {fmt(c.get('original')):>5} "
          f"{fmt(c.get('planted')):>5} {fmt(np.mean(c['random']) if c.get('random') else None):>5} "
          f"{str(r['causal_holds']):>6}")
  print(table(result))
  return result


def old_rows(path: str) -> list[dict]:
  """The old benchmark's stored rows (method "blocks", no unit files): kept as they came out."""
  if not os.path.exists(path):
    return []
  rows = [r for r in files.read_json(path).get("sets", []) if r.get("variant") or r.get("method")]
  return [{**r, "method": r.get("method") or r["variant"],
           "label": r.get("label") or f"{r.get('method') or r['variant']}-{r['name']}"} for r in rows]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/planted", help="training workdirs (resumable)")
  parser.add_argument("--units", default="results/planted_runs",
                      help="one JSON per finished planting; a planting with one here is skipped")
  parser.add_argument("--result", default="results/planted_knowledge.json")
  parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
  parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["confined"])
  parser.add_argument("--only", default="", help="comma list of planting labels")
  parser.add_argument("--rescore", action="store_true", help="no training: the summary from the units")
  args = parser.parse_args(argv)
  preset = PRESETS[args.preset]
  plantings = [p for p in PLANTINGS + OLD_PLANTINGS if p.method in args.methods]
  if args.only:
    wanted = set(args.only.split(","))
    if unknown := wanted - {p.label for p in PLANTINGS + OLD_PLANTINGS}:
      parser.error(f"unknown plantings {sorted(unknown)}: see PLANTINGS in {__file__}")
    plantings = [p for p in plantings if p.label in wanted]
  unit = lambda p: os.path.join(args.units, f"{p.label}.json")
  if not args.rescore:
    todo = [p for p in plantings if not os.path.exists(unit(p))]
    print(f"{len(plantings) - len(todo)} of {len(plantings)} plantings already measured in {args.units}")
    if todo:
      from dit_jax.shapes.finetune_eval import Generator
      gen = Generator(str(ASSETS), num=preset["look_images"], steps=preset["sample_steps"])
      base = {}
      for i, p in enumerate(todo):
        print(f"[planted] {i + 1}/{len(todo)}: {p.label} ({p.method}, blocks {list(p.blocks)}, {p.name})",
              flush=True)
        if p.name not in base:
          gen.use(None)
          base[p.name] = block_scores(gen, p.name, preset["prompts"])
        files.write_json(unit(p), measure_planting(gen, p, preset, args.out, base[p.name]))
  known = {p.label for p in PLANTINGS + OLD_PLANTINGS}
  rows = [files.read_json(os.path.join(args.units, f)) for f in sorted(os.listdir(args.units))
          if f.endswith(".json") and f[:-5] in known] if os.path.isdir(args.units) else []
  stored_old = [r for r in old_rows(args.result) if r["label"] not in {x["label"] for x in rows}
                and r["method"] != "confined"]
  order = {p.label: i for i, p in enumerate(PLANTINGS + OLD_PLANTINGS)}
  rows = sorted(rows + stored_old, key=lambda r: order.get(r["label"], len(order)))
  return report(rows, args.result, {"preset": args.preset, **preset,
                                    "command": "python -m studies.planted_knowledge"})


if __name__ == "__main__":
  main()
