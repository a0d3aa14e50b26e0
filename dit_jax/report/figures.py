"""What a localization run writes for people to read: score tables, heatmaps, K curves, image grids,
intervention tables and the verdict. Plain Python and numpy in, files out (no JAX), so a finished run
can be re-plotted from its JSON on any machine.

    scores: {concept: records.ScoreRecord as a dict ("category", "with_wo": [L], "without_wo": [L],
             "paper": [L] (absent from records written before it), ...)}
    rows:   [records.InterventionRow as a dict ("concept", "category", "kind", "k", "draw", "blocks",
             "presence", "other": {category: accuracy})]

Row kinds: "none" (the original, K=0), "top", "bottom", "random" (draws 0..), "depth_random" (draws
0..: random-K with the top-K's depth profile), "reverse" (the concept
prompt only in the top-K blocks), "reverse_random" (only in a random-K draw's blocks), "neutral" (the
neutral prompt in every block) and "single" (one block). Every file goes to a temporary name and is
renamed into place, so a killed run never leaves a torn file.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from dit_jax.verdict import summary, stats
from dit_jax import files
from dit_jax.models.variants import DESCRIPTIONS, VARIANTS, stored_scores, variant_index

CURVE_STYLES = {"top": ("top-K", "tab:red"), "random": ("random-K", "tab:blue"),
                "depth_random": ("depth-matched random-K", "tab:orange"),
                "bottom": ("bottom-K", "tab:green"), "reverse": ("reverse (concept only in top-K)", "tab:purple"),
                "reverse_random": ("reverse, random-K (concept only there)", "tab:pink")}


# ---------------------------------------------------------------------------------------------- files

def _write_json(path: str, obj) -> None:
  # allow_nan=False: NaN/inf are not JSON; callers turn undefined numbers into None first.
  files.write_json(path, obj, indent=1, allow_nan=False)


def _write_csv(path: str, header: Sequence[str], table: Sequence[Sequence]) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(table)
  files.write_text(path, buffer.getvalue())


def _save_figure(fig: Figure, path: str) -> None:
  # format= because the temporary name has no .png suffix to infer it from.
  files.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi))


# --------------------------------------------------------------------------------------------- scores

def _concepts_by_category(scores: dict) -> dict[str, list[str]]:
  groups: dict[str, list[str]] = {}
  for concept, entry in scores.items():
    groups.setdefault(entry["category"], []).append(concept)
  return groups


def write_scores(scores: dict, out_dir: str, block_labels: Sequence[str] | None = None) -> None:
  """scores.json (the dict as given) and scores.csv (one row per concept x block, a score and a
  rank per variant, ranks 1 = top; empty cells where a record predates a variant)."""
  _write_json(os.path.join(out_dir, "scores.json"), scores)
  table = []
  for concept, entry in scores.items():
    values = [entry.get(v) or [] for v in VARIANTS]
    ranks = [summary.block_ranks(v) if v else [] for v in values]
    for block in range(len(entry["with_wo"])):
      label = block_labels[block] if block_labels else str(block)
      table.append([concept, entry["category"], block, label,
                    *(repr(float(v[block])) if v else "" for v in values),
                    *(r[block] if len(r) else "" for r in ranks)])
  _write_csv(os.path.join(out_dir, "scores.csv"),
             ["concept", "category", "block", "block_label", *VARIANTS, *(f"rank_{v}" for v in VARIANTS)],
             table)


def heatmap(scores: dict, path: str, variant: str = "with_wo",
            block_labels: Sequence[str] | None = None, k: int | None = None) -> None:
  """Concepts (grouped by category) x blocks, each row divided by its max; circles mark the top-K."""
  variant_index(variant)   # a clear error for an unknown variant (and one a record lacks, below)
  groups = _concepts_by_category(scores)
  concepts = [c for members in groups.values() for c in members]
  raw = np.array([stored_scores(scores[c], variant) for c in concepts], float)
  # Concepts differ in scale (token count, frequency), so rows are compared by shape, not height.
  peak = raw.max(axis=1, keepdims=True)
  matrix = raw / np.where(peak > 0, peak, 1.0)
  num_rows, num_blocks = matrix.shape
  labels = list(block_labels) if block_labels else [str(b) for b in range(num_blocks)]
  if len(labels) != num_blocks:
    raise ValueError(f"{len(labels)} block labels for {num_blocks} blocks")

  fig = Figure(figsize=(3.5 + 0.2 * num_blocks, 1.6 + 0.3 * num_rows), dpi=110, layout="constrained")
  ax = fig.add_subplot()
  image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
  ax.set_yticks(range(num_rows), concepts, fontsize=8)
  ax.set_xticks(range(num_blocks), labels, rotation=90, fontsize=7)
  ax.set_xlabel("block")
  if k:
    for row, concept in enumerate(concepts):
      top = np.argsort(-raw[row], kind="stable")[:k]
      ax.scatter(top, [row] * len(top), s=30, facecolors="none", edgecolors="red", linewidths=1.2)
  # Category names on the right, centred on their group, with a white rule between groups.
  middles, start = [], 0
  for members in groups.values():
    if start:
      ax.axhline(start - 0.5, color="white", linewidth=2.5)
    middles.append(start + (len(members) - 1) / 2)
    start += len(members)
  side = ax.secondary_yaxis("right")
  side.set_yticks(middles, list(groups), fontsize=9, fontweight="bold")
  side.tick_params(length=0)
  bar = fig.colorbar(image, ax=ax, pad=0.02, fraction=0.03)
  bar.set_label("score / row max", fontsize=8)
  marked = f", circles: top-{k}" if k else ""
  ax.set_title(f"attention contribution ({DESCRIPTIONS[variant]}){marked}", fontsize=10)
  _save_figure(fig, path)


# ------------------------------------------------------------------------------------ interventions

LEGEND_FONTSIZE = 10   # points; at 7 a legend was unreadable on the page


def k_curve(rows: Sequence[dict], concept_or_category: str, path: str) -> None:
  """Presence vs K for top- (with its 95% bootstrap band over units), random- (mean and min..max
  band over draws), depth-matched random-, bottom-K and the reverse."""
  chosen = summary.select_rows(rows, concept_or_category)
  baseline = summary.mean_or_none([r["presence"] for r in chosen if r["kind"] == "none"])
  fig = Figure(figsize=(8, 4), dpi=110, layout="constrained")
  ax = fig.add_subplot()
  neutral = summary.mean_or_none([r["presence"] for r in chosen if r["kind"] == "neutral"])
  if baseline is not None:
    ax.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="original (K=0)")
  if neutral is not None:
    ax.axhline(neutral, color="gray", linestyle=":", linewidth=1, label="neutral prompt everywhere")
  for kind, (label, color) in CURVE_STYLES.items():
    curve = summary.presence_by_k(chosen, kind)
    if not curve:
      continue
    ks, values = list(curve), list(curve.values())
    backward = kind.startswith("reverse")
    start = neutral if backward else baseline   # removal curves start at the original, reverse at neutral
    if start is not None:
      ks, values = [0] + ks, [start] + values
    ax.plot(ks, values, marker="o", color=color, label=label, linestyle=":" if backward else "-")
    bands = [top_interval(chosen, k) for k in curve] if kind == "top" else []
    if bands and all(b is not None for b in bands):
      ax.fill_between(list(curve), *zip(*bands), color=color, alpha=0.15, linewidth=0,
                      label="top-K 95% interval over units")
    if kind == "random" and len({r["draw"] for r in chosen if r["kind"] == "random"}) > 1:
      lows, highs = zip(*[summary.random_band(chosen, k) for k in curve])
      ax.fill_between(list(curve), lows, highs, color=color, alpha=0.2, linewidth=0,
                      label="random-K min..max over draws")
  other = summary.other_accuracy_by_k(chosen)
  if other:
    ax.plot(list(other), list(other.values()), marker="s", markersize=4, color="black", alpha=0.6,
            label="top-K: other categories' accuracy")
  concepts = sorted({r["concept"] for r in chosen})
  subject = concept_or_category if len(concepts) == 1 else f"{concept_or_category} ({len(concepts)} concepts)"
  ax.set_title(f"knowledge presence vs K: {subject}", fontsize=10)
  ax.set_xlabel("K (blocks intervened on)")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_ylabel("presence (judge)")
  ax.set_ylim(-0.03, 1.03)
  ax.grid(alpha=0.3)
  # Outside: curves fill the axes. 10 pt: report.html shows the figure at about its own size.
  ax.legend(fontsize=LEGEND_FONTSIZE, loc="upper left", bbox_to_anchor=(1.01, 1))
  _save_figure(fig, path)


def top_interval(rows: Sequence[dict], k: int) -> tuple[float, float] | None:
  """The 95% bootstrap interval of top-K's presence at K over the rows' pooled (prompt, seed)
  units (stats.bootstrap_interval); None where the rows carry no per-image scores."""
  units = [x for r in rows if r["kind"] == "top" and r["k"] == k for x in r.get("scores") or []]
  return stats.bootstrap_interval(units) if units else None


def write_rows(rows: Sequence[dict], out_dir: str) -> None:
  """interventions.jsonl (rows as given) and interventions.csv (blocks space-separated, other_<cat>)."""
  files.write_text(os.path.join(out_dir, "interventions.jsonl"),
              "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
  others = sorted({cat for r in rows for cat in r.get("other", {})})
  table = [[r["concept"], r["category"], r["kind"], r["k"], r["draw"], " ".join(map(str, r["blocks"])),
            repr(float(r["presence"]))] + [_csv_number(r.get("other", {}).get(cat)) for cat in others]
           for r in rows]
  _write_csv(os.path.join(out_dir, "interventions.csv"),
             ["concept", "category", "kind", "k", "draw", "blocks", "presence"]
             + [f"other_{cat}" for cat in others], table)


def _csv_number(value: float | None) -> str:
  return "" if value is None else repr(float(value))


# -------------------------------------------------------------------------------------------- summary


def image_grid(images: dict[str, np.ndarray], path: str, labels: bool = True,
               column_labels: Sequence[str] | None = None, min_size: int = 128, gap: int = 4) -> None:
  """One row per intervention (its name on the left), one column per prompt; uint8 (P, H, W, 3) each.

  Small images are enlarged by a whole factor (nearest neighbour) to at least `min_size` pixels so
  32x32 samples stay crisp and visible.
  """
  names = list(images)
  stacks = [np.asarray(images[n]) for n in names]
  shapes = {s.shape for s in stacks}
  if (len(shapes) != 1 or len(next(iter(shapes))) != 4 or next(iter(shapes))[-1] != 3
      or any(s.dtype != np.uint8 for s in stacks)):
    raise ValueError("want uint8 images of one (P, H, W, 3) shape for every intervention, got "
                     f"{ {n: (s.shape, str(s.dtype)) for n, s in zip(names, stacks)} }")
  num_prompts, height, width, _ = stacks[0].shape
  scale = max(1, math.ceil(min_size / min(height, width)))
  tile_h, tile_w = height * scale, width * scale
  font = ImageFont.load_default(size=14)
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  left = int(max(probe.textlength(n, font=font) for n in names)) + 3 * gap if labels else 0
  top = 22 if labels else 0
  canvas = Image.new("RGB", (left + num_prompts * (tile_w + gap) + gap,
                             top + len(names) * (tile_h + gap) + gap), "white")
  draw = ImageDraw.Draw(canvas)
  for row, (name, stack) in enumerate(zip(names, stacks)):
    y = top + gap + row * (tile_h + gap)
    for col, tile in enumerate(stack):
      big = np.repeat(np.repeat(tile, scale, 0), scale, 1)
      canvas.paste(Image.fromarray(big), (left + gap + col * (tile_w + gap), y))
    if labels:
      draw.text((gap, y + tile_h // 2), name, fill="black", font=font, anchor="lm")
  if labels:
    heads = column_labels or [f"prompt {i}" for i in range(num_prompts)]
    for col, head in enumerate(heads):
      x = left + gap + col * (tile_w + gap)
      draw.text((x + tile_w // 2, top // 2 + 1), _fit(head, tile_w, draw, font), fill="black",
                font=font, anchor="mm")
  files.write_atomically(path, lambda tmp: canvas.save(tmp, format="PNG"))


def _fit(text: str, width: int, draw: ImageDraw.ImageDraw, font) -> str:
  """The text, cut with an ellipsis to fit `width` pixels (prompts are longer than a tile)."""
  if draw.textlength(text, font=font) <= width:
    return text
  while text and draw.textlength(text + "...", font=font) > width:
    text = text[:-1]
  return text + "..."


# ----------------------------------------------------------------------------------------------- time

def causal_time_map(rows: Sequence[dict], concept: str, windows: Sequence[tuple]) -> dict | None:
  """The (windows x blocks) presence drop of single-block interventions limited to each window
  (rows "single@<window>"), and of every step ("single") where the run has them: the original's
  presence minus the intervention's. None where the concept has no windowed single-block rows."""
  mine = [r for r in rows if r["concept"] == concept]
  original = summary.mean_or_none([r["presence"] for r in mine if r["kind"] == "none"])
  singles = {(r.get("window", "all"), r["blocks"][0]): r["presence"] for r in mine
             if r["kind"].split("@")[0] == "single"}
  if original is None or not any(w != "all" for w, _ in singles):
    return None
  num_blocks = 1 + max(b for _, b in singles)
  drop = lambda w: [None if (w, b) not in singles else original - singles[(w, b)]
                    for b in range(num_blocks)]
  return {"windows": [{"name": w[0], "start": w[1], "end": w[2]} for w in windows],
          "original": original, "drop": [drop(w[0]) for w in windows],
          "all_steps": drop("all") if any(w == "all" for w, _ in singles) else None}


