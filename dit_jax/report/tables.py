"""A run's verdict as text for people: the terminal and summary.txt tables (three tables, each with
its legend), the markdown tables results documents carry, and the time-window table. NumPy-free
formatting of the verdict's entries (dit_jax/verdict/summary.py); no JAX."""
from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

from dit_jax import files
from dit_jax.verdict import sets, stats, summary


SUMMARY_COLUMNS = (   # (header, key, format) of markdown_summary, the README's table
    ("K", "k", "{}"), ("concepts", "concepts", "{}"), ("original", "original", "{:.3f}"),
    ("top drop", "top_drop", "{:+.3f}"), ("random drop", "random_drop", "{:+.3f}"),
    ("draws", "random_draws", "{}"), ("bottom drop", "bottom_drop", "{:+.3f}"),
    ("reverse", "reverse_presence", "{:.3f}"), ("rev random", "reverse_random_presence", "{:.3f}"),
    ("neutral", "neutral_presence", "{:.3f}"), ("other drop", "other_drop", "{:+.3f}"),
    ("top/random", "top_over_random", "{:.1f}x"))


def summary_table(rows: Sequence[dict], by: str = "category",
                  entries: Sequence[dict] | None = None) -> str:
  """Fixed-width text of `summarize` (or its `entries`, already computed), for a terminal: three
  tables, one line per group and K, each with a legend: the drops with their intervals, the tests
  against the random controls with the verdict, and the other controls."""
  entries = summary.summarize(rows, by) if entries is None else list(entries)
  parts = []
  for title, columns, legend in SUMMARY_TABLES:
    parts += [title, *_text_table(entries, by, columns), "", *legend(entries), ""]
  rule = [wrapped for line in summary.AUTO_K_RULE.splitlines() for wrapped in textwrap.wrap(line, 100)]
  return "\n".join(parts + rule)


def _text_table(entries: Sequence[dict], by: str, columns) -> list[str]:
  header = [by] + [h for h, _ in columns]
  table = [header] + [[str(e[by])] + [render(e) for _, render in columns] for e in entries]
  widths = [max(len(line[i]) for line in table) for i in range(len(header))]
  lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                     enumerate(zip(line, widths))).rstrip() for line in table]
  body = []
  for index, (entry, line) in enumerate(zip(entries, lines[1:])):
    if index and entry[by] != entries[index - 1][by]:   # a blank line between groups
      body.append("")
    body.append(line)
  return [lines[0], "-" * len(lines[0])] + body


def _estimate(key: str, signed: bool = False):
  """A figure with its 95% interval, "0.42 [0.30, 0.55]" ("-": no data; no interval: no units)."""
  fmt = "{:+.2f}" if signed else "{:.2f}"

  def render(entry: dict) -> str:
    value, interval = entry.get(key), entry.get(f"{key}_interval")
    if value is None:
      return "-"
    if interval is None:
      return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"
  return render


def _p_value(key: str):
  def render(entry: dict) -> str:
    p = entry.get(key)
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"
  return render


def _plain(key: str, fmt: str):
  return lambda entry: _cell(entry.get(key), fmt)


def _verdict(entry: dict, key: str = "localized") -> str:
  return {True: "yes", False: "no", None: "-"}[entry.get(key)]


def _flag(key: str):
  return lambda entry: _verdict(entry, key)


def _test(test: str, key: str, fmt: str):
  """A figure of one of sets.group_tests' tests ("-" where it was not run)."""
  def render(entry: dict) -> str:
    found = (entry.get("tests") or {}).get(test)
    return "-" if not found or found.get(key) is None else fmt.format(found[key])
  return render


def _test_interval(test: str, key: str):
  def render(entry: dict) -> str:
    found = (entry.get("tests") or {}).get(test)
    if not found or found.get(key) is None:
      return "-"
    low, high = found[f"{key}_interval"]
    return f"{found[key]:+.2f} [{low:+.2f}, {high:+.2f}]"
  return render


def _holds(test: str):
  def render(entry: dict) -> str:
    found = (entry.get("tests") or {}).get(test)
    return "-" if not found else {True: "yes", False: "no"}[found["holds"]]
  return render


def _ratio_cell(entry: dict) -> str:
  if (entry["top_over_random"] is None and entry["top_drop"] is not None
      and entry["random_drop"] is not None and entry["random_drop"] <= 0
      and entry["top_drop"] >= summary.MIN_TOP_DROP):
    return "inf"   # random-K did not lower presence at all
  return _cell(entry["top_over_random"], "{:.1f}x")


def _draws(entry: dict) -> str:
  return f"{entry.get('random_draws', 0)}/{entry.get('depth_draws', 0)}"


