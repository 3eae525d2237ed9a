"""A real browser for the admin: Debian's chromium (scripts/install-system-packages.sh installs it)
driven by playwright, against pytest-django's live_server. No browser is downloaded: playwright
runs /usr/bin/chromium. Screenshots land in var/screenshots/ for people to look at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = Path(os.environ.get("SENTINEL_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("SENTINEL_DATA_DIR", settings.BASE_DIR / "var")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(transactional_db, live_server, monkeypatch):
    """A fresh headless Chromium page. Started after the database and the live server, and closed
    before them: while playwright runs, its event loop runs in this thread, and Django takes every
    ORM call made from the test meanwhile for one from async code (hence the variable, for the
    test's duration only)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (scripts/install-system-packages.sh)")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
