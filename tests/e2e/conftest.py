"""Browser tests: Debian's Chromium driven by Playwright, against the real web server (cognitionos.web).

- Chromium comes from the system (`apt-get install -y chromium`, run here when it is missing);
  Playwright never downloads a browser.
- The server is the production one (Granian) on the test database, reachable at http://localhost:<port> and at
  http://<slug>.localhost:<port> (Chromium resolves *.localhost to loopback by itself).
- A failing test leaves a screenshot and the page's HTML under test-artifacts/<test name>/.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from apps.ops.management.commands.up import web_hosts
from tests.support.debian import debian_command_ensure
from tests.support.fake_provider import FakeProvider
from tests.support.processes import ROOT, free_port, web_serving

# Playwright's sync API runs an event loop in the test's thread; the test still reads and writes
# the database from that thread, which Django would otherwise refuse as "async".
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_ensure() -> str:
    return debian_command_ensure("chromium", "chromium")


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One Chromium for the browser tests (starting Playwright's driver and the browser takes
    seconds); each test gets its own context, with its own cookies and storage, from `page`.
    Package scope: Playwright's loop runs from the first browser test to the last one only."""
    from playwright.sync_api import sync_playwright

    executable = chromium_ensure()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            # While Playwright's loop runs, Django keeps this thread's connections in a context
            # variable rather than in the thread (asgiref's Local sees a running loop): close them
            # now, or the one the test used outlives the loop unseen and the test database can't
            # be dropped at the end of the session.
            connections.close_all()
            launched.close()


class LiveServer:
    def __init__(self, port: int, mailbox: Path) -> None:
        self.port = port
        self.mailbox = mailbox
        self.url = f"http://localhost:{port}"

    def organization_url(self, slug: str) -> str:
        return f"http://{slug}.localhost:{self.port}"


@pytest.fixture
def portal_server(live_db: Any, tmp_path: Path) -> Iterator[LiveServer]:
    """The web server on the test database; its mail goes to a folder of this test."""
    port = free_port()
    mailbox = tmp_path / "mail"
    env = {"COGNITIONOS_MAILBOX_DIR": str(mailbox), "WEB_PROCESSES": "1", "WEB_THREADS": "4"}
    with web_serving(port=port, env=env, hosts=web_hosts("127.0.0.1")):
        yield LiveServer(port, mailbox)


def provider_env(fake: FakeProvider) -> dict[str, str]:
    """The fake provider as the platform's OpenAI and Anthropic, for the web server and workers alike."""
    return {
        "OPENAI_API_KEY": "sk-test-platform",
        "OPENAI_BASE_URL": fake.openai_base_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-platform",
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
    }


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture
def provider_server(live_db: Any, fake_provider: FakeProvider, tmp_path: Path) -> Iterator[LiveServer]:
    """`portal_server` with the fake provider as the platform's OpenAI and Anthropic."""
    port = free_port()
    env = {"COGNITIONOS_MAILBOX_DIR": str(tmp_path / "mail"), "WEB_PROCESSES": "1", "WEB_THREADS": "4"}
    with web_serving(port=port, env={**env, **provider_env(fake_provider)}, hosts=web_hosts("127.0.0.1")):
        yield LiveServer(port, tmp_path / "mail")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, so that `page` knows whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (its own cookies) at desktop size; on failure its last page is saved."""
    context = browser.new_context(viewport=DESKTOP)
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            folder = ARTIFACTS / request.node.name
            folder.mkdir(parents=True, exist_ok=True)
            try:
                opened.screenshot(path=str(folder / "failure.png"), full_page=True)
                (folder / "failure.html").write_text(opened.content())
                (folder / "failure-url.txt").write_text(opened.url)
            except Exception as exc:  # noqa: BLE001 - artifacts are best effort; the failure is the point
                (folder / "artifact-error.txt").write_text(repr(exc))
        context.close()


def screenshot(page: Any, name: str) -> None:
    """Screenshots of a page at desktop and phone widths, kept under test-artifacts/screenshots/."""
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def unlabeled_fields(page: Any) -> list[str]:
    """Form fields a screen reader could not name. Inputs that are buttons (`type=submit` and the
    like, as Django's admin uses) are named by their value: not fields."""
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll(
                    'input:not([type=hidden]):not([type=submit]):not([type=button]):not([type=reset])'
                    + ':not([type=image]), select, textarea')]
                .filter(field => !field.labels.length && !field.getAttribute('aria-label'))
                .map(field => field.name || field.id || field.outerHTML.slice(0, 80))"""
        )
    )


def overflowing(page: Any) -> int:
    """How far the page is wider than the window (a phone must not scroll sideways)."""
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))
