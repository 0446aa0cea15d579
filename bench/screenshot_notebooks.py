"""Run each notebook on the demo's state as a reader would, render it to HTML, open it in
headless Chromium, save a screenshot, and fail on an error cell or a console error.

Needs ``make demo`` first, and Chromium with ChromeDriver (``apt-get install chromium
chromium-driver fonts-wqy-zenhei``); uses ``bench/screenshot_reports.py``'s browser.

    python bench/screenshot_notebooks.py      # ~3 min on 2 cores, after make demo
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot_reports import browser, shoot

ROOT = Path(__file__).resolve().parents[1]


def run(path: Path, home: Path, work: Path) -> tuple[Path, int, list[str]]:
    """The notebook executed on ``home`` (a kernel of its own), as HTML; and its error cells."""
    os.environ |= {
        "CREDREF_HOME": str(home),
        "CREDREF_WAREHOUSE": str(home / "warehouse.duckdb"),
        "CREDREF_TODAY": "2026-09-30",
        "MPLBACKEND": "Agg",
    }
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = sum(o.output_type == "error" for o in outputs)
    said = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    warnings = [line for line in said.splitlines() if "Warning" in line or "WARNING" in line]
    html, _ = HTMLExporter().from_notebook_node(nb)
    # nbconvert's page loads require.js and MathJax from a CDN; these notebooks use neither
    # (no widgets, no formulas), and the machines reach no CDN: the page is read offline
    html = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", html)
    out = work / f"{path.stem}.html"
    out.write_text(html, encoding="utf-8")
    return out, errors, warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=ROOT / "var/demo")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/notebooks")
    ap.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    if not Path(args.browser).exists():
        raise SystemExit("no Chromium: apt-get install chromium chromium-driver")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        pages = {
            p.stem: run(p, args.home.resolve(), Path(tmp))
            for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
        }
        driver = browser(args.browser)
        try:
            for name, (html, errors, warned) in pages.items():
                shot = shoot(driver, html, args.out / f"{name}.png")
                results[name] = {
                    **shot,
                    "html": f"{name}.html",
                    "error_cells": errors,
                    "warnings": warned,
                }
        finally:
            driver.quit()
    (args.out / "notebooks.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    bad = [n for n, r in results.items() if r["error_cells"] or r["console_errors"]]
    if bad:
        sys.exit(f"notebooks with problems: {bad}")


if __name__ == "__main__":
    main()
