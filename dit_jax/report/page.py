"""One self-contained page per localization run: report.html, built from the files the run wrote.

    python -m dit_jax.report.page runs/localize_shapes       # (re)build <run>/report.html

The page is what a person opens first: the answer (the first paragraph of summary.txt, `answer`),
the verdict tables with their intervals and p-values (split so the page reads at 1280 px without
scrolling sideways; tests/report_html_test.py checks it in chromium), automatic
K with its rule, the score heatmap and block x timestep maps, K curves with their bands, the
localizers' agreement matrix and the image grids. Every image is embedded as a data: URI and the
style is inline, so the file can be mailed or archived alone and makes no network request; it
carries no script. Sections whose files a run did not write (no agreement without a second
localizer, no time maps without time windows) are left out, so the page reads any run, old or new.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import glob
import html
import os
from collections.abc import Sequence

from dit_jax import files
from dit_jax.verdict import sets

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1em; margin: 1.2em 0 0.3em; }
.answer { font-size: 1.15em; font-weight: 600; background: #eef4fb; border-left: 4px solid #4a7fb5;
          padding: 0.5em 0.8em; white-space: pre-line; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }
.scroll { overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 3px 5px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; white-space: normal; vertical-align: bottom; }
td.group, th.group { text-align: left; font-weight: 600; } td.note { text-align: left; }
tr.yes td.verdict { background: #d6f5d6; } tr.no td.verdict { background: #f8d7d7; }
td.ci { color: #666; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; image-rendering: pixelated; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; } .figures figure { margin: 0; flex: 1 1 640px; }
figcaption { font-size: 0.85em; color: #555; } pre { background: #f7f7f7; padding: 0.7em;
       white-space: pre-wrap; font-size: 0.8em; } details pre { white-space: pre; overflow-x: auto; }
.meta { color: #555; font-size: 0.9em; } .meta code { overflow-wrap: anywhere; }
details { margin: 0.4em 0; } summary { cursor: pointer; font-weight: 600; }
"""

# The summary's columns as (title, [(header, key)]) tables, in summary.json's (summary.summarize)
# keys: one wide table ran off a 1400 px screen, so each table keeps to a dozen columns (each repeats
# the group and K). A key with "<key>_interval" beside it gets its 95% interval printed under it;
# p-values get 3 digits; floor and specific are the verdict's tests (entry["tests"]).
TABLES = (
    ("Verdict: top-K among random K-block sets",
     (("K", "k"), ("units", "units"), ("original", "original"), ("top-K drop", "top_drop"),
      ("beats (share of random K-sets)", "beats"), ("p set", "p_set"),
      ("p adj", "p_removal_adjusted"), ("top &minus; mean set", "top_minus_null"),
      ("removable", "removable"), ("floor", "floor"), ("specific", "specificity"))),
    ("Sufficiency: the concept only in the top-K blocks",
     (("K", "k"), ("reverse gain", "reverse_gain"), ("p reverse adj", "p_sufficiency_adjusted"),
      ("sufficient", "sufficient"), ("reverse", "reverse_presence"),
      ("neutral everywhere", "neutral_presence"))),
    ("Controls: random and depth-matched K-sets (per image, secondary)",
     (("K", "k"), ("random-K drop", "random_drop"), ("top &minus; random", "top_minus_random"),
      ("p", "p_random"), ("p draws", "p_random_draws"), ("depth-matched drop", "depth_drop"),
      ("top &minus; depth", "top_minus_depth"), ("p", "p_depth"), ("p draws", "p_depth_draws"))),
    ("Other controls: the bottom-K blocks, and what top-K does to the other categories",
     (("K", "k"), ("bottom-K drop", "bottom_drop"), ("other categories' drop", "other_drop"))),
)
TESTS = ("floor", "specificity")   # read from entry["tests"][key]["holds"]
COLUMNS = tuple(column for _, columns in TABLES for column in columns)
ANSWER_LINES = 40  # at most this many lines of summary.txt's first paragraph (the answer) head the page


