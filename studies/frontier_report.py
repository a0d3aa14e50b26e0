"""The summary of studies/finetune_frontier.py's stored units: the tuning on held-out concepts, each
variant's success on its frontier at fixed preservation losses, localized minus each control with
its exact sign-flip interval over concepts and that rule's false-positive rate and power on the same
differences, the words of one rule (paired.with_margin), its tables and figure."""
from __future__ import annotations

import numpy as np

from studies import clustered, paired, signflip
from studies.frontier import cluster_bootstrap, cluster_difference, success_at
from studies import finetune_frontier as ff

MEASURES = ("success", "preservation", "fidelity")
# The pixel judge's second reading of an operating point (finetune_frontier.measure's second_judge):
# name -> (its entry, which judge). The learned judge's numbers on the same images sit beside the
# pixel judge's, so a difference between the two is the judges', not the images'. Success exists for
# the concepts of the pixel judge's categories only; preservation is read over its categories.
SECOND = {"success, pixel judge": ("success", "second"),
          "success, learned judge": ("success", "first"),
          "preserved, pixel judge": ("preserved_accuracy", "second"),
          "preserved, learned judge": ("preserved_accuracy", "first")}
AGREEMENT = ("success", "preserved")
OPERATING = (*MEASURES, *SECOND, *(f"agreement, {a}" for a in AGREEMENT))
CURVE = tuple(round(0.005 * i, 3) for i in range(31))    # losses 0 .. 0.15 for the figure


# ------------------------------------------------------------------------------------- tuning
def tune(units: list[dict], bases: dict[str, dict], held_out: list[str], rates: list[float]) -> dict:
  """variant -> its operating point (rate, step) and reported rates by ff.TUNING_RULE, from the
  seed-0 runs of the held-out concepts (bases: concept -> the base model's unit)."""
  found = {}
  for variant in dict.fromkeys(u["variant"] for u in units):
    points = []
    for rate in rates:
      runs = [u for u in units if u["variant"] == variant and u["learning_rate"] == rate
              and u["seed"] == 0 and u["concept"] in held_out]
      if sorted(u["concept"] for u in runs) != sorted(held_out):
        continue                            # a rate not yet run on every held-out concept
      for i, step in enumerate(p["step"] for p in runs[0]["curve"]):
        loss = [bases[u["concept"]]["preservation"] - u["curve"][i]["preservation"] for u in runs]
        points.append({"rate": rate, "step": step, "loss": sum(loss) / len(loss),
                       "success": sum(u["curve"][i]["success"] for u in runs) / len(runs)})
    if not points:
      continue
    # (1e-9: a loss of exactly the margin, 0.90 - 0.85, is within it despite its last bit)
    within = [p for p in points if p["loss"] <= ff.MARGIN["preservation"] + 1e-9]
    best = (max(within, key=lambda p: (p["success"], -p["loss"])) if within
            else min(points, key=lambda p: p["loss"]))
    ordered = sorted(rates)
    i = ordered.index(best["rate"])
    other = ordered[i + 1] if i + 1 < len(ordered) else ordered[i - 1] if i else None
    found[variant] = {"operating": {"rate": best["rate"], "step": best["step"]},
                      "rates": sorted({best["rate"], *([other] if other is not None else [])}),
                      "points": points}
  return found


# ------------------------------------------------------------------------------------ summary
def cells(units: list[dict], tuned: dict, concepts: list[str]) -> dict:
  """(concept, seed, variant) -> the reported units at the variant's tuned rates, where all ran."""
  found: dict = {}
  for u in units:
    if u["concept"] in concepts and u["variant"] in tuned:
      found.setdefault((u["concept"], u["seed"], u["variant"]), []).append(u)
  return {key: runs for key, runs in found.items()
          if sorted(u["learning_rate"] for u in runs) == tuned[key[2]]["rates"]}


