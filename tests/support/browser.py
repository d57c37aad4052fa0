"""Debian's headless Chromium driven by Selenium, with nothing downloaded.

The driver is ``/usr/bin/chromedriver`` from the ``chromium-driver`` package, named
explicitly (and ``SE_OFFLINE=1``) so Selenium Manager never fetches a browser or driver.
Tests skip with a reason where the packages are missing, except under CI
(``CLICKRELAY_CI=1``), where ``.ci/run`` installs them and a missing one is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        if os.environ.get("CLICKRELAY_CI"):
            pytest.fail(f"CI needs Debian's chromium and chromium-driver: {missing} missing")
        pytest.skip(f"needs Debian's chromium and chromium-driver ({', '.join(missing)})")


@contextmanager
def chromium(width: int = 1280, height: int = 1100) -> Iterator[Any]:
    """A headless Chromium WebDriver that records the console (``get_log("browser")``)."""
    require_chromium()
    os.environ["SE_OFFLINE"] = "1"  # Selenium Manager: never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="crchrome")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_problems(driver: Any) -> list[dict[str, Any]]:
    """Console entries that are errors or CSP reports (read once: the log is drained)."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry.get("level") == "SEVERE" or "Content Security Policy" in entry.get("message", "")
    ]
