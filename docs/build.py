"""The figures README.md, docs/results.md and the Shapes model card quote from runs, generated
from stored results.

    python -m docs.build            # rewrite every generated region from its JSON
    python -m docs.build --check    # exit 1 naming each region whose text is stale

A region is the text between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, in any of
DOCUMENTS; REGIONS maps NAME to the function that writes it from a JSON in results/ (or
the model's own generation_eval.json). A number about a run belongs in such a region, never in
hand-written prose: tests/readme_test.py fails when a region differs from what its JSON gives, so a
rerun that changes a result changes the words with it.

The words too: a region says a conclusion ("higher", "met", "localized", "less than half") only as
the outcome of a rule applied to the data (an interval that excludes 0, a measured value on the
target's side, a verdict flag), never as fixed text with numbers slotted in; a changed result
flips the word (tests/readme_test.py changes stored results and checks that it does).
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from studies import paired
from dit_jax.report import tables
from dit_jax.verdict import exact
from dit_jax.files import read_json, write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results")
ASSETS = os.path.join(ROOT, "dit_jax", "shapes", "assets")
DOCUMENTS = (os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "results.md"),
             os.path.join(ASSETS, "MODEL_CARD.md"))
SHOWN = os.path.relpath(RESULTS, ROOT)   # how the documents name the results folder
BAR_MEAN, BAR_CATEGORY = 0.80, 0.60  # the project's bar for the Shapes model on held-out captions
REGION = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)",
                    re.S)


def result(name: str) -> dict:
  return read_json(os.path.join(RESULTS, name))


def asset(name: str) -> dict:
  """A JSON the shipped Shapes model carries (generation_eval.json, judge/judge.json)."""
  return read_json(os.path.join(ASSETS, name))


def _and(items) -> str:
  items = list(items)
  return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]]))


def _pct(x: float) -> str:
  return f"{100 * x:.0f} %"


def _interval(values) -> str:
  return f"[{values[0]:+.2f}, {values[1]:+.2f}]"


def _met(value: float, target: float, at_most: bool = False) -> str:
  """'met' where the measured value lies on the target's side (>= target, or <= with at_most)."""
  return "met" if (value <= target if at_most else value >= target) else "not met"


# ------------------------------------------------------------------------------ localization
def shapes_table() -> str:
  full = result("localize_shapes_full.json")
  return (tables.markdown_statistics(full["summary"]) + "\n\nPer concept (Benjamini-Hochberg over "
          "the concept x K tests):\n\n" + tables.markdown_statistics(full["summary_by_concept"], by="concept"))


def _verdicts_at(entries, key) -> dict[str, list[int]]:
  found: dict[str, list[int]] = {}
  for e in entries:
    if e.get(key):
      found.setdefault(e["category"], []).append(e["k"])
  return found


def shapes_findings() -> str:
  """One line per category: what the verdict says at each K, with the figures it rests on."""
  full = result("localize_shapes_full.json")
  lines = []
  for category in dict.fromkeys(e["category"] for e in full["summary"]):
    parts = []
    for e in (x for x in full["summary"] if x["category"] == category):
      removal, reverse = e["tests"]["removal"], e["tests"]["sufficiency"]
      said = [flag for flag in ("localized", "removable", "sufficient") if e.get(flag)]
      floor = e["tests"]["floor"]
      text = (f"K = {e['k']}: {', '.join(said) if said else 'no verdict holds'}"
              + ("" if floor is None or floor["holds"] else " (presence floor not met)")
              + (f"; top-K removes {removal['statistic']:+.2f}, and {_pct(removal['beats'])} of "
                 f"{removal['draws']} random K-sets remove less (p adj {e['p_removal_adjusted']:.3f}, top "
                 f"minus the mean set {removal['excess']:+.2f} {_interval(removal['excess_interval'])})"
                 if removal else "")
              + (f"; in reverse the top-K alone bring back {reverse['statistic']:+.2f} over the "
                 f"neutral prompt (p adj {e['p_sufficiency_adjusted']:.3f})" if reverse else "")
              + ("" if e["tests"]["specificity"] is None or e["tests"]["specificity"]["holds"]
                 else "; not specific: the rest of the image suffers more than under the neutral "
                      f"prompt everywhere (by {e['tests']['specificity']['excess_damage']:+.2f})"))
      parts.append(text)
    concepts = sorted({e["concept"] for e in full["summary_by_concept"] if e["category"] == category})
    lines.append(f"- **{category}** ({', '.join(concepts)}): " + "; ".join(parts) + ".")
  localized = _verdicts_at(full["summary"], "localized")
  head = (f"As it came out ({len(full['concepts'])} concepts, {full['random_draws']} random K-sets per "
          f"concept and K, {full['reverse_draws']} in reverse): "
          + (", ".join(f"{c} at K = {' and '.join(map(str, ks))}" for c, ks in localized.items())
             + " localized" if localized else "no category is localized") + ".")
  reverse = [e["tests"]["sufficiency"] for e in full["summary"] if e["tests"]["sufficiency"]]
  if reverse:
    lines.append("\n" + _reverse_reading(full["summary"], reverse))
  return head + "\n\n" + "\n".join(lines)


