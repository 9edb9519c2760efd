"""Render a report in headless Chromium and check it: the screenshot is not blank, the DOM after the page's
JavaScript ran holds one sample card per per-sample row of the records, and the filter script counted them all.

    python -m evals.report.screenshot results/geneval/world-tiny-geneval.json --png /tmp/report.png
    python -m evals.report.screenshot A.json B.json --png results/figures/report_screenshot.png \\
        --record results/bench/report_render.json          # the committed screenshot + its check record

Chromium is Debian's ``chromium`` (``apt-get install -y chromium``); without it the script exits 3 naming the
package. Exit 1 when a check fails, with the failed checks printed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--allow-file-access-from-files")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _chromium(browser: str, *args: str, timeout: int = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{browser} {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


class _Cards(HTMLParser):
    """Counts elements whose class list holds ``card`` and reads the text of ``#n-shown``."""

    def __init__(self):
        super().__init__()
        self.cards, self.shown, self._in_shown = 0, None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.cards += "card" in (a.get("class") or "").split()
        self._in_shown = a.get("id") == "n-shown"

    def handle_data(self, data):
        if self._in_shown:
            self.shown, self._in_shown = data.strip(), False


def pixel_stats(png: str | Path) -> dict:
    """Pixel statistics that tell a rendered page from a blank or single-colour one."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        x = np.asarray(im.convert("RGB"), dtype=np.int16)
    background = np.median(x.reshape(-1, 3), axis=0)
    differs = np.abs(x - background).sum(-1) > 30
    colours = len(np.unique(x.reshape(-1, 3)[:: 7], axis=0))
    return {"width": int(x.shape[1]), "height": int(x.shape[0]), "std": float(x.std()),
            "non_background_fraction": float(differs.mean()), "distinct_colours_sampled": int(colours)}


def check(index: str | Path, png: str | Path, expected_cards: int, window: str = "1400,2000",
          browser: str | None = None) -> dict:
    """Screenshot + DOM checks of a rendered ``index.html``; returns the measurements and the failed checks."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no headless Chromium found (" + ", ".join(BROWSERS) + "); install Debian's "
                                "'chromium' package: apt-get install -y chromium")
    url = Path(index).resolve().as_uri()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    _chromium(browser, f"--window-size={window}", f"--screenshot={Path(png).resolve()}", url)
    dom = _Cards()
    dom.feed(_chromium(browser, "--virtual-time-budget=5000", "--dump-dom", url))
    stats = pixel_stats(png)
    failed = []
    if dom.cards != expected_cards:
        failed.append(f"{dom.cards} sample cards in the rendered DOM, expected {expected_cards}")
    if dom.shown != str(expected_cards):
        failed.append(f"the filter script shows {dom.shown!r} samples, expected {expected_cards} (did it run?)")
    if stats["std"] < 10 or stats["non_background_fraction"] < 0.05 or stats["distinct_colours_sampled"] < 50:
        failed.append(f"the screenshot looks blank: {stats}")
    return {"cards": dom.cards, "shown": dom.shown, "expected_cards": expected_cards, "pixels": stats,
            "browser": _chromium(browser, "--version").strip() or Path(browser).name, "failed": failed}


def expected_cards(records: list[str | Path]) -> int:
    """One card per per-sample row of every GenEval / DPG-Bench record (evals.report.collect.CARDS)."""
    from evals.records import read_rows
    from evals.report import load_record
    from evals.report.collect import CARDS

    n = 0
    for p in records:
        rec = load_record(p)
        if rec["kind"] == "evaluation" and rec["protocol"].get("benchmark") in CARDS:
            n += len(read_rows(rec, p))
    return n


def _write_record(path: str, records: list[str], png: str, result: dict) -> None:
    from snapgen.paths import display
    from snapgen.records import make_record, score, write_record

    scores = {"report_sample_cards": score(result["cards"], None, None, None, "count"),
              "report_screenshot_non_background_fraction":
                  score(result["pixels"]["non_background_fraction"], None, None, None, "fraction")}
    protocol = {"check": "evals.report.screenshot", "records": [display(r) for r in records],
                "window": result["window"], "browser": result["browser"]}
    write_record(path, make_record("benchmark", Path(path).stem, protocol, scores,
                                   {**{k: v for k, v in result.items() if k != "window"}, "png": display(png)}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.report.screenshot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+", metavar="RECORD")
    p.add_argument("--png", required=True, help="where the screenshot goes")
    p.add_argument("--report", default=None, help="report folder (default: a temporary one)")
    p.add_argument("--window", default="1400,2000", help="browser window WIDTH,HEIGHT in px")
    p.add_argument("--record", default=None, help="also write the check as a 'benchmark' record here")
    a = p.parse_args(argv)
    from evals.report import build_report

    if find_chromium() is None:
        print("error: no headless Chromium; apt-get install -y chromium", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory() as tmp:
        index = build_report(a.records, a.report or tmp)
        result = {**check(index, a.png, expected_cards(a.records), a.window), "window": a.window}
    print(json.dumps({k: v for k, v in result.items() if k != "window"}, indent=2))
    if a.record and not result["failed"]:
        _write_record(a.record, a.records, a.png, result)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