def frontier_values(cell: list[dict], base: dict, levels=ff.LEVELS) -> dict[float, float]:
  """Success on the cell's frontier (both rates, every step, the base model) at each loss level."""
  points = [(base["preservation"], base["success"])]
  points += [(p["preservation"], p["success"]) for u in cell for p in u["curve"]]
  return {level: success_at(points, base["preservation"] - level) for level in levels}


def operating_values(cell: list[dict], operating: dict) -> dict[str, float | None]:
  """The operating point's measures, its second-judge readings (SECOND) and the two judges'
  agreement (None where the pixel judge cannot read it)."""
  run = next(u for u in cell if u["learning_rate"] == operating["rate"])
  point = next(p for p in run["curve"] if p["step"] == operating["step"])
  both = point.get("second_judge", {})
  return {**{m: point[m] for m in MEASURES},
          **{name: both.get(entry, {}).get(judge) for name, (entry, judge) in SECOND.items()},
          **{f"agreement, {a}": both.get("agreement", {}).get(a) for a in AGREEMENT}}


def by_concept(values: dict, key) -> dict[str, list[float]]:
  """{concept: [value per seed]} from {(concept, seed): row} and a row -> value function."""
  found: dict[str, list[float]] = {}
  for (concept, _), row in sorted(values.items()):
    value = key(row)
    if value is not None:
      found.setdefault(concept, []).append(value)
  return found


def variant_summary(mine: dict, tuned: dict, runs: int) -> dict:
  """One variant's frontier at each loss level and its operating point's measures, each a mean
  over concepts with a cluster-bootstrap interval (mine: (concept, seed) -> values)."""
  return {"operating": tuned["operating"], "rates": tuned["rates"], "runs": runs,
          "frontier": {str(lv): cluster_bootstrap(by_concept(mine, lambda r: r["frontier"][lv]))
                       for lv in ff.LEVELS},
          "operating_values": {m: cluster_bootstrap(by_concept(mine, lambda r: r["operating"][m]))
                               for m in OPERATING},
          "mean_frontier": [float(np.mean([r["curve"][i] for r in mine.values()]))
                            for i in range(len(CURVE))]}


def differences(local: dict, control: dict, get) -> dict[str, list[float]]:
  """{concept: [localized minus the control, per seed]} of the value get(row) reads."""
  both = {key: (local[key], row) for key, row in control.items() if key in local}

  def difference(pair):
    mine, theirs = get(pair[0]), get(pair[1])
    return None if mine is None or theirs is None else mine - theirs
  return by_concept(both, difference)


def localized_minus(local: dict, control: dict) -> dict:
  """Localized minus the control per concept and seed, at each loss level on the frontiers and at
  the operating points, with the exact sign-flip interval over concepts."""
  def minus(get):
    return cluster_difference(differences(local, control, get))
  return {"matched": {str(lv): minus(lambda r: r["frontier"][lv]) for lv in ff.LEVELS},
          "operating": {m: minus(lambda r: r["operating"][m]) for m in (*MEASURES, *SECOND)}}


# A difference's interval by each rule: the one the words use, and the cluster bootstrap it
# replaced, kept here only to show on the same data why it was replaced.
EXACT, BOOTSTRAP = "exact sign-flip", "cluster bootstrap"
RULES = {EXACT: lambda found: signflip.difference(found)["interval"],
         BOOTSTRAP: lambda found: clustered.summary(found)["interval"]}


def calibration(local: dict, control: dict) -> dict:
  """level -> rule -> its false-positive rate and power (signflip.rates) on the success-at-
  matched-preservation differences of this comparison."""
  return {str(lv): {name: signflip.rates(differences(local, control, lambda r: r["frontier"][lv]),
                                         rule) for name, rule in RULES.items()}
          for lv in ff.LEVELS}


