"""Open a household's own report (``credref household report``, both languages) in a real
headless browser, save a screenshot of each, and fail on any console error.

The browser is the one ``bench/screenshot_reports.py`` drives (Debian's Chromium and
ChromeDriver through Selenium, a CJK font for the Chinese page). The report is made on the
demo's state (``make demo`` first) for the household the demo printed, or ``--uscc``:

    python bench/screenshot_household.py                # ~20 s after make demo
    python bench/screenshot_household.py --uscc 9232...  # another household
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

from screenshot_reports import browser, shoot

ROOT = Path(__file__).resolve().parents[1]


def demo_household(home: Path) -> str:
    """The household whose report ``make demo`` wrote (the newest in ``<home>/reports``)."""
    found = sorted((home / "reports").glob("*.html"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no report under {home}/reports: run make demo first, or pass --uscc")
    return found[-1].name.split("-", 1)[0]


def make_reports(home: Path, uscc: str, out: Path) -> dict[str, Path]:
    """The household's report in each language, written under ``out``."""
    env = {
        **os.environ,
        "CREDREF_HOME": str(home),
        "CREDREF_WAREHOUSE": str(home / "warehouse.duckdb"),
        "CREDREF_TODAY": "2026-09-30",
    }
    pages = {}
    for lang in ("en", "zh"):
        done = subprocess.run(
            [str(ROOT / ".venv/bin/credref"), "household", "report", uscc, "--lang", lang,
             "--out", str(out)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"credref household report failed:\n{done.stderr}")
        (pages[lang],) = out.glob(f"{uscc}-*-{lang}.html")
    return pages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=ROOT / "var/demo")
    ap.add_argument("--uscc", help="the household (default: the one make demo reported on)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/household")
    ap.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    if not Path(args.browser).exists():
        raise SystemExit("no Chromium: apt-get install chromium chromium-driver")
    home = args.home.resolve()
    uscc = args.uscc or demo_household(home)
    args.out.mkdir(parents=True, exist_ok=True)
    pages = make_reports(home, uscc, args.out)
    driver = browser(args.browser)
    try:
        results = {
            lang: shoot(driver, html, args.out / f"household-report-{lang}.png")
            for lang, html in pages.items()
        }
    finally:
        driver.quit()
    (args.out / "household.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if any(r["console_errors"] for r in results.values()):
        raise SystemExit("console errors: see above")


if __name__ == "__main__":
    main()
