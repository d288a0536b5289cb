"""Testing helpers (public): the system's Chromium, launched the way sentrycam's browser tests,
benchmarks and screenshots launch it.

Chromium comes from the operating system (``apt-get install chromium``), never from
``playwright install``; Playwright (a test extra) drives it::

    from playwright.sync_api import sync_playwright
    from sentrycam.frontend.testing import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
"""

from __future__ import annotations

import os
import shutil
from typing import Any

#: Flags for a headless Chromium on a machine without a display, GPU or internet access:
#: without the background-networking ones it keeps trying to reach Google's hosts.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The Chromium executable to drive: ``$SENTRYCAM_CHROMIUM``, else the one on PATH, else
    None when there is none."""
    for candidate in (os.environ.get("SENTRYCAM_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def launch_chromium(playwright: Any, **options: Any) -> Any:
    """A headless Chromium browser from ``playwright`` (a ``sync_playwright()`` handle).

    Raises RuntimeError when no Chromium is installed."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium, or set "
                           "SENTRYCAM_CHROMIUM to its path)")
    return playwright.chromium.launch(executable_path=path, args=LAUNCH_ARGS, **options)