def _pool(entries: Sequence[dict]) -> str:
  overlap = {e.get("random_overlap") for e in entries} - {None}
  return {frozenset({True}): "every block (a draw may share blocks with the top-K)",
          frozenset({False}): "the blocks outside the top-K"}.get(frozenset(overlap), "not recorded")


def _drops_legend(entries: Sequence[dict]) -> list[str]:
  return [
      "units: (prompt, seed) pairs, pooled over the group's concepts; [a, b]: the 95% bootstrap",
      f"interval of the mean over units (BCa, {stats.RESAMPLES} resamples). original: presence at "
      "K=0;",
      "drops: presence at K=0 minus presence after the intervention. random: mean over random-K",
      f"draws, drawn per concept from {_pool(entries)};",
      "depth: the same over depth-matched draws (as many blocks from each third of the blocks as",
      "the top-K has there, outside the top-K where the third has room"
      + (": here some had not)." if any(e.get("depth_overlap") for e in entries) else ").")]


def _verdict_legend(entries: Sequence[dict]) -> list[str]:
  measures = {(e.get("tests") or {}).get("measure") for e in entries} - {None}
  draws = sorted({((e.get("tests") or {}).get("removal") or {}).get("draws") for e in entries} - {None})
  return [
      f"presence counted as {' and '.join(sorted(measures)) or '-'} per image (dit_jax/verdict/sets.py);"
      f" {'/'.join(map(str, draws)) or 'no'} random K-sets per concept and K.",
      "drop: top-K's drop (mean over concepts of the mean over units); beats: the share of random",
      "K-sets it removes more than; p set: (1 + #{sets >= top}) / (R + 1), never below 1 / (R + 1);",
      "p adj: Benjamini-Hochberg over the run's tests; top-null: top-K minus the mean set, with the",
      "95% interval of a hierarchical bootstrap (concepts, prompts, seeds). reverse gain: presence",
      "with the concept only in the top-K minus the neutral prompt everywhere, its p adj against the",
      "same in random K-sets. floor: original above neutral and chance; specific: no more damage",
      "to the rest of the image than the neutral prompt everywhere (- : the judge has no context).",
      *sets.RULE.splitlines()]


def _tests_legend(entries: Sequence[dict]) -> list[str]:
  return [
      "Secondary, per image: top-random, top-depth: per unit, top-K's drop minus the control's drop",
      "averaged over its draws, then the mean over units with its 95% interval. p: the one-sided",
      "paired sign-flip permutation test over units that it is > 0 (scipy permutation_test); it asks",
      "whether top-K beats the average set, not whether it is unusual among sets, and decides nothing.",
      "p draws: (1 + #{draws whose drop >= top-K's}) / (draws + 1), drops averaged over units."]


def _controls_legend(entries: Sequence[dict]) -> list[str]:
  return [
      "draws: random-K / depth-matched draws per concept. other drop: the other categories'",
      "accuracy drop under top-K. top/random: top-K's drop over random-K's, information only (-",
      f"where top-K's is under {summary.MIN_TOP_DROP}: a ratio of noise; inf where random-K's is "
      "not positive).",
      "reverse: presence with the concept only in the top-K blocks (the neutral prompt elsewhere);",
      "rev random: the same in random-K blocks; neutral: the neutral prompt in every block."]


VERDICT_COLUMNS = (   # (header, render): the set-level verdict (dit_jax/verdict/sets.py)
    ("K", _plain("k", "{}")), ("drop", _test("removal", "statistic", "{:+.2f}")),
    ("beats", _test("removal", "beats", "{:.0%}")), ("p set", _test("removal", "p", "{:.3f}")),
    ("p adj", _p_value("p_removal_adjusted")), ("top-null", _test_interval("removal", "excess")),
    ("reverse gain", _plain("reverse_gain", "{:+.2f}")),
    ("p rev adj", _p_value("p_sufficiency_adjusted")), ("floor", _holds("floor")),
    ("specific", _holds("specificity")), ("removable", _flag("removable")),
    ("sufficient", _flag("sufficient")), ("localized", _flag("localized")))


SUMMARY_TABLES = (   # (title, columns (header, render), legend)
    ("Verdict: top-K among random K-block sets", VERDICT_COLUMNS, _verdict_legend),
    ("Drops, with 95% intervals over (prompt, seed) units",
     (("K", _plain("k", "{}")), ("units", _plain("units", "{}")), ("original", _estimate("original")),
      ("top drop", _estimate("top_drop", True)), ("random drop", _estimate("random_drop", True)),
      ("depth drop", _estimate("depth_drop", True))), _drops_legend),
    ("Secondary: top-K against the average random-K and depth-matched set, per image",
     (("K", _plain("k", "{}")), ("top-random", _estimate("top_minus_random", True)),
      ("p", _p_value("p_random")), ("p draws", _p_value("p_random_draws")),
      ("top-depth", _estimate("top_minus_depth", True)), ("p", _p_value("p_depth")),
      ("p draws", _p_value("p_depth_draws"))), _tests_legend),
    ("Other controls",
     (("K", _plain("k", "{}")), ("concepts", _plain("concepts", "{}")), ("draws", _draws),
      ("bottom drop", _plain("bottom_drop", "{:+.3f}")), ("other drop", _plain("other_drop", "{:+.3f}")),
      ("top/random", _ratio_cell), ("reverse", _plain("reverse_presence", "{:.3f}")),
      ("rev random", _plain("reverse_random_presence", "{:.3f}")),
      ("neutral", _plain("neutral_presence", "{:.3f}"))), _controls_legend))


