"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by scripts/install.sh) driven by
selenium: one browser per module, a fresh runtime per test (the suite stops every actor after each test)."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")  # without the background-networking flags the closed network refuses Chromium


# selenium logs each WebDriver command with its arguments at DEBUG: the passwords the tests type would reach the
# log (the suite-wide secrets scan reads every record at DEBUG)
logging.getLogger("selenium").setLevel(logging.WARNING)


def make_driver(width: int = 1280, height: int = 800) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    driver.profile_dir = profile  # type: ignore[attr-defined]
    return driver


def quit_driver(driver: Any) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed: run scripts/install.sh")
    driver = make_driver()
    try:
        yield driver
    finally:
        quit_driver(driver)