def summarize_objective(units: list[dict], bases: dict[str, dict], held_out: list[str],
                        reported: list[str], rates: list[float]) -> dict:
  """Tune on the held-out concepts' units, then compare the variants on the reported ones."""
  tuned = tune([u for u in units if u["concept"] in held_out], bases, held_out, rates)
  found = cells([u for u in units if u["concept"] in reported], tuned, reported)
  rows: dict = {}      # variant -> (concept, seed) -> its frontier, curve and operating point
  for (concept, seed, variant), cell in found.items():
    rows.setdefault(variant, {})[(concept, seed)] = {
        "frontier": frontier_values(cell, bases[concept]),
        "curve": list(frontier_values(cell, bases[concept], CURVE).values()),
        "operating": operating_values(cell, tuned[variant]["operating"])}
  variants = {v: variant_summary(mine, tuned[v], sum(len(found[(c, s, v)]) for c, s in mine))
              for v, mine in rows.items()}
  controls = [c for c in ff.CONTROLS if c in rows and "localized" in rows]
  versus = {c: localized_minus(rows["localized"], rows[c]) for c in controls}
  return {"held_out": held_out, "concepts": sorted({c for c, _, _ in found}),
          "seeds": sorted({s for _, s, _ in found}),
          "tuning_points": {v: t["points"] for v, t in tuned.items()},
          "variants": variants, "localized_minus": versus,
          "calibration": {c: calibration(rows["localized"], rows[c]) for c in controls},
          "base_model": {c: {m: bases[c][m] for m in ("success", "preservation")} for c in bases}}


def summarize(units: list[dict], bases: list[dict], held_out: list[str], reported: list[str],
              rates: list[float]) -> dict:
  """objective -> summarize_objective over the units of that objective."""
  out = {}
  for objective in dict.fromkeys(u["objective"] for u in units):
    mine = [u for u in units if u["objective"] == objective]
    base = {b["concept"]: b for b in bases if b["objective"] == objective}
    out[objective] = summarize_objective(mine, base, held_out, reported, rates)
  return out


# -------------------------------------------------------------------------------------- words
def words(row: dict, measure: str) -> str:
  """One rule for every comparison (paired.with_margin), words from paired.MIN_PAIRS concepts on."""
  return paired.with_margin(row, ff.MARGIN[measure], count="concepts")


def cell(row: dict, measure: str | None = None) -> str:
  """'0.12 [0.03, 0.20]' (an interval from MIN_PAIRS concepts on, else n), and the rule's words."""
  if row["mean"] is None:
    return "-"
  text = paired.cell(row, n=row["concepts"])
  return text if measure is None else f"{text} ({words(row, measure)})"


def _against(control: str, row: dict) -> str:
  said = words(row, "success")
  return (f"more success than {control}" if said.startswith("higher") else
          f"less success than {control}" if said.startswith("lower") else f"against {control}, {said}")


def claims(summary: dict) -> str:
  """One paragraph per objective, every sentence the rule's words on a comparison."""
  out = []
  level = str(ff.PRIMARY_LEVEL)
  for objective, s in summary.items():
    versus = s["localized_minus"]
    if not versus:
      out.append(f"**{objective}**: no localized-control pairs stored yet.")
      continue
    parts = [f"**{objective}** ({len(s['concepts'])} concepts x {len(s['seeds'])} seeds; rates "
             f"tuned on {', '.join(s['held_out'])})."]
    for lv in ff.LEVELS:
      parts.append(f"Success at a preservation loss of at most {lv:g}, localized minus: " + "; ".join(
          f"{c} {cell(r['matched'][str(lv)], 'success')}" for c, r in versus.items()) + ".")
    for measure in ff.MARGIN:
      parts.append(f"At the tuned operating points, {measure} (margin {ff.MARGIN[measure]:g}), "
                   "localized minus: " + "; ".join(
                       f"{c} {cell(r['operating'][measure], measure)}" for c, r in versus.items()) + ".")
    parts.append(second_judge_words(versus))
    primary = {c: r["matched"][level] for c, r in versus.items()}
    parts.append(f"At a loss of at most {ff.PRIMARY_LEVEL:g}, localized gives " + "; ".join(
        _against(c, r) for c, r in primary.items()) + ".")
    claim = (f"that for {objective} the blocks localization picks give more success than as many "
             "other blocks (random-K and bottom-K) at matched preservation")
    short = [(c, "no runs stored" if c not in primary else "not higher")
             for c in ("random-K", "bottom-K")
             if c not in primary or not words(primary[c], "success").startswith("higher")]
    parts.append(f"Supported: {claim}." if not short else
                 f"Not shown: {claim}; " + ", ".join(f"{why} for {c}" for c, why in short) + ".")
    parts.append(power_words(s.get("calibration", {})))
    out.append(" ".join(parts))
  return "\n\n".join(out)