REPLICATES = {"replicate 1": "localize_shapes_full_r1.json", "replicate 2": "localize_shapes_full_r2.json",
              "both": "localize_shapes_full_both.json"}
REPLICATE_COMMANDS = ("python localize.py --config configs/shapes_full.py",
                      "python localize.py --config configs/shapes_full.py:2")


def _level_word(e: dict) -> str:
  """A cell of the exact hierarchy in words: what its rule decided (dit_jax/verdict/exact.py)."""
  if "category" not in e:                                   # primary: top-K ranks above chance
    return "no concept present" if e["p"] is None else ("yes" if e["holds"] else "no")
  if e.get("present") is False:
    return "absent"
  if not e["tested"]:
    return "not tested"
  if e["localized"]:
    return "localized"
  return "removable, not specific" if e["removable"] else "not shown"


def _cells(found: dict) -> dict[str, dict]:
  """label -> entry, for every primary, category and concept cell of a stored exact result."""
  cells = {f"K={e['k']} (all concepts)": e for e in found["exact"]["primary"]}
  cells.update({f"{e['category']} K={e['k']}": e for e in found["exact"]["category"]})
  cells.update({f"{e['concept']} K={e['k']}": e for e in found["exact"]["concept"]})
  return cells


def _answer(e: dict) -> str:
  """A cell's answer: yes (and which), no, or the concept absent. "Not tested" and "not shown" are
  both no: the hierarchy stopped above the cell or at it."""
  return {"not tested": "no", "not shown": "no"}.get(_level_word(e), _level_word(e))


def _differences(first: dict, second: dict) -> list[str]:
  """The cells of two replicates whose answers differ."""
  return [c for c in first if c in second and _answer(first[c]) != _answer(second[c])]


def replicated_answer() -> str:
  """README: the fuller run's answer on both replicates pooled, and how far the replicates agree
  (the table and every differing cell are in docs/results.md, "Replicates")."""
  if not all(os.path.exists(os.path.join(RESULTS, n)) for n in REPLICATES.values()):
    return "Not yet stored: the fuller run's two replicates (docs/results.md, \"Replicates\")."
  found = {label: result(name) for label, name in REPLICATES.items()}
  cells = {label: _cells(stored) for label, stored in found.items()}
  both = cells["both"]
  said = lambda label: _and([f"K = {e['k']} (Holm-adjusted p {exact._p(e['p_adjusted'])})"
                             for e in found[label]["exact"]["primary"] if e["holds"]] or ["no K"])
  localized = [c for c, e in both.items() if "category" in e and "concept" not in e and e["localized"]]
  differ = _differences(cells["replicate 1"], cells["replicate 2"])
  return (f"The fuller Shapes run (`configs/shapes_full.py`, exact at K = 1, 2 and 4, 12 concepts) on two "
          f"replicates, their cells pooled: top-K ranks above chance at {said('both')}; localized: "
          f"{_and(localized or ['none'])}. Alone, replicate 1 says yes at {said('replicate 1')} and "
          f"replicate 2 at {said('replicate 2')}; their answers differ in {len(differ)} of "
          f"{len(cells['replicate 1'])} cells ([docs/results.md](docs/results.md#replicates) names them).")