def data_uri(path: str) -> str:
  with open(path, "rb") as f:
    return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def figure(path: str, caption: str) -> str:
  return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption)}">'
          f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _number(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return f"{value:.2f}"
  return html.escape(str(value))


def _cell(key: str, value) -> str:
  if key.startswith("p_") and isinstance(value, float):
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"
  if isinstance(value, float) and ("drop" in key or "minus" in key or "gain" in key):
    return f"{value:+.2f}"
  return _number(value)


def _value(entry: dict, key: str):
  if key in TESTS:
    return ((entry.get("tests") or {}).get(key) or {}).get("holds")
  return entry.get(key)


def verdict_table(entries: Sequence[dict]) -> str:
  """summary.json's entries in the TABLES, one row per category and K; intervals under their
  figures; a table whose columns no entry has is left out."""
  if not entries:
    return "<p>No summary: the run has no intervention results yet.</p>"
  by = "category" if "category" in entries[0] else "concept"
  return "".join(_table(title, columns, entries, by) for title, columns in TABLES
                 if any(_value(e, k) is not None for e in entries for _, k in columns if k != "k"))


def _table(title: str, columns, entries: Sequence[dict], by: str) -> str:
  columns = [(h, k) for h, k in columns if k in TESTS or any(k in e for e in entries)]
  head = "".join(f'<th title="{k}">{h}</th>' for h, k in columns)
  rows = []
  for e in entries:
    verdict = {True: "yes", False: "no", None: "-"}[e.get("localized")]
    cells = [f'<td class="group">{html.escape(str(e[by]))}</td>',
             f'<td class="verdict">{verdict}</td>']
    for _, key in columns:
      interval = e.get(key + "_interval")
      under = (f'<br><span class="ci">[{_cell(key, interval[0])}, {_cell(key, interval[1])}]</span>'
               if interval else "")
      cells.append(f"<td>{_cell(key, _value(e, key))}{under}</td>")
    rows.append(f'<tr class="{verdict}">' + "".join(cells) + "</tr>")
  return (f"<h3>{title}</h3><div class='scroll'><table><tr><th class='group'>{by}</th>"
          f"<th>localized</th>{head}</tr>" + "".join(rows) + "</table></div>")


def answer(out_dir: str) -> str | None:
  """The page's one-line answer: the first paragraph of <out_dir>/summary.txt (its first
  ANSWER_LINES lines at most), which the summary's writer fills; None without one."""
  path = os.path.join(out_dir, "summary.txt")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    paragraph = f.read().strip().split("\n\n")[0].splitlines()
  return "\n".join(paragraph[:ANSWER_LINES]) or None


def auto_k_table(auto: dict) -> str:
  rule = auto.get("rule", "")
  rows = "".join(
      f'<tr><td class="group">{html.escape(c)}</td><td>{_number(a.get("k"))}</td>'
      f'<td>{_number(a.get("k_crossing"))}</td><td>{_number(a.get("target"))}</td>'
      f'<td class="note">{"" if a.get("present", True) else "never present: no K"}</td></tr>'
      for c, a in auto.items() if isinstance(a, dict))
  return (f"<pre>{html.escape(rule)}</pre><table><tr><th class='group'>category</th>"
          f"<th>automatic K</th><th>crossing</th><th>target</th><th></th></tr>{rows}</table>")


# agreement.json's per-pair figures: (header, key, format).
AGREEMENT_COLUMNS = (("Kendall tau", "kendall_tau", "{:+.2f}"),
                     ("top-K overlap", "top_k_overlap", "{:.0%}"), ("concepts", "concepts", "{}"))


def agreement_table(agreement: dict) -> str:
  """agreement.json (its by_category: per category, each localizer pair's mean Kendall tau and
  top-K overlap): one narrow table, a row per category and pair."""
  table = agreement.get("by_category", agreement)
  head = "".join(f"<th>{h}</th>" for h, _, _ in AGREEMENT_COLUMNS)
  rows = "".join(
      f'<tr><td class="group">{html.escape(category)}</td><td class="group">{html.escape(pair)}</td>'
      + "".join(f"<td>{_format(fmt, values.get(key))}</td>" for _, key, fmt in AGREEMENT_COLUMNS)
      + "</tr>"
      for category, pairs in table.items() if isinstance(pairs, dict)
      for pair, values in pairs.items() if isinstance(values, dict))
  if not rows:
    return ""
  k = f" (top-K at K = {agreement['k']})" if "k" in agreement else ""
  return (f"<table><tr><th class='group'>category</th><th class='group'>localizers{k}</th>{head}"
          f"</tr>{rows}</table>")


def _format(fmt: str, value) -> str:
  return "-" if value is None else html.escape(fmt.format(value))


def _figures(out_dir: str, pattern: str, caption) -> str:
  paths = sorted(glob.glob(os.path.join(out_dir, pattern)))
  return ('<div class="figures">' + "".join(figure(p, caption(p)) for p in paths) + "</div>"
          if paths else "")


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0].replace("_", " ")