def power_words(calibration: dict) -> str:
  """What the rule could have said at the headline level: its false positives and the true
  difference above which it says "higher" with power 0.8, on each comparison's own spread."""
  level = str(ff.PRIMARY_LEVEL)
  found = {c: by_level[level][EXACT] for c, by_level in calibration.items()
           if by_level.get(level, {}).get(EXACT)}
  if not found:
    return ""
  return (f"On these concepts' spread the rule says a false \"higher\" or \"lower\" in at most "
          f"{max(r['false_positive'] for r in found.values()):.3f} of the null's sign patterns, and "
          "says \"higher\" with power 0.8 only for a true difference in success above "
          + "; ".join(f"{round(r['delta_at_80'], 2) + 0.0:.2f} against {c}" for c, r in found.items()) + ".")


def margin_of(name: str) -> str:
  return "success" if name.startswith("success") else "preservation"


def second_judge_words(versus: dict) -> str:
  """The operating-point comparisons read again by the pixel judge, beside the learned judge's
  reading of the same images, and where the two judges' words differ."""
  said, differ = [], []
  for control, r in versus.items():
    found = {name: r["operating"][name] for name in SECOND}
    for measure in ("success", "preserved"):
      pixel, learned = found[f"{measure}, pixel judge"], found[f"{measure}, learned judge"]
      if pixel["mean"] is None:
        continue
      said.append(f"{control} {measure} {cell(pixel, margin_of(measure))} (learned judge, same "
                  f"images: {cell(learned, margin_of(measure))})")
      if words(pixel, margin_of(measure)) != words(learned, margin_of(measure)):
        differ.append(f"{measure} against {control}")
  if not said:
    return "The pixel judge read none of these runs."
  return ("Read again by the pixel judge (colour, position, place) at the operating points, "
          "localized minus: " + "; ".join(said) + ". "
          + (f"The two judges' words differ on {', '.join(differ)}." if differ
             else "The two judges' words agree on every one."))


def table(summary: dict) -> str:
  """Markdown per objective: each variant's frontier and operating point, then localized minus
  each control."""
  lines = []
  levels = [f"loss <= {lv:g}" for lv in ff.LEVELS]
  for objective, s in summary.items():
    lines += [f"**{objective}** ({len(s['concepts'])} concepts: {', '.join(s['concepts'])}; seeds "
              f"{', '.join(map(str, s['seeds']))}; held out for tuning: {', '.join(s['held_out'])}). "
              "Success on each variant's frontier at a preservation loss below the base model, and "
              "at the operating point the held-out tuning picked (mean [95 % cluster-bootstrap "
              f"interval over concepts, from {paired.MIN_PAIRS} concepts on; below that, n]):", "",
              "| variant | rates | operating point | runs | " + " | ".join(levels)
              + " | operating success | preservation | fidelity |",
              "|---|---|---|---|" + "---|" * (len(levels) + 3)]
    for variant, v in s["variants"].items():
      op = v["operating"]
      lines.append(f"| {variant} | {', '.join(f'{r:g}' for r in v['rates'])} | lr {op['rate']:g}, "
                   f"step {op['step']} | {v['runs']} | "
                   + " | ".join(cell(v["frontier"][str(lv)]) for lv in ff.LEVELS) + " | "
                   + " | ".join(cell(v["operating_values"][m]) for m in MEASURES) + " |")
    if s["localized_minus"]:
      lines += ["", "Localized minus each control, per concept and seed (mean [exact 95 % sign-flip "
                "interval over concepts, studies/signflip.py; with 6 concepts it runs from the "
                "smallest to the largest concept's mean]; words: studies/paired.py, with_margin):", "",
                "| control | " + " | ".join(levels) + " | operating success | preservation | fidelity |",
                "|---|" + "---|" * (len(levels) + 3)]
      for control, r in s["localized_minus"].items():
        lines.append(f"| {control} | "
                     + " | ".join(cell(r["matched"][str(lv)], "success") for lv in ff.LEVELS) + " | "
                     + " | ".join(cell(r["operating"][m], m) for m in MEASURES) + " |")
    lines += ["", calibration_table(s), "", second_judge_table(s)]
    lines.append("")
  return "\n".join(lines)


