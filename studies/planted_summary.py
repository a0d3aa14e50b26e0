"""The planted-knowledge table under one rule for every way of planting: precision@|set| of each
ranking over every planting (failures included) and over the plantings that took, each with a
bootstrap interval that resamples plantings with their seeds inside (studies/clustered.py), the
random ranking beside them, n took / n tried, and every run listed with its blocks and each
ranking's precision, the failed ones too. The pixel judge's reading of the look's colour checks
each take (pixel_check) where the attempt stored it.

  confined   routes text (studies/planted_knowledge.py): every weight trains, but only the planted
             blocks read the name. Kept as it came out, one seed per planting.
  mlp        the name reaches every block; only the planted blocks' feed-forward trains
             (studies/planted_weights.py).
  attention  the name reaches every block; only the planted blocks' self- and cross-attention train.

A run is one planting on one training seed. Its outcome is its final attempt's: "took" (the look
reached LOOK_FLOOR), "failed" (it did not, on the last rung of the ladder) or "pending" (it did not,
and a rung is left: studies/planted_weights.py tries it next). Pending runs are in no precision.
The ladder's length decides, not a flag stored with the attempt: a ladder made longer reopens the
runs that failed on its old last rung.
"""
from __future__ import annotations

from studies import clustered, paired
from studies import planted_knowledge as pk

TITLES = {
    "confined": "confined (routes text: the name reaches only the planted blocks' cross-attention; "
                "every weight trains)",
    "mlp": "mlp (the name reaches every block; only the planted blocks' feed-forward trains)",
    "attention": "attention (the name reaches every block; only the planted blocks' self- and "
                 "cross-attention train)",
}
BY_CONSTRUCTION = {"mlp", "attention"}   # only the planted blocks' weights move: weight change is exact


def precisions(run: dict, num_blocks: int = 12) -> dict[str, float]:
  """ranking -> precision@|set| of one measured run; the random ranking's is its expectation."""
  sources = dict(run["localizer_scores"])
  if run.get("weight_change") is not None:
    sources[pk.WEIGHT_CHANGE] = run["weight_change"]
  found = {label: pk.precision(scores, run["blocks"]) for label, scores in sources.items()}
  found[pk.RANDOM] = len(run["blocks"]) / num_blocks
  return found


def seed_runs(units: list[dict], ladder_length: int) -> list[dict]:
  """One row per (method, planting, seed) from its attempt units: the attempts in rung order and
  the last one's outcome on a ladder of `ladder_length` rungs. The rungs must run 1, 2, ... with no
  gap (a gap is a lost unit)."""
  grouped: dict[tuple, list[dict]] = {}
  for unit in units:
    grouped.setdefault((unit["method"], unit["label"], unit["seed"]), []).append(unit)
  rows = []
  for (method, label, seed), attempts in grouped.items():
    attempts = sorted(attempts, key=lambda u: u["rung"])
    if [u["rung"] for u in attempts] != list(range(len(attempts))):
      raise ValueError(f"{method} {label} seed {seed}: attempts at rungs "
                       f"{[u['rung'] + 1 for u in attempts]}, not 1, 2, ...: a unit is missing")
    last = attempts[-1]
    status = ("took" if last["took"] else "failed" if last["rung"] + 1 >= ladder_length
              else "pending")
    row = {key: last[key] for key in ("method", "label", "kind", "name", "seed")}
    row.update(blocks=list(last["blocks"]), status=status, look_accuracy=last["look_accuracy"],
               look_colour=last.get("second_judge"),   # attempts run before the pixel judge have none
               attempts=[{k: u[k] for k in ("steps", "learning_rate", "look_accuracy")} for u in attempts])
    if status != "pending":
      row["precision"] = precisions(last)
    rows.append(row)
  return rows


def confined_runs(sets: list[dict]) -> list[dict]:
  """The stored confined plantings (planted_knowledge.json "sets") as runs: one attempt each."""
  rows = []
  for r in sets:
    if r.get("method") != "confined":
      continue
    run = {"blocks": r["planted_blocks"], "localizer_scores": r["localizer_scores"],
           "weight_change": r.get("weight_change")}
    took = bool(r["look_accuracy"] >= pk.LOOK_FLOOR)
    rows.append({"method": "confined", "label": r["label"], "kind": r["kind"], "name": r["name"],
                 "seed": r["seed"], "blocks": list(r["planted_blocks"]),
                 "status": "took" if took else "failed", "look_accuracy": r["look_accuracy"],
                 "attempts": [{"steps": r["steps"], "learning_rate": r["learning_rate"],
                               "look_accuracy": r["look_accuracy"]}],
                 "precision": precisions(run)})
  return rows


def by_planting(runs: list[dict], label: str) -> dict[str, list[float]]:
  clusters: dict[str, list[float]] = {}
  for r in runs:
    clusters.setdefault(r["label"], []).append(r["precision"][label])
  return clusters


def summarize_method(runs: list[dict], planned: int | None = None) -> dict:
  """One method's runs -> counts and, per ranking, precision over every finished run and over
  those that took (each a mean of planting means with its interval over plantings)."""
  finished = [r for r in runs if r["status"] != "pending"]
  took = [r for r in finished if r["status"] == "took"]
  plantings = {r["label"] for r in runs}
  outcome = lambda label: [r["status"] == "took" for r in finished if r["label"] == label]
  labels = dict.fromkeys(label for r in finished for label in r["precision"])
  return {"runs": len(runs), "planned": planned, "finished": len(finished), "took": len(took),
          "pending": len(runs) - len(finished), "plantings": len(plantings),
          "plantings_took_any": sum(any(outcome(p)) for p in plantings),
          # both seeds finished and took (one finished seed that took is not "both")
          "plantings_took_all": sum(len(outcome(p)) >= 2 and all(outcome(p)) for p in plantings),
          "precision": {label: {"every": clustered.summary(by_planting(finished, label)),
                                "took": clustered.summary(by_planting(took, label)) if took else None}
                        for label in labels},
          "failed": [{k: r[k] for k in ("label", "blocks", "name", "seed", "attempts", "precision")}
                     for r in finished if r["status"] == "failed"],
          "pixel_judge": pixel_check(finished)}


