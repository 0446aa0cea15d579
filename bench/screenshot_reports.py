"""Open each HTML report (monitor, impact, validation) in a real headless browser, save a
screenshot, and fail on any console error.

Chromium and ChromeDriver from the Debian packages (``apt-get install chromium
chromium-driver``, and a CJK font such as ``fonts-wqy-zenhei`` so the Chinese texts render),
driven headless by Selenium: the page's console log is read after it
has loaded, and any message at the error level (``console.error``, an uncaught exception,
a resource that failed to load) is an error. The reports are made on
the demo's state (``make demo`` first): ``credref monitor``, ``credref validate`` on the
champion, and ``credref impact`` of a second, retrained version (same config and seed).

    python bench/screenshot_reports.py            # ~3 min on 2 cores, after make demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _credref(env: dict, *args: str) -> str:
    done = subprocess.run(
        [str(ROOT / ".venv/bin/credref"), *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"credref {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def make_reports(home: Path) -> dict[str, Path]:
    """The three reports on the demo's state; returns their HTML files."""
    env = {
        **os.environ,
        "CREDREF_HOME": str(home),
        "CREDREF_WAREHOUSE": str(home / "warehouse.duckdb"),
        "CREDREF_TODAY": "2026-09-30",
        "CREDREF_ANALYST": "report-check",
    }
    since = time.time()
    _credref(env, "monitor")
    _credref(env, "validate")
    _credref(env, "train", "--config", str(ROOT / "configs/demo.toml"))
    _credref(env, "impact")

    def newest(pattern: str) -> Path:
        found = [p for p in home.rglob(pattern) if p.stat().st_mtime >= since]
        if not found:
            raise SystemExit(f"no new {pattern} under {home}")
        return max(found, key=lambda p: p.stat().st_mtime)

    return {
        "monitor": newest("report.html"),
        "validation": newest("validation.html"),
        "impact": newest("impact.html"),
    }


def shoot(driver, html: Path, png: Path) -> dict:
    """A screenshot of ``html`` (its whole height) and the console messages it logged."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_window_size(1280, 1000)
    driver.get(html.resolve().as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    height = driver.execute_script("return document.documentElement.scrollHeight")
    # the window's size includes the browser's frame: leave room below the page's end
    driver.set_window_size(1280, min(int(height) + 400, 12000))
    driver.save_screenshot(str(png))
    log = driver.get_log("browser")  # console messages and uncaught errors of the page
    return {
        "html": str(html),
        "screenshot": str(png),
        "page_height_px": int(height),
        "screenshot_bytes": png.stat().st_size if png.exists() else 0,
        "console_messages": len(log),
        "console_errors": [e["message"] for e in log if e["level"] == "SEVERE"],
    }


def browser(binary: str):
    """Headless Chromium driven by ChromeDriver (both Debian packages)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)  # --no-sandbox: this runs as root in a container
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=ROOT / "var/demo")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/reports")
    ap.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--again", action="store_true", help="shoot the reports of the last run again")
    args = ap.parse_args()
    if not Path(args.browser).exists():
        raise SystemExit("no Chromium: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.again:
        last = json.loads((args.out / "reports.json").read_text())
        reports = {name: Path(r["html"]) for name, r in last.items()}
    else:
        reports = make_reports(args.home.resolve())
    driver = browser(args.browser)
    try:
        results = {
            name: shoot(driver, html, args.out / f"{name}.png") for name, html in reports.items()
        }
    finally:
        driver.quit()
    (args.out / "reports.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    bad = [n for n, r in results.items() if r["console_errors"] or not r["screenshot_bytes"]]
    if bad:
        sys.exit(f"reports with problems: {bad}")


if __name__ == "__main__":
    main()