def time_map(concept: str, entry: dict, rows: Sequence[dict], windows: Sequence[tuple], path: str,
             block_labels: Sequence[str] | None = None) -> None:
  """<path>.png and <path>.json: the concept's block x timestep maps. Attention: the score with
  W_O (no bias) of every block at every sampling step (ScoreRecord.per_step_with_wo), divided by its
  max; with time windows and single blocks, causal: the presence drop of withholding the concept
  from one block on one window's steps only (causal_time_map), red = the concept is lost."""
  # (steps, blocks); a localizer without per-step scores leaves it empty: no attention panel then.
  attention = np.asarray(entry.get("per_step_with_wo") or [], float)
  causal = causal_time_map(rows, concept, windows)
  if attention.ndim != 2 and not causal:
    return
  num_blocks = attention.shape[1] if attention.ndim == 2 else len(causal["drop"][0])
  labels = list(block_labels) if block_labels else [str(b) for b in range(num_blocks)]
  _write_json(path + ".json", {"concept": concept, "category": entry["category"],
                               "block_labels": labels, "per_step_with_wo": attention.tolist(),
                               "causal": causal})
  causal_rows = []
  if causal:
    causal_rows = [(f"{w['name']} {w['start']}:{w['end']}", d) for w, d in
                   zip(causal["windows"], causal["drop"])]
    if causal["all_steps"]:
      causal_rows.append(("every step", causal["all_steps"]))
  heights = ([max(len(attention), 4)] if attention.ndim == 2 else []) + (
      [max(len(causal_rows), 2)] if causal_rows else [])
  fig = Figure(figsize=(3.5 + 0.25 * num_blocks, 1.5 + 0.18 * sum(heights)), dpi=110,
               layout="constrained")
  axes = list(fig.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0])
  if attention.ndim == 2:
    ax = axes[0]
    peak = attention.max()
    image = ax.imshow(attention / (peak if peak > 0 else 1.0), aspect="auto", cmap="viridis",
                      vmin=0, vmax=1, interpolation="nearest")
    for w in windows[1:]:   # window boundaries on the attention map
      ax.axhline(w[1] - 0.5, color="white", linewidth=1, linestyle="--")
    ax.set_ylabel("sampling step (0: noisiest)", fontsize=8)
    ax.set_title(f"{concept} ({entry['category']}): attention contribution (with W_O) / max",
                 fontsize=9)
    fig.colorbar(image, ax=ax, pad=0.02, fraction=0.03)
  if causal_rows:
    ax = axes[-1]
    matrix = np.array([[np.nan if v is None else v for v in d] for _, d in causal_rows], float)
    scale = max(float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 0.0, 1e-6)
    image = ax.imshow(matrix, aspect="auto", cmap="RdBu_r", vmin=-scale, vmax=scale,
                      interpolation="nearest")
    ax.set_yticks(range(len(causal_rows)), [name for name, _ in causal_rows], fontsize=8)
    ax.set_title(f"{concept}: presence drop, one block withheld in the window (original "
                 f"{causal['original']:.2f})", fontsize=9)
    fig.colorbar(image, ax=ax, pad=0.02, fraction=0.03)
  for ax in axes:
    ax.set_xticks(range(num_blocks), labels, rotation=90, fontsize=7)
  axes[-1].set_xlabel("block")
  _save_figure(fig, path + ".png")

