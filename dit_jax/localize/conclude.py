"""The last three stages of a localization run, on the judged rows of the sweep: judge (calibrate
the judge's thresholds and count hits), verdict (the exact hierarchy, the summary's entries and the
automatic K, computed once, config.verdict) and report (every file a reader opens, each written
once: rows, curves, summary, maps, image grids, agreement, report.html)."""
from __future__ import annotations

import dataclasses
import os
import textwrap

import numpy as np

from dit_jax.files import write_json
from dit_jax.report import figures, page as page_lib, tables
from dit_jax.localize import agreement, localizers
from dit_jax.localize.stages import slug
from dit_jax.verdict import exact, summary

PLACEBO_RUNS = 2000   # simulated placebo and planted runs behind the summary's error rate and power


# ------------------------------------------------------------------------------------ judge

def calibrate(judge, rows: list[dict]) -> list[dict]:
  """The rows with their hits: the judge's thresholds calibrated on the neutral-prompt images of
  every concept (a judge with a fixed threshold keeps it), each row's hit rate at its category's
  threshold."""
  neutral: dict[str, list[float]] = {}
  for r in rows:
    if r["kind"] == "neutral":
      neutral.setdefault(r["category"], []).extend(r["scores"])
  judge.calibrate(neutral)
  judged = []
  for r in rows:
    scores = np.asarray(r.get("scores") or [], float)
    hits = (scores >= judge.threshold_for(r["category"])).astype(float)
    judged.append({**r, "unit_hits": hits.tolist(),     # what the verdict counts (verdict/sets.py)
                   "hits": float(hits.mean()) if scores.size else None})
  return judged


# ------------------------------------------------------------------------------------ verdict

@dataclasses.dataclass
class Verdict:
  answer: list[str]            # the exact hierarchy's answer in words ([]: no exact or sampled null)
  exact: dict | None           # verdict.json (with its placebo rate and power)
  entries: list[dict]          # summary.summarize's, one per category and K
  auto_k: dict                 # category -> the automatic K (summary.AUTO_K_RULE), gated on presence


def decide(rows, categories, verdict) -> Verdict:
  """Everything the run concludes from its rows, once (config.verdict: power_effect,
  presence_target)."""
  found, answer = exact_answer(rows, verdict.power_effect)
  entries = summary.summarize(rows)
  auto = {c: gate_on_presence(summary.read_k(rows, c, verdict.presence_target),
                              *presence_floor(entries, rows, c)) for c in categories}
  return Verdict(answer, found, entries, auto)


def exact_answer(rows, power_effect: float) -> tuple[dict | None, list[str]]:
  """The exact hierarchy's verdict (dit_jax/verdict/exact.py), with the false-positive rate of the
  same config under a placebo and its power for a planted effect of `power_effect` (top-K removing
  that much more than the mean set), both re-ranked on the swept sets; and the answer in words."""
  found = exact.decide(rows)
  if found is None:
    return None, []
  lines = ["Answer (exact ranks among every K-block set; docs/design.md, \"Exact verdict\"):",
           *exact.answer(found)]
  placebo = exact.simulate(rows, PLACEBO_RUNS)
  if placebo["runs"]:
    rate = placebo["removable"]["runs_with_any"] / placebo["runs"]
    lines.append(f"This config under a placebo (top-K a random set, {placebo['runs']} re-ranked runs): "
                 f"{rate:.3f} of runs say any 'removable'.")
    found["placebo"] = placebo
  if placebo["runs"] and power_effect > 0:
    planted = exact.simulate(rows, PLACEBO_RUNS, effect=power_effect, seed=1)
    cells = planted["removable"]["positive_cells"] / (planted["runs"] * planted["cells_per_run"])
    runs = planted["removable"]["runs_with_any"] / planted["runs"]
    lines.append(f"Power for a planted effect of {power_effect:+.2f} (top-K minus the mean set) in "
                 f"every present concept: {runs:.2f} of runs find one, {cells:.2f} of cells are found.")
    found["power"] = planted
  return found, fixed_width(lines)


def fixed_width(lines: list[str], width: int = 100) -> list[str]:
  """The answer as wide as the tables under it (summary.txt, the console): each K of a concept
  on lines of its own."""
  out = []
  for line in lines:
    first, *rest = line.split("; K=")
    for part in [first] + ["  K=" + r for r in rest]:
      out += textwrap.wrap(part, width, subsequent_indent="    ")
  return out


def presence_floor(entries, rows, category: str) -> tuple[bool, str]:
  """Was the category's concept there to remove? The verdict's presence floor where the summary
  has one (its original above the neutral prompt and chance), else the original's mean presence
  above the neutral prompt's. A K that "removes" a concept never drawn is no K."""
  floors = [(e.get("tests") or {}).get("floor") for e in entries if e.get("category") == category]
  floors = [f for f in floors if f]
  if floors:
    return any(f["holds"] for f in floors), "the verdict's presence floor (original above the neutral prompt and chance)"
  mean = lambda kind: np.mean([r["presence"] for r in rows if r["category"] == category
                               and r["kind"] == kind] or [np.nan])
  return bool(mean("none") > mean("neutral")), "the original's presence above the neutral prompt's"


def gate_on_presence(read: dict, present: bool, rule: str) -> dict:
  if present:
    return {**read, "present": True}
  return {**read, "k": None, "k_crossing": None, "present": False,
          "why": f"no K: the concept was never present ({rule} fails)"}