def markdown_summary(entries: Sequence[dict], by: str = "category") -> str:
  """`summarize`'s entries as a Markdown table (the README's), numbers as summary_table prints them."""
  header = [by] + [h for h, _, _ in SUMMARY_COLUMNS] + ["localized"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_cells(e, by)) + " |" for e in entries]
  return "\n".join(lines)


MARKDOWN_STATISTICS = (   # (header, render): the README's table, the verdict with its figures
    ("K", _plain("k", "{}")), ("units", _plain("units", "{}")), ("original", _estimate("original")),
    ("neutral", _plain("neutral_presence", "{:.2f}")), *VERDICT_COLUMNS[1:],
    ("p units", _p_value("p_random")))


def markdown_statistics(entries: Sequence[dict], by: str = "category") -> str:
  """`summarize`'s entries as a Markdown table of the drops with intervals and the tests."""
  header = [by] + [h for h, _ in MARKDOWN_STATISTICS]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join([str(e[by])] + [render(e) for _, render in MARKDOWN_STATISTICS]) + " |"
            for e in entries]
  return "\n".join(lines)


def _cells(entry: dict, by: str) -> list[str]:
  """One Markdown summary line's cells: the group, SUMMARY_COLUMNS, the sets."""
  cells = [str(entry[by])] + [_cell(entry[key], fmt) for _, key, fmt in SUMMARY_COLUMNS]
  cells[-1] = _ratio_cell(entry)
  return cells + [_verdict(entry)]


def _cell(value, fmt: str) -> str:
  return "-" if value is None else fmt.format(value)


def write_summary(rows: Sequence[dict], out_dir: str, answer: Sequence[str] = (),
                  entries: Sequence[dict] | None = None, tail: str = "") -> list[dict]:
  """summary.txt (the answer in words first, then the tables, then `tail`) and summary.json
  (`summarize`'s entries, computed here unless given); returns the entries."""
  entries = summary.summarize(rows) if entries is None else list(entries)
  head = "".join(line + "\n" for line in answer) + ("\n" if answer else "")
  text = head + summary_table(rows, entries=entries) + "\n" + (f"\n{tail}\n" if tail else "")
  files.write_text(os.path.join(out_dir, "summary.txt"), text)
  files.write_json(os.path.join(out_dir, "summary.json"), entries, indent=1, allow_nan=False)
  return entries


def time_table(rows: Sequence[dict], windows: Sequence[tuple]) -> str:
  """Per category, the presence drop (original minus after, mean over concepts) of top-K and of
  every block when they act only on one window's steps ("top@<window>", "all@<window>"), against
  every step ("top"; every block at every step is the "neutral" row)."""
  ks = sorted({r["k"] for r in rows if r["kind"] == "top"})
  header = ["category", "window", "steps"] + [f"top-{k}" for k in ks] + ["all blocks"]
  table = [header]
  for category in dict.fromkeys(r["category"] for r in rows):
    mine = [r for r in rows if r["category"] == category]
    originals = {r["concept"]: r["presence"] for r in mine if r["kind"] == "none"}

    def drop(kind, k=None):
      drops = [originals[r["concept"]] - r["presence"] for r in mine if r["kind"] == kind
               and (k is None or r["k"] == k) and r["concept"] in originals]
      return _cell(summary.mean_or_none(drops), "{:+.3f}")

    for index, (name, start, end) in enumerate(list(windows) + [("all", 0, None)]):
      steps = "every" if end is None else f"{start}:{end}"
      suffix = "" if name == "all" else f"@{name}"
      table.append([category if index == 0 else "", name, steps]
                   + [drop("top" + suffix, k) for k in ks]
                   + [drop("all" + suffix) if suffix else drop("neutral")])
  widths = [max(len(line[i]) for line in table) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(line, widths))).rstrip() for line in table]
  return "\n".join(["time windows: presence drop (original minus after) when the intervention acts "
                    "only on a window's", "sampling steps (step 0 is the noisiest; 'all': every "
                    "step; 'all blocks' at every step is the neutral row).",
                    lines[0], "-" * len(lines[0])] + lines[1:])
