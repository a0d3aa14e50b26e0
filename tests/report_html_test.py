"""report.html: self-contained, and it renders in a real headless browser without errors."""
import base64
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from dit_jax import files, report_html

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# .ci/run installs the browser and sets this, so CI can never skip the browser tests.
REQUIRE_BROWSER = os.environ.get("DIT_JAX_REQUIRE_BROWSER") == "1"
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not REQUIRE_BROWSER,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")


def open_page(path: str, tmp_path) -> dict:
  """Load a page in headless chromium; what it rendered, fetched and logged."""
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM or "/usr/bin/chromium"
  # As the machine's own probe starts it: no sandbox as root, and no background connections to
  # hosts this closed network refuses.
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}"):
    options.add_argument(flag)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER or "/usr/bin/chromedriver"), options=options)
  try:
    driver.get("file://" + os.path.abspath(path))
    return {
        "state": driver.execute_script("return document.readyState"),
        "title": driver.title,
        "images": driver.execute_script(
            "return Array.from(document.images).map(i => ({complete: i.complete, "
            "width: i.naturalWidth, src: i.getAttribute('src').slice(0, 30)}))"),
        "fetched": driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"),
        "log": driver.get_log("browser"),
        "tables": driver.execute_script("return document.querySelectorAll('table').length"),
    }
  finally:
    driver.quit()


def problems(page: dict) -> list[str]:
  """What is wrong with a loaded page: not loaded, a broken image, a fetch, a console error."""
  found = [] if page["state"] == "complete" else [f"document.readyState is {page['state']}"]
  found += [f"image {i} did not render ({img['src']}...)" for i, img in enumerate(page["images"])
            if not img["complete"] or img["width"] == 0]
  found += [f"fetched {url}" for url in page["fetched"]]
  found += [f"console {entry['level']}: {entry['message']}" for entry in page["log"]
            if entry["level"] in ("SEVERE", "WARNING")]
  return found


def png_bytes(seed: int) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 255, (16, 24, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def fake_run(folder) -> str:
  """A run folder with every file the page reads (numbers made up)."""
  os.makedirs(folder / "curves")
  os.makedirs(folder / "grids")
  files.write_json(folder / "run.json", {"config": {"model": "pixart", "checkpoint": "/x",
                                                    "seeds": [0]}, "num_blocks": 12, "ks": [2, 4],
                                         "judge": {"name": "shapes"}, "seconds": 61.5,
                                         "load_average": [1.2, 1.0, 0.9]})
  files.write_json(folder / "summary.json", [
      {"category": "shape", "k": 2, "units": 6, "original": 0.5, "top_drop": 0.31,
       "top_drop_interval": [0.2, 0.42], "random_drop": 0.05, "random_drop_interval": [0.0, 0.1],
       "p_random": 0.004, "localized": True},
      {"category": "place", "k": 2, "units": 6, "original": 0.9, "top_drop": 0.02,
       "top_drop_interval": [-0.05, 0.09], "random_drop": 0.01, "p_random": 0.41,
       "localized": False}])
  files.write_json(folder / "auto_k.json", {"rule": "automatic K: ...", "shape": {"k": 2,
                                            "k_crossing": 1.4, "target": 0.5}})
  files.write_text(folder / "summary.txt", "shape 2 ...\n")
  for i, name in enumerate(("heatmap.png", "curves/shape.png", "grids/circle.png")):
    (folder / name).write_bytes(png_bytes(i))
  return report_html.write(str(folder))


def test_the_page_is_self_contained_and_shows_intervals_and_p_values(tmp_path):
  page = open(fake_run(tmp_path)).read()
  assert "[+0.20, +0.42]" in page and "0.004" in page and 'title="p_random"' in page
  # Nothing outside the file: every src is a data: URI, no link, no script.
  srcs = page.split('src="')[1:]
  assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
  assert "<script" not in page and "<link" not in page and "http" not in page.replace(
      "http-equiv", "")
  assert 'class="yes"' in page and 'class="no"' in page     # the verdict is coloured per row


@needs_browser
def test_the_page_renders_in_headless_chromium(tmp_path):
  page = open_page(fake_run(tmp_path / "run"), tmp_path)
  assert problems(page) == [] and page["tables"] >= 2 and len(page["images"]) == 3


@needs_browser
def test_the_browser_check_catches_a_broken_image(tmp_path):
  """The check can fail: a page with a corrupt image and a console error is caught."""
  path = tmp_path / "broken.html"
  bad = base64.b64encode(b"not a png").decode()
  path.write_text(f'<!DOCTYPE html><html><body><img src="data:image/png;base64,{bad}">'
                  '<script>console.error("boom")</script></body></html>')
  found = problems(open_page(str(path), tmp_path))
  assert any("did not render" in p for p in found) and any("boom" in p for p in found)


@needs_browser
@pytest.mark.slow   # a short localization of the shipped model (~30 s)
def test_a_localize_run_writes_a_report_that_renders(tmp_path):
  from tests.localize_cli_test import run_localize
  run_localize(tmp_path / "out", num_steps=2, categories=("shape",), random_draws=2)
  path = tmp_path / "out" / "report.html"
  page = open_page(str(path), tmp_path)
  assert problems(page) == []
  # heatmap, one K curve, one grid (at least): every picture the run drew is on the page.
  assert len(page["images"]) >= 3 and page["title"].startswith("Localization: pixart")