def shapes_replicates() -> str:
  """The fuller run's exact verdict on each replicate and on both (their rows pooled): the primary
  and category levels as a table, and every cell, concept level included, where the two replicates'
  verdicts differ, named. A replicate not yet stored is named with the command that makes it."""
  found = {label: result(name) for label, name in REPLICATES.items()
           if os.path.exists(os.path.join(RESULTS, name))}
  missing = [label for label in ("replicate 1", "replicate 2") if label not in found]
  todo = (f"Not yet stored: {_and(missing)} (`{SHOWN}/{REPLICATES[missing[0]]}`); "
          f"{_and(f'`{c}`' for c in REPLICATE_COMMANDS)} resume set by set." if missing else "")
  if "replicate 1" not in found:
    return todo
  labels = list(found)
  cells = {label: _cells(found[label]) for label in labels}
  first = cells["replicate 1"]
  shown = [c for c, e in first.items() if "concept" not in e]     # the primary and category levels
  table = ["| cell | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
  for cell in shown:
    words = [f"{_level_word(cells[l][cell])} (p adj {exact._p(cells[l][cell].get('p_adjusted'))})"
             if cell in cells[l] else "-" for l in labels]
    table.append(f"| {cell} | " + " | ".join(words) + " |")
  if missing:
    return "\n".join(table) + "\n\n" + todo
  differ = _differences(first, cells["replicate 2"])
  said = ("The replicates give the same answer in every cell." if not differ else
          f"The replicates' answers differ in {len(differ)} of {len(first)} cells: " + "; ".join(
              f"{c} ({_level_word(first[c])} in replicate 1, "
              f"{_level_word(cells['replicate 2'][c])} in replicate 2)" for c in differ) + ".")
  return "\n".join(table) + "\n\n" + said


def ground_truth() -> str:
  """Each localizer's top-K against the best K-set of the exhaustive sweep (studies/ground_truth.py),
  with the reading its intervals decide: above random where the precision interval clears K/n."""
  name = "ground_truth.json"
  if not os.path.exists(os.path.join(RESULTS, name)):
    return (f"Not yet stored (`{SHOWN}/{name}`): `python -m studies.ground_truth` once replicate 1 "
            "of the fuller run is stored.")
  from studies import ground_truth as study
  found = result(name)
  chance = {r["k"]: r["precision"] for r in found["summary"] if r["localizer"] == "random"}
  above = [f"{r['localizer']} at K = {r['k']}" for r in found["summary"]
           if r["localizer"] != "random" and r["precision_interval"][0] > chance[r["k"]]]
  return (study.table(found["summary"]) + f"\n\nFrom `{SHOWN}/localize_{found['run']}*` "
          f"(`{found['command']}`). Precision above random (its 95 % interval over concepts clears "
          f"K/n): {_and(above) if above else 'none'}.")


def flux_bf16() -> str:
  """FLUX in bf16 against a float32 reference, ours and diffusers' (benchmarks/flux_bf16.py), with
  the comparison its numbers decide."""
  run = result("flux_bf16.json")
  c = run["config"]
  parts = []
  for guidance, e in run["guidance"].items():
    ours, theirs = e["ours_bf16_vs_float32"], e["diffusers_bf16_vs_float32"]
    parts.append(f"guidance {guidance}: ours {ours:.1e}, diffusers {theirs:.1e} "
                 f"({'no worse' if ours <= theirs else 'worse'} than diffusers'); with "
                 f"`round_conditioning=True` ours is {e['ours_rounded_bf16_vs_diffusers_bf16']:.1e} "
                 f"from diffusers' bf16 output")
  return (f"FLUX.1 at its real widths ({c['num_attention_heads']} heads of {c['attention_head_dim']}, "
          f"{c['num_layers']}+{c['num_single_layers']} blocks, random weights, {run['image_tokens']} "
          f"image and {run['text_tokens']} text tokens, t = {run['timestep']}), relative error of the "
          f"bf16 output against float32 (`{SHOWN}/flux_bf16.json`, {run['date']}): "
          + "; ".join(parts) + ".")


def _reverse_reading(summary: list[dict], reverse: list[dict]) -> str:
  """What the reverse test's draws allow and what it found: its p floor 1/(R + 1) against the
  verdict's level, what Benjamini-Hochberg makes of one cell alone at that floor, the cells at the
  floor, the smallest adjusted p against the level, and the categories the verdict calls
  sufficient."""
  from dit_jax.verdict.sets import ALPHA
  draws, tests = reverse[0]["draws"], len(reverse)
  floor = 1 / (draws + 1)
  at_floor = sum(r["p"] <= floor + 1e-12 for r in reverse)
  least = min(e["p_sufficiency_adjusted"] for e in summary if e["p_sufficiency_adjusted"])
  sufficient = _verdicts_at(summary, "sufficient")
  found = (", ".join(f"{c} at K = {' and '.join(map(str, ks))}" for c, ks in sufficient.items())
           + " shown sufficient" if sufficient else "no category is shown sufficient")
  below = lambda p: "below" if p < ALPHA else "not below"
  return (f"The reverse test had {draws} random K-sets per concept and K, so its p cannot go below "
          f"1/{draws + 1} = {floor:.3f} ({below(floor)} the level {ALPHA:g}; one cell alone at that "
          f"floor is adjusted to {min(1.0, floor * tests):.3f} by Benjamini-Hochberg over the {tests} "
          f"tests, {below(floor * tests)} {ALPHA:g}). {at_floor} of {tests} cells reached that floor, "
          f"and the smallest adjusted p is {least:.3f} ({below(least)} {ALPHA:g}): {found}.")


def shapes_auto_k() -> str:
  auto = result("localize_shapes_full.json")["auto_k"]
  found = [f"{c} {a['k']} (the curve crosses {a['target']} at K = {a['k_crossing']:.1f})"
           for c, a in auto.items() if c != "rule" and a["k"] is not None]
  never = [f"{c} ({min(a['presence'][1:]):.2f} at best)" for c, a in auto.items()
           if c != "rule" and a["k"] is None]
  target = next(a["target"] for c, a in auto.items() if c != "rule")
  return (f"Automatic K (`auto_k.json`; the smallest swept K whose top-K presence is below {target}): "
          + "; ".join(found) + (f"; never below it: {', '.join(never)}" if never else "") + ".")


def shapes_agreement() -> str:
  old = result("localize_shapes_full_20draws.json")
  overall = old["agreement"]["by_category"]["all"]
  cells = [f"{pair}: tau {v['kendall_tau']:+.2f}, overlap {v['top_k_overlap']:.2f}"
           for pair, v in overall.items()]
  return (f"The localizers' agreement on this model, from the earlier run with every localizer (20 "
          f"draws, the same weights; `{SHOWN}/localize_shapes_full_20draws.json`; K = "
          f"{old['agreement']['k']}, over its {len(old['concepts'])} concepts; Kendall tau and top-K "
          "overlap): " + "; ".join(cells) + ".")


def default_run() -> str:
  run = result("localize_shapes.json")
  return (f"On this project's 2-core CPU it took {run['seconds']:.0f} s at a load average of "
          f"{run['load_average'][0]:.1f} (`{SHOWN}/localize_shapes.json`). Its answer, "
          "as the run prints it:\n\n" + "\n".join(f"- {line}" for line in run["answer"]))


def placebo() -> str:
  from studies import placebo as placebo_benchmark
  return placebo_benchmark.table(result("placebo.json"))


def placebo_reading() -> str:
  """What the placebo table decides, per run and flag: whether the false-positive rate of runs
  lies below the verdict's level (its whole 95 % Clopper-Pearson interval under it), whether the
  tie-randomised p-values' uniformity is rejected at that level, and how often the run's own answer
  comes back (in any cell) under the run's own ranking when its prompts and seeds are resampled."""
  from dit_jax.verdict.sets import ALPHA
  found = result("placebo.json")
  out = []
  for name, run in found.items():
    if not isinstance(run, dict) or "false_positives" not in run:
      continue
    said = []
    for flag, f in run["false_positives"].items():
      low, high = f["run_rate_interval"]
      word = ("below" if high < ALPHA else "above" if low > ALPHA else "not shown below")
      said.append(f"{flag}: {f['run_rate']:.4f} of runs with any yes, {word} {ALPHA:g} "
                  f"(95 % CP [{low:.4f}, {high:.4f}])")
    ks = run["ks_uniform_p"]
    own = run.get("own_answer_replicates")
    power = run["power"]
    out.append(f"**{name}**: false-positive rate " + "; ".join(said) + f". Power at a planted effect "
               f"of {power['effect']:.2f}: " + "; ".join(f"{flag} {p['run_rate']:.3f} of runs, "
                                                        f"{p['cell_rate']:.3f} of cells"
                                                        for flag, p in power.items() if flag != "effect")
               + ". Uniformity of the "
               f"tie-randomised placebo p-values: KS p = {ks:.2f}, "
               + ("not rejected" if ks >= ALPHA else "rejected") + f" at {ALPHA:g}."
               + (f" Under the run's own ranking, {own['resamples']} resamples of its prompts and "
                  f"seeds give a yes in some cell in {own['runs_with_any']} of them." if own else ""))
  return "\n\n".join(out)


def planted() -> str:
  """The planted-knowledge benchmark: one row per planting as it came out, then precision@|set|
  of every ranking with its interval over the plantings that took."""
  from studies import planted_knowledge as pk
  found = result("planted_knowledge.json")
  lines = ["| planting | method | planted blocks | look | took | attention top-\|set\| | "
           "look with the name withheld: nowhere / planted / random others | causal check |",
           "|---|---|---|---|---|---|---|---|"]
  for r in found["sets"]:
    c = r.get("causal") or {}
    withheld = (f"{c['original']:.2f} / {c['planted']:.2f} / "
                + (f"{sum(c['random']) / len(c['random']):.2f}" if c.get("random") else "-")) if c else "-"
    lines.append(f"| {r['label']} | {r['method']} | {r['planted_blocks']} | {r['look_accuracy']:.2f} | "
                 f"{'yes' if r['counted'] else 'no'} | {r['top_blocks']} | {withheld} | "
                 f"{'-' if r['causal_holds'] is None else 'holds' if r['causal_holds'] else 'fails'} |")
  steps = {r["method"]: r.get("steps") for r in found["sets"]}
  # The causal check (planted_knowledge.py): withholding the name from the planted blocks drops
  # the look by at least MIN_TOP_DROP and by at least twice what withholding it elsewhere does.
  from dit_jax.verdict.summary import MIN_TOP_DROP
  failed = [r["label"] for r in found["sets"] if r["counted"] and r["causal_holds"] is False]
  lines += ["", "Plantings that took where withholding the name from the planted blocks does not "
            f"remove the look (a drop under {MIN_TOP_DROP}, or under twice the drop with it withheld "
            "from as many other blocks: the causal check fails): "
            + (", ".join(failed) if failed else "none") + "."]
  return ("\n".join(lines) + "\n\n" + f"Training steps per method: "
          + ", ".join(f"{m} {s}" for m, s in steps.items()) + f" (lr {found['learning_rate']:g}). "
          + "precision@|set| over the plantings that took (95 % bootstrap interval over plantings, "
          f"printed from {paired.MIN_PAIRS} plantings on; below that n, the number of plantings):\n\n"
          + pk.table(found).rstrip("\n")
          + "\n\nWhat this supports:\n\n" + pk.claims(found["summary"]))


def planted_weights() -> str:
  """Every way of planting under one rule (studies/planted_summary.py): precision@|set| over every
  planting and over those that took, intervals over plantings, every run listed. The weight-
  restricted methods are shown only from a full run: until one is stored the region says so."""
  from studies import planted_summary as ps
  from studies import planted_weights as pw
  found = result("planted_weights.json")
  design = ("Plantings: " + "; ".join(f"{p['label']} {p['blocks']} ({p['name']})" for p in found["plantings"])
            + f", each on training seeds {found['seeds']}. Localizers: {found['prompts']} prompts x 2 "
            f"noise seeds per run ({result('planted_knowledge.json')['prompts']} x 2 in the confined "
            f"runs). Intervals are printed from {paired.MIN_PAIRS} plantings on; below that, the "
            "number of plantings.")
  stored = lambda method, s: s["finished"] and (method == "confined" or found["preset"] == "full")
  parts, shown = [], []
  for method, s in found["summary"].items():
    if stored(method, s):
      parts.append(ps.method_table(method, s))
      shown += [r for r in found["runs"] if r["method"] == method]
    else:
      parts.append(f"**{ps.TITLES[method]}**: not stored yet ({s['planned'] or 0} runs planned, "
                   f"{s['finished']} of them finished in a full run). Launch: `{pw.LAUNCH}`, then "
                   "`python -m docs.build`.")
  ladder = "; ".join(f"rung {i + 1}: {r['steps']} steps at {r['rate']:g}x the base rate "
                     f"{found['learning_rate']:g}" for i, r in enumerate(found["ladder"]))
  return (design + "\n\n" + "\n\n".join(parts) + f"\n\nThe ladder a run that does not take climbs ({pw.__name__}): "
          f"{ladder}. A run takes when its look reaches {found['look_floor']}. Runs that took, by "
          "name, confined: " + ps.outcome_by_name([r for r in found["runs"] if r["method"] == "confined"])
          + ". Every run stored, "
          "failed ones with each ranking's precision on them (the random ranking's expectation is "
          "|set| / 12):\n\n" + ps.runs_table(shown))


def finetune_frontier() -> str:
  """Localized fine-tuning against its controls at matched preservation, from the stored summary
  of studies/finetune_frontier.py; until the full run is stored, a sentence that says so (the
  earlier design's numbers are not this comparison and are not shown as it)."""
  from studies import finetune_frontier as ff
  from studies import frontier_report as report
  try:
    found = result("finetune_frontier.json")
  except FileNotFoundError:
    plan = ff.plan(ff.PRESETS["full"])
    return (f"Not yet stored: the matched-preservation table is generated from "
            f"`{SHOWN}/finetune_frontier.json`, which the full run writes (`python -m "
            f"studies.finetune_frontier`, {plan['runs']} runs, about {plan['estimated_cpu_hours']:g} "
            f"CPU hours, resumable). The earlier design's stored runs (`{SHOWN}/finetune_runs/`, "
            f"`{SHOWN}/finetune_controls.json`: one learning rate per variant chosen on a reported "
            "row, one block set for every personalized concept, pairs bootstrapped as independent) "
            "are not this comparison, and no claim here rests on them.")
  rates = ", ".join(f"{r:g}" for r in found["rates"])
  tiny = "" if found["preset"] == "full" else (
      f" **From the {found['preset']} preset: a check that the study runs, not the comparison.**")
  counts = found.get("runs", {})
  shown = "; ".join(f"{o}, {n['stored']} of {n['planned']} runs" for o, n in counts.items())
  missing = [o for o in ff.PRESETS[found["preset"]]["objectives"] if o not in counts]
  if missing:     # an objective still running is named, not summarized from part of its runs
    folder = os.path.join(RESULTS, "finetune_frontier_runs")
    shown += ". Not summarized yet: " + "; ".join(
        f"{o} ({ff.stored_run_count(folder, o)} of {ff.runs_per_objective(ff.PRESETS[found['preset']])} runs stored; "
        "the same command resumes it)" for o in missing)
  tiny += f" Objectives summarized: {shown}." if shown else ""
  return (f"K = {found['k']}; candidate learning rates {{{rates}}}, {found['steps']} steps measured at "
          f"steps {', '.join(map(str, found['measured']))}; rates tuned {found['tuning_rule']}. Margins "
          "fixed before the run: " + ", ".join(f"{m} {v:g}" for m, v in found["margin"].items())
          + f"; the headline reads a preservation loss of {found['primary_level']:g}.{tiny}\n\n"
          + report.table(found["summary"]).rstrip("\n")
          + "\n\nWhat this supports:\n\n" + report.claims(found["summary"]))


def shapes_cpu() -> str:
  """The CPU benchmark's sentence: the shipped model, ours vs diffusers in the same run."""
  run = result("shapes_cpu.json")
  said = lambda key: (f"{run['ratios'][key]:.2f}x diffusers (target >= {run['targets'][key]}x: "
                      f"{_met(run['ratios'][key], run['targets'][key])})")
  return (f"Stored run (`{SHOWN}/shapes_cpu.json`, {run['device']}): generation {said('generation')}, "
          f"the sweep {said('sweep')} with {run['chunk'] * run['batch']} images per device and compiled call, "
          + (f"on {run['devices']} single-threaded XLA devices (dit_jax/sharding.py)"
             if run.get("devices", 1) > 1 else "on one XLA device over every core")
          + "; each "
          f"side timed in turn with the other ({run['generation']['flax']['iters']} generations, "
          f"{run['sweep']['flax']['iters']} sweeps each; medians); its final latents at a "
          f"relative distance of {run['final_latent_rel_error']:.1e} from diffusers'.")


# ----------------------------------------------------------------------------------- the model
def model_quality() -> str:
  final = result("shapes_continue.json")["final"]
  held, other = final["heldout"], final["heldout_seed7"]
  text = lambda a: ", ".join(f"{c} {_pct(v)}" for c, v in a.items())
  met = lambda e: "met" if _meets_bar(e) else "not met"
  return (f"on {max(held['images_per_category'].values())} held-out captions the judge finds "
          f"{text(held['accuracy'])} of the time (mean {_pct(held['mean'])}; a second set of "
          f"held-out captions gives mean {_pct(other['mean'])}; the project's bar, a mean of "
          f"{_pct(BAR_MEAN)} with every category at {_pct(BAR_CATEGORY)}, is {met(held)} on the first "
          f"set and {met(other)} on the second)")


def _benchmark(name: str):
  """A benchmark module, imported only when one of its regions is written."""
  return importlib.import_module(f"benchmarks.{name}")


def gpu_benchmarks() -> str:
  return _benchmark("run_all").readme_tables(RESULTS)


def gpu_summary() -> str:
  return _benchmark("run_all").readme_summary(RESULTS)


def memory_plan() -> str:
  return _benchmark("memory_plan").readme_table(RESULTS)


def judge_check() -> str:
  """The model card's judge-check table, and how long the run took."""
  from dit_jax.shapes import judge_check as check
  found = result("shapes_judge_check.json")
  return (check.markdown_table(found) + f"\n\nThe run took {found['seconds'] / 60:.0f} min "
          "on the shared 2-core CPU.")


def model_quality_table() -> str:
  """The model card's quality table: the continuation's held-out curve, the shipped model's
  Wilson intervals and its second draw and training captions."""
  found = result("shapes_continue.json")
  final, curve = found["final"], found["curve_heldout"]
  categories = list(final["heldout"]["accuracy"])
  row = lambda label, a, mean, bold=False: "| " + " | ".join(
      [label] + [(f"**{x:.2f}**" if bold else f"{x:.2f}") for x in [a[c] for c in categories] + [mean]]) + " |"
  lines = ["| steps | " + " | ".join(categories) + " | mean |", "|---" * (len(categories) + 2) + "|"]
  for point in curve:
    last = point is curve[-1]
    label = (f"12,500 + {point['continued_steps']:,}" if point["continued_steps"] else
             "12,500 (shipped before #16)")
    lines.append(row(f"**{label} (shipped)**" if last else label, point["accuracy"], point["mean"], last))
  held = final["heldout"]
  lines.append("| 95 % interval (Wilson; images) | " + " | ".join(
      f"{held['wilson95'][c][0]:.2f}-{held['wilson95'][c][1]:.2f} ({held['images_per_category'][c]})"
      for c in categories) + " | |")
  lines.append(row("other held-out captions (`--seed 7`)", final["heldout_seed7"]["accuracy"],
                   final["heldout_seed7"]["mean"]))
  lines.append(row("training captions (`--split train`)", final["train"]["accuracy"], final["train"]["mean"]))
  return "\n".join(lines)


def continuation_run() -> str:
  """How the third training run went: its schedule, its training clock and its last loss."""
  found = result("shapes_continue.json")
  return (f"Run 3's schedule was {found['schedule']}. It took {found['train_minutes']:.0f} min of "
          f"training clock on the {found['machine']}; its v-MSE, averaged over the last 40 logged "
          f"values, ended at {found['final_loss_last_40_logs']:.3f} (loss_continued.png).")


def _meets_bar(evaluation: dict) -> bool:
  return evaluation["mean"] >= BAR_MEAN and min(evaluation["accuracy"].values()) >= BAR_CATEGORY


def quality_verdict() -> str:
  """Whether the shipped model meets the bar on both sets of held-out captions, and its weakest
  category."""
  final = result("shapes_continue.json")["final"]
  weakest = lambda e: min(e["accuracy"], key=e["accuracy"].get)
  said = lambda e: (f"{'holds' if _meets_bar(e) else 'does not hold'} (mean {e['mean']:.2f}, "
                    f"lowest {weakest(e)} {e['accuracy'][weakest(e)]:.2f})")
  return (f"The bar (mean >= {BAR_MEAN:.2f}, every category >= {BAR_CATEGORY:.2f} on held-out "
          f"captions) {said(final['heldout'])}, and on a second set of held-out captions it "
          f"{said(final['heldout_seed7'])}. {weakest(final['heldout']).capitalize()} is now the "
          "weakest category.")


def model_limits() -> str:
  """What limited the 12,500-step model (issue #16): its diagnosis runs, the trainer's step costs
  and the held-out curve of training on, one bullet each. Each bullet's words are a rule on the
  figures it prints: "underfit" where the categories below the bar on held-out captions are below
  it on training captions too ("overfit" where they reach it there); the sampler or the batch
  "helps" only where a setting lifts a category to the bar or buys throughput; training on
  "reaches the bar" where the last point of the curve does."""
  found = result("shapes_continue.json")
  diagnosis, cost, curve = (found["diagnosis_of_the_12500_step_model"], found["step_time_seconds"],
                            found["curve_heldout"])
  held = diagnosis["heldout (protocol)"]
  low = [c for c, v in held["accuracy"].items() if v < BAR_CATEGORY]
  values = lambda a: _and(f"{c} {a[c]:.2f}" for c in low)
  change = lambda run: _and(f"{c} {run['accuracy'][c] - held['accuracy'][c]:+.2f}" for c in low)
  lifted = lambda run: [c for c in low if run["accuracy"][c] >= BAR_CATEGORY]
  base, large, wide = cost["width 96, batch 32"], cost["width 96, batch 128"], cost["width 128, batch 32"]
  train = diagnosis["train split"]["accuracy"]
  below_on_train = [c for c in low if train[c] < BAR_CATEGORY]
  fit = ("underfit, not overfit: on training captions its "
         f"{values(train)} were below the bar ({BAR_CATEGORY:.2f}) as on held-out ones" if below_on_train == low
         else "overfit in part: on training captions " + _and(f"{c} {train[c]:.2f}" for c in low
                                                               if c not in below_on_train)
         + f" reached the bar ({BAR_CATEGORY:.2f}) that held-out ones did not")
  sampler = {"guidance 8": diagnosis["guidance 8"], "50 sampler steps": diagnosis["50 steps"]}
  helped = [f"{name} lifts {_and(lifted(run))} to the bar" for name, run in sampler.items() if lifted(run)]
  sampler_said = ("The sampler: " + "; ".join(helped) if helped else
                  f"Not the sampler: no setting lifts {_and(low)} to the bar")
  gain = (128 / 32) / (large / base)   # images per second at batch 128 over batch 32
  return "\n".join([
      f"- It was {fit} ({values(held['accuracy'])}).",
      f"- {sampler_said}: guidance 8 gives mean {diagnosis['guidance 8']['mean']:.2f} against {held['mean']:.2f}; 50 "
      f"sampler steps give mean {diagnosis['50 steps']['mean']:.2f} ({change(diagnosis['50 steps'])}).",
      f"- {'Not the batch' if gain <= 1 else 'The batch'}: on this CPU a step of batch 128 costs "
      f"{large / base:.2f}x a step of batch 32 ({large:.2f} s against {base:.3f} s; {cost['measured']}), "
      f"so a larger batch buys {'no' if gain <= 1 else f'{gain:.2f}x the'} throughput; width 128 costs "
      f"{wide / base:.1f}x per step ({wide:.2f} s).",
      "- Training on with the learning rate back up: "
      + "; ".join(f"{c} " + " -> ".join(f"{p['accuracy'][c]:.2f}" for p in curve) for c in low)
      + f" from the {curve[0]['total_steps']:,}-step model over "
      + _and(format(p["continued_steps"], ",") for p in curve[1:])
      + f" more steps: {_reached(curve, low)}."])


def _reached(curve: list[dict], low: list[str]) -> str:
  """Whether training on brought the categories below the bar to it: where the last point of the
  held-out curve is at the bar, the first runs had stopped short of what the recipe reaches."""
  last = curve[-1]["accuracy"]
  up = [c for c in low if last[c] >= BAR_CATEGORY]
  if up == low:
    return f"{_and(low)} reach the bar ({BAR_CATEGORY:.2f}): the first runs had stopped short of it"
  return (f"{_and(up) if up else 'none of them'} reach{'es' * (len(up) == 1)} the bar "
          f"({BAR_CATEGORY:.2f}); {_and(c for c in low if c not in up)} stay{'s' * (len(low) - len(up) == 1)} below")


def judge_accuracy() -> str:
  """The judge's own accuracy on renders (its worst head) and its training time."""
  accuracy = asset(os.path.join("judge", "judge.json"))["accuracy"]
  worst = lambda part: f"{100 * min(accuracy[part].values()):.1f} %"
  return (f"Judge (judge/): CNN, one head per category, >= {worst('fresh')} on every head on fresh "
          f"renders and >= {worst('heldout_combinations')} on renders of held-out combinations "
          f"(`python -m dit_jax.shapes.classifier --train`, {accuracy['train_seconds']:.0f} s on CPU), "
          "sha256 of params in judge/judge.json.")


def recipe_ablations() -> str:
  """The recipe ablation table (issue #16), a row per variant run, with the idle cost of its steps
  and the binomial standard error its image counts allow."""
  rows = result("shapes_recipe.json")
  continued = result("shapes_continue.json")
  per_step = continued["step_time_seconds"]["width 96, batch 32"]
  images = continued["final"]["heldout"]["images_per_category"]
  categories = list(rows[0]["accuracy"])
  lines = ["| variant | change | steps | " + " | ".join(categories) + " | mean | loss | minutes | command |",
           "|---" * (len(categories) + 7) + "|"]
  for r in rows:
    lines.append(f"| {r['variant']} | {r['change']} | {r['steps']} | "
                 + " | ".join(f"{r['accuracy'][c]:.2f}" for c in categories)
                 + f" | {r['mean']:.3f} | {r['final_loss']:.3f} | {r['train_minutes']:.0f} | "
                 f"`{r['command']}` |")
  counts = {n: [c for c in categories if images[c] == n]
            for n in sorted(set(images.values()), reverse=True)}
  return ("\n".join(lines) + f"\n\n{rows[0]['steps']:,} steps of the shipped recipe take about "
          f"{rows[0]['steps'] * per_step / 60:.0f} minutes on the idle machine ({per_step} s/step). "
          f"One run each, {rows[0]['num_images']} images: a row's accuracy has a binomial standard "
          "error (its bound, at p = 0.5) of at most "
          + _and(f"{(0.25 / n) ** 0.5:.2f} over {n} images ({_and(cs)})" for n, cs in counts.items()) + ".")


def judge_check_reading() -> str:
  """What the judge check's rows say against the clean renders: the misses at the first t, the
  categories that fall or stay at the later ones, and what that supports for generation_eval.json."""
  rows = result("shapes_judge_check.json")["rows"]
  clean, first, later = rows[0], rows[1], rows[2:]
  misses = lambda row, c: row["images"][c] - row["hits"][c]
  count = lambda n: str(n) if n else "none"
  categories = list(clean["accuracy"])
  missed = [c for c in categories if misses(first, c) or misses(clean, c)]
  gap = max(abs(misses(first, c) - misses(clean, c)) for c in categories)
  stay = [c for c in categories if all(r["accuracy"][c] == clean["accuracy"][c] for r in rows)]
  fall = sorted((c for c in categories if c not in stay), key=lambda c: later[-1]["accuracy"][c])
  lossless = [c for c in stay if clean["accuracy"][c] == 1]
  at = lambda c: _and(format(r["accuracy"][c], ".3f") for r in later)
  within = f"within {gap} image{'s' * (gap != 1)}"
  return (f"At t = {first['t']} (the model retouches every pixel, rmse {first['rmse']:.3f}) the "
          f"judge's misses in each category are {within} of its misses on the clean "
          "renders: "
          + _and(f"{misses(first, c)} {c} miss{'es' * (misses(first, c) != 1)} in {first['images'][c]} "
                 f"({count(misses(clean, c))} on the renders)" for c in missed)
          + f".\nAt t = {_and(str(r['t']) for r in later)} the model redraws more (rmse "
          + _and(format(r["rmse"], ".3f") for r in later) + f") and {fall[0]} falls to {at(fall[0])}, "
          + _and(f"{c} to {at(c)}" for c in fall[1:]) + f"; {_and(stay)} stay as on the renders.\n\n"
          f"What the check supports: {_and(lossless)} in generation_eval.json are read without loss; "
          f"{_and(fall[1:])} as on renders, to {within}, at t = {first['t']}; {fall[0]} "
          f"({asset('generation_eval.json')['accuracy'][fall[0]]:.2f} in generation) is the category "
          f"where the model's rendering of the {fall[0]}, and how the judge reads it, are least certain.")


REGIONS = {
    # README.md
    "model-quality": model_quality, "default-run": default_run, "shapes-table": shapes_table,
    "shapes-findings": shapes_findings, "shapes-replicates": shapes_replicates,
    "replicated-answer": replicated_answer, "ground-truth": ground_truth, "flux-bf16": flux_bf16, "placebo": placebo, "placebo-reading": placebo_reading, "shapes-agreement": shapes_agreement,
    "shapes-auto-k": shapes_auto_k, "finetune-frontier": finetune_frontier, "planted": planted,
    "planted-weights": planted_weights,
    "memory-plan": memory_plan, "gpu-summary": gpu_summary, "gpu-benchmarks": gpu_benchmarks,
    "shapes-cpu": shapes_cpu,
    # dit_jax/shapes/assets/MODEL_CARD.md
    "continuation-run": continuation_run, "model-quality-table": model_quality_table,
    "quality-verdict": quality_verdict, "model-limits": model_limits, "judge-accuracy": judge_accuracy,
    "recipe-ablations": recipe_ablations, "judge-check": judge_check,
    "judge-check-reading": judge_check_reading}


def render(text: str, missing: list | None = None) -> str:
  """`text` with every region rewritten (an unknown region name is an error). A region whose
  result file does not exist yet keeps its text, and its name goes to `missing`."""
  def rewrite(match):
    name = match["name"]
    if name not in REGIONS:
      raise KeyError(f"generated region {name!r} has no generator; known: {sorted(REGIONS)}")
    try:
      return match[1] + REGIONS[name]().rstrip("\n") + "\n" + match[4]
    except FileNotFoundError as error:
      if missing is None:
        raise
      missing.append(f"{name} ({error.filename})")
      return match[0]
  return REGION.sub(rewrite, text)


def stale(path: str) -> list[str]:
  """The names of the regions of `path` whose text differs from their JSON's (a missing result
  file is an error)."""
  with open(path) as f:
    text = f.read()
  fresh = {m["name"]: m["body"] for m in REGION.finditer(render(text))}
  return [m["name"] for m in REGION.finditer(text) if fresh[m["name"]] != m["body"]]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--check", action="store_true", help="only report stale regions")
  args = parser.parse_args(argv)
  bad = []
  for path in DOCUMENTS:
    with open(path) as f:
      text = f.read()
    if args.check:
      bad += [f"{os.path.relpath(path, ROOT)}: {name}" for name in stale(path)]
    else:
      missing: list[str] = []
      fresh = render(text, missing)
      for name in missing:
        print(f"not rewritten, no result yet: {name}", file=sys.stderr)
      if fresh != text:
        write_text(path, fresh)
        print(f"rewrote {os.path.relpath(path, ROOT)}")
  for line in bad:
    print(f"stale: {line}", file=sys.stderr)
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
