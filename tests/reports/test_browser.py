"""The report in a real browser: headless Chromium loads it, the DOM holds the table and images, the
console stays clean (the page's Content-Security-Policy turns any network request or script into a
console error), and a screenshot is saved for a person to look at.

Install Chromium with ``bash scripts/install-chromium.sh`` (Debian's package); without a binary
this module skips and says so. ``ROBENCH_CHROMIUM`` may name the binary.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from robench.reports import write_report

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = os.environ.get("ROBENCH_CHROMIUM") or next((p for p in map(shutil.which, CANDIDATES) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary on PATH (install it with: bash scripts/install-chromium.sh)")

EVIL = "<script>alert(1)</script>"
RUN = {("none", 0.05): (18, 20), ("none", 0.1): (9, 20), ("bit-depth-3", 0.05): (19, 20),
       ("bit-depth-3", 0.1): (4, 20), (EVIL, 0.1): (10, 20)}


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, page.as_uri()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(2, "--no-sandbox")  # Chromium refuses to run its sandbox as root (CI containers)
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def console_messages(stderr: str) -> list[str]:
    """What the page logged to the console (Chromium prints it as ``...:CONSOLE:<line>] "..."``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class Dom(HTMLParser):
    """Counts what the test checks in the DOM Chromium dumps after loading the page."""

    def __init__(self) -> None:
        super().__init__()
        self.result_rows = 0
        self.images: list[str] = []
        self.scripts = 0
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tr" and "result-row" in (attributes.get("class") or ""):
            self.result_rows += 1
        elif tag == "img":
            self.images.append(attributes.get("src") or "")
        elif tag == "script":
            self.scripts += 1
        self._in_cell = tag == "td"

    def handle_data(self, data: str) -> None:
        if self._in_cell and data.strip():
            self.cells.append(data.strip())


def test_chromium_renders_the_report(tmp_path: Path, run_dir_factory) -> None:
    run = run_dir_factory(RUN)
    page = write_report(run)

    loaded = chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    dom = Dom()
    dom.feed(loaded.stdout)
    assert dom.result_rows == len(RUN)
    assert len(dom.images) == 2 + len(RUN) and all(src.startswith("data:image/png;base64,") for src in dom.images)
    assert dom.scripts == 0 and EVIL in dom.cells  # the hostile name is text in a cell, not an element
    assert console_messages(loaded.stderr) == []

    screenshot = tmp_path / "report.png"
    shot = chromium(page, tmp_path / "profile-shot", "--window-size=1280,2400", f"--screenshot={screenshot}")
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    print(f"screenshot of the report: {screenshot}")
    image = Image.open(screenshot)
    assert image.size == (1280, 2400)
    assert max(ImageStat.Stat(image.convert("L")).stddev) > 20  # a rendered page, not a blank canvas
    assert console_messages(shot.stderr) == []


def test_the_console_check_sees_errors(tmp_path: Path) -> None:
    """Control: the way the test reads the console does catch a page's errors in this Chromium."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
                    '<body><script>console.error("boom")</script></body></html>')
    loaded = chromium(page, tmp_path / "profile", "--dump-dom")
    assert any("boom" in line for line in console_messages(loaded.stderr)), loaded.stderr[-2000:]