def auto_k_table(auto: dict, target: float) -> str:
  """Automatic K per category, as a table (swept K, crossing to 2 decimals; '-' for none)."""
  lines = [f"automatic K (top-K presence below {target}; swept K, and where the curve crosses):",
           f"  {'category':<12} {'K':>3} {'crossing':>8}"]
  for category, found in auto.items():
    crossing = "-" if found["k_crossing"] is None else f"{found['k_crossing']:.2f}"
    note = "" if found.get("present", True) else "  never present: no K"
    lines.append(f"  {category:<12} {'-' if found['k'] is None else found['k']:>3} {crossing:>8}{note}")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------ report

def report_scores(every: dict, ranking: str, variant: str, k: int, out: str, labels) -> None:
  """scores.json/csv and heatmap.png (the ranking localizer's), agreement.json/png (every one's)."""
  scores = every[ranking]
  figures.write_scores(scores, out, block_labels=labels)
  write_agreement(every, scores, k, out)
  figures.heatmap(scores, os.path.join(out, "heatmap.png"), variant=variant, block_labels=labels, k=k)


def write_agreement(every: dict, scores: dict, k: int, out: str) -> dict:
  """agreement.json and agreement.png: per category, each pair of localizers' (and the attention's
  two variants') mean Kendall tau and top-K overlap over concepts, K the sweep's middle K."""
  named = {}
  for name, records in every.items():
    for concept, record in records.items():
      for label, values in localizers.named_scores(name, record).items():
        named.setdefault(label, {})[concept] = values
  table = agreement.compute(named, {c: r["category"] for c, r in scores.items()}, k)
  write_json(os.path.join(out, "agreement.json"),
             {"k": k, "localizers": list(named), "rule": agreement.RULE,
              "by_category": table})
  agreement.plot(table, list(named), os.path.join(out, "agreement.png"))
  return table


def report_grids(shown: dict, out: str) -> None:
  """grids/<concept>.png: per concept swept in this run, one row per shown intervention, one column
  per prompt and seed (shown: concept -> (name -> images, column labels))."""
  for concept, (images, labels) in shown.items():
    figures.image_grid(images, os.path.join(out, "grids", f"{slug(concept)}.png"),
                       column_labels=labels)


def report(rows, verdict: Verdict, categories, scores, windows, labels, out: str) -> str:
  """Every report of the judged rows, each file once: interventions.jsonl/csv, verdict.json,
  curves/, summary.txt/json (with the time table where windows were swept), auto_k.json and
  maps/; returns the console's summary."""
  figures.write_rows(rows, out)
  if verdict.exact is not None:
    write_json(os.path.join(out, "verdict.json"), verdict.exact)
  for category in categories:
    figures.k_curve(rows, category, os.path.join(out, "curves", f"{slug(category)}.png"))
  timing = tables.time_table(rows, windows) if windows else ""   # is a concept localized in time?
  tables.write_summary(rows, out, verdict.answer, verdict.entries, timing)
  write_json(os.path.join(out, "auto_k.json"), {"rule": summary.AUTO_K_RULE, **verdict.auto_k})
  for concept, concept_scores in scores.items():   # block x timestep maps (docs/design.md, "Time")
    figures.time_map(concept, concept_scores, rows, windows, os.path.join(out, "maps", slug(concept)),
                     labels)
  second = second_opinions(rows, out)
  return "\n".join([tables.summary_table(rows, entries=verdict.entries), *([timing] if timing else []),
                    *([second] if second else [])])


def second_opinions(rows, out: str) -> str:
  """second_judge.json and the console's lines: on the images the grids show (original, neutral
  prompt, top-, bottom- and a random K-set, reverse), how many show the concept by the run's judge
  and by the second one (Judge.second_opinion), and the images where the two disagree. "" where
  the judge has no second (then the run rests on one judge's word)."""
  found = [r for r in rows if r.get("second_opinion")]
  if not found:
    return ""
  table = []
  for r in found:
    first, second = (np.asarray(r["second_opinion"][k], bool) for k in ("first", "second"))
    table.append({"concept": r["concept"], "category": r["category"],
                  "intervention": r["second_opinion"]["intervention"], "kind": r["kind"], "k": r["k"],
                  "judge": r["second_opinion"]["judge"], "images": int(first.size),
                  "first_present": int(first.sum()), "second_present": int(second.sum()),
                  "disagreeing_images": np.flatnonzero(first != second).tolist()})
  write_json(os.path.join(out, "second_judge.json"), {"rule": SECOND_RULE, "rows": table})
  judge = table[0]["judge"]
  lines = [f"second judge: images showing the concept, the run's judge vs the {judge}"]
  for concept in dict.fromkeys(t["concept"] for t in table):
    mine = [t for t in table if t["concept"] == concept]
    cells = [f"{t['intervention']} {t['first_present']} vs {t['second_present']} of {t['images']}"
             for t in mine]
    lines.append(f"  {concept} ({mine[0]['category']}): " + ", ".join(cells))
  disagree = sum(len(t["disagreeing_images"]) for t in table)
  lines.append(f"  the judges disagree on {disagree} of {sum(t['images'] for t in table)} images"
               + (" (second_judge.json lists them)" if disagree else ""))
  return "\n".join(lines)


SECOND_RULE = ("a concept counts as shown where a judge's head for its category puts it first; "
               "only the categories the second judge reads are compared")


def write_page(out: str) -> str:
  """report.html, after run.json has the time (the page shows it)."""
  return page_lib.write(out)