def pixel_check(finished: list[dict]) -> dict:
  """The pixel judge on the takes: the look's colour is part of the whole look, so a take the
  learned judge saw in LOOK_FLOOR of the images has its colour in at least as many; the pixel judge
  contradicts it where it reads that colour in fewer. Over the finished runs it read."""
  read = [r for r in finished if r.get("look_colour")]
  took = [r for r in read if r["status"] == "took"]
  return {"read": len(read), "took_read": len(took),
          "contradicted": [f"{r['label']} seed {r['seed']}" for r in took
                           if r["look_colour"]["second"] < pk.LOOK_FLOOR],
          "agreement": (sum(r["look_colour"]["agreement"] for r in read) / len(read)) if read else None}


def summarize(runs: list[dict], planned: dict[str, int] | None = None) -> dict:
  planned = planned or {}
  methods = dict.fromkeys(["confined", *planned, *(r["method"] for r in runs)])
  return {m: summarize_method([r for r in runs if r["method"] == m], planned.get(m)) for m in methods}


# ------------------------------------------------------------------------------------ markdown
def _cell(found: dict | None) -> str:
  """'0.62 [0.40, 0.80]'; below paired.MIN_PAIRS plantings the mean and their number, no interval
  (a bootstrap of 2-5 plantings undercovers)."""
  if not found or found["mean"] is None:
    return "-"
  if found["clusters"] < paired.MIN_PAIRS or found["interval"] is None:
    return f"{found['mean']:.2f} (n = {found['clusters']} plantings)"
  low, high = found["interval"]
  return f"{found['mean']:.2f} [{low:.2f}, {high:.2f}]"


def counts_line(method: str, s: dict) -> str:
  plantings = (f", in {s['plantings_took_any']} of {s['plantings']} plantings (both seeds in "
               f"{s['plantings_took_all']})" if method != "confined"
               else f" ({s['plantings']} plantings, one seed each)")
  pending = f"; {s['pending']} pending (a rung left to try)" if s["pending"] else ""
  if s.get("planned") and s["finished"] < s["planned"]:
    pending += f"; partial: {s['finished']} of {s['planned']} planned runs finished"
  return f"**{TITLES[method]}**: {s['took']} of {s['finished']} runs took{plantings}{pending}." + pixel_words(s)


def pixel_words(s: dict) -> str:
  check = s.get("pixel_judge") or {}
  if not check.get("read"):
    return ""
  contradicted = check["contradicted"]
  return (f" The pixel judge read the look's colour in {check['read']} of the finished runs: it "
          f"contradicts {len(contradicted)} of the {check['took_read']} takes among them (the colour "
          f"in fewer than {pk.LOOK_FLOOR:g} of the images{': ' + ', '.join(contradicted) if contradicted else ''}); "
          f"the two judges agree on the colour in {check['agreement']:.2f} of the images.")


def method_table(method: str, s: dict) -> str:
  lines = [counts_line(method, s), "",
           "| ranking | precision@\\|set\\|, every planting (failures included) | plantings that took |",
           "|---|---|---|"]
  order = sorted(s["precision"].items(), key=lambda kv: -(kv[1]["every"]["mean"] or 0))
  for label, p in order:
    note = " (exact by construction)" if label == pk.WEIGHT_CHANGE and method in BY_CONSTRUCTION else ""
    lines.append(f"| {label}{note} | {_cell(p['every'])} | {_cell(p['took'])} |")
  return "\n".join(lines)


def runs_table(runs: list[dict]) -> str:
  """Every run, failed or pending ones included, with each ranking's precision on it."""
  labels = list(dict.fromkeys(l for r in runs if "precision" in r for l in r["precision"]
                              if l != pk.RANDOM))
  lines = ["| method | planting | blocks | name | seed | attempts: steps @ rate: look | outcome | "
           "look colour: pixel / learned judge (agree) | " + " | ".join(labels) + " |",
           "|---" * (8 + len(labels)) + "|"]
  for r in runs:
    tried = "; ".join(f"{a['steps']} @ {a['learning_rate']:g}: {a['look_accuracy']:.2f}"
                      for a in r["attempts"])
    cells = [f"{r['precision'][l]:.2f}" if "precision" in r and l in r["precision"] else "-"
             for l in labels]
    colour = r.get("look_colour")
    colour = (f"{colour['second']:.2f} / {colour['first']:.2f} ({colour['agreement']:.2f})"
              if colour else "-")
    lines.append(f"| {r['method']} | {r['label']} | {r['blocks']} | {r['name']} | {r['seed']} | "
                 f"{tried} | {r['status']} | {colour} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def outcome_by_name(runs: list[dict]) -> str:
  """'quib 2 of 2, vexa 0 of 1': how often each name's finished runs took."""
  names: dict[str, list[bool]] = {}
  for r in runs:
    if r["status"] != "pending":
      names.setdefault(r["name"], []).append(r["status"] == "took")
  return ", ".join(f"{name} {sum(v)} of {len(v)}"
                   for name, v in sorted(names.items(), key=lambda kv: (-sum(kv[1]) / len(kv[1]), kv[0])))