def calibration_table(s: dict) -> str:
  """The rule's false-positive rate and power on each comparison's own differences, beside the
  cluster bootstrap's on the same patterns."""
  found = s.get("calibration", {})
  rows = [(control, lv, by_rule) for control, levels in found.items() for lv, by_rule in levels.items()
          if by_rule[EXACT] is not None]
  if not rows:
    return f"No comparison has the {paired.MIN_PAIRS} concepts an exact interval needs yet."
  deltas = list(rows[0][2][EXACT]["power"])
  lines = ["How often each rule's interval excludes 0, enumerated over every sign pattern of the "
           "concepts' differences minus their mean (studies/signflip.py): when nothing differs "
           "(false positive, either direction; nominal 0.05) and when localized is better by delta "
           "(power). The words use the exact rule; the cluster bootstrap, which they used before, "
           "is shown on the same patterns.", "",
           "| control | loss <= | patterns | false positive, exact | "
           + " | ".join(f"power at {d}" for d in deltas)
           + " | power 0.8 above | false positive, bootstrap | power at 0.2, bootstrap |",
           "|---|---|---|---|" + "---|" * len(deltas) + "---|---|---|"]
  for control, lv, by_rule in rows:
    e, b = by_rule[EXACT], by_rule[BOOTSTRAP]
    lines.append(f"| {control} | {lv} | {e['patterns']} | {e['false_positive']:.3f} | "
                 + " | ".join(f"{e['power'][d]:.2f}" for d in deltas)
                 + f" | {e['delta_at_80']:.2f} | {b['false_positive']:.3f} | {b['power']['0.2']:.2f} |")
  return "\n".join(lines)


def second_judge_table(s: dict) -> str:
  """Each variant's operating point read by both judges (success on the pixel judge's concepts,
  preservation over its categories) with their image-by-image agreement, then localized minus
  each control under each judge."""
  names = [*SECOND, *(f"agreement, {a}" for a in AGREEMENT)]
  lines = ["Read again by the pixel judge (rule-based; colour, position and place only), at the "
           "operating points, on the same images as the learned judge:", "",
           "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for variant, v in s["variants"].items():
    lines.append(f"| {variant} | " + " | ".join(cell(v["operating_values"][n]) for n in names) + " |")
  if s["localized_minus"]:
    lines += ["", "| localized minus | " + " | ".join(SECOND) + " |", "|---|" + "---|" * len(SECOND)]
    for control, r in s["localized_minus"].items():
      lines.append(f"| {control} | " + " | ".join(cell(r["operating"][n], margin_of(n))
                                                 for n in SECOND) + " |")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Each variant's mean frontier (success against the preservation loss allowed), one panel per
  objective; the loss levels the tables read as dotted lines."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 4), squeeze=False)
  for ax, (objective, s) in zip(axes[0], summary.items()):
    for variant, v in s["variants"].items():
      ax.plot(CURVE, v["mean_frontier"], label=f"{variant} (lr {', '.join(f'{r:g}' for r in v['rates'])})")
    for lv in ff.LEVELS:
      ax.axvline(lv, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("preservation loss allowed (below the base model)")
    ax.set_ylabel("success on the frontier\n(mean over concepts and seeds)")
    ax.set_title(objective), ax.grid(alpha=0.3), ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