def _read(out_dir: str, name: str, default):
  path = os.path.join(out_dir, name)
  return files.read_json(path) if os.path.exists(path) else default


def build(out_dir: str) -> str:
  """The page's HTML for the run in out_dir."""
  run = _read(out_dir, "run.json", {})
  config = run.get("config", {})
  entries = _read(out_dir, "summary.json", [])
  auto = _read(out_dir, "auto_k.json", {})
  agreement = _read(out_dir, "agreement.json", {})
  summary_txt = ""
  if os.path.exists(os.path.join(out_dir, "summary.txt")):
    with open(os.path.join(out_dir, "summary.txt")) as f:
      summary_txt = f.read()
  title = f"Localization: {config.get('model', '?')} ({os.path.basename(os.path.abspath(out_dir))})"
  meta = [f"checkpoint <code>{html.escape(str(config.get('checkpoint', '?')))}</code>",
          f"{run.get('num_blocks', '?')} blocks", f"K swept: {run.get('ks', '?')}",
          f"seeds {files.recorded_value(config, 'seeds', '?')}",
          f"judge: {html.escape(str(run.get('judge', {}).get('name', '?')))}"]
  if "seconds" in run:
    load = run.get("load_average") or []
    meta.append(f"{run['seconds']:.0f} s" + (f" (load {load[0]:.1f})" if load else ""))
  said = answer(out_dir)
  parts = [f"<h1>{html.escape(title)}</h1>",
           *([f"<p class='answer'>{'<br>'.join(map(html.escape, said.splitlines()))}</p>"]
             if said else []),
           f"<p class='meta'>{' &middot; '.join(meta)}<br>page written "
           f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
           *(["<p class='verdict no'><b>Placebo run</b> (config.placebo): every top-K is a random "
              "set, so every &ldquo;yes&rdquo; below is a false positive.</p>"]
             if files.recorded_value(config, "placebo", False) else []),   # runs before studies/placebo.py
           "<h2>Verdict</h2>", f"<pre>{html.escape(sets.RULE)}</pre>", verdict_table(entries),
           "<details><summary>How to read this table (summary.txt)</summary>"
           f"<pre>{html.escape(summary_txt)}</pre></details>",
           "<h2>Automatic K</h2>", auto_k_table(auto)]
  sections = [
      ("Where the scores put each concept", _figures(out_dir, "heatmap*.png", lambda p: "block scores"
                                                     " (row-normalised; circles: top-K)")),
      ("Blocks x timesteps", _figures(out_dir, "maps/*.png", _stem)),
      ("Presence against K", _figures(out_dir, "curves/*.png", _stem)),
      ("Localizer agreement", _figures(out_dir, "agreement*.png", lambda p: "Kendall tau / top-K "
                                       "overlap between localizers") + agreement_table(agreement)),
  ]
  for name, body in sections:
    if body:
      parts += [f"<h2>{name}</h2>", body]
  grids = sorted(glob.glob(os.path.join(out_dir, "grids", "*.png")))
  if grids:
    parts.append("<h2>Images</h2><p>One row per intervention, one column per prompt and seed.</p>")
    parts += [f"<details><summary>{html.escape(_stem(p))}</summary>{figure(p, _stem(p))}</details>"
              for p in grids]
  return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
          f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
          + "\n".join(parts) + "</body></html>\n")


def write(out_dir: str) -> str:
  """<out_dir>/report.html; returns its path."""
  path = os.path.join(out_dir, "report.html")
  files.write_text(path, build(out_dir))
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dir", help="a localize.py output folder")
  args = parser.parse_args(argv)
  if not os.path.exists(os.path.join(args.run_dir, "run.json")):
    raise SystemExit(f"{args.run_dir} has no run.json: not a localize.py output folder")
  print(write(args.run_dir))


if __name__ == "__main__":
  main()
