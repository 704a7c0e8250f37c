"""Data export (GDPR) in a real browser, against the web server and a real Celery worker: an owner signs in
on their organization's host, opens Data export, asks for an export, sees it queued (a second one
refused while it waits), sees it ready once a worker has built it, and downloads it once: a zip of
their organization's rows only, whose checksums verify. A member of another organization sees none
of it and can't use its download link, on their own host or on the first organization's.
Screenshots at desktop and phone widths; every field labelled, nothing wider than a phone."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from allauth.account.models import EmailAddress

from apps.accounts.models import User
from apps.rbac.models import Role
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, PHONE, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.factories import member_make
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG_A = f"e2e-export-a-{RUN}"
SLUG_B = f"e2e-export-b-{RUN}"
PASSWORD = "a-long-enough-passphrase-42"
# Member addresses that name their organization: an export of A must hold A's and never B's.
MARKER_A = f"alpha-marker-{RUN}@people.example.com"
MARKER_B = f"bravo-marker-{RUN}@people.example.com"
BUILD_TIMEOUT_S = 90


def _owner(organization: Organization) -> str:
    """The owner organization_make creates, given a password and a verified address."""
    email = f"owner@{organization.slug}.example.com"
    owner = User.objects.get(email=email)
    owner.set_password(PASSWORD)
    owner.save(update_fields=["password"])
    EmailAddress.objects.update_or_create(user=owner, email=email, defaults={"verified": True, "primary": True})
    return email


@pytest.fixture
def organizations(live_db: LiveDb) -> Iterator[tuple[Organization, Organization]]:
    a = live_db.organization(slug=SLUG_A, name="Export Alpha")
    b = live_db.organization(slug=SLUG_B, name="Export Bravo")
    for organization, marker in ((a, MARKER_A), (b, MARKER_B)):
        _owner(organization)
        member_make(organization=organization, role=Role.VIEWER, email=marker)
    tenant_connection().set_schema_to_public()
    yield a, b
    tenant_connection().set_schema_to_public()
    User.objects.filter(
        email__in=[f"owner@{SLUG_A}.example.com", f"owner@{SLUG_B}.example.com", MARKER_A, MARKER_B]
    ).delete()


@pytest.fixture
def worker(live_db: LiveDb) -> Iterator[None]:
    with celery_worker(concurrency=2, name="portal-exports"):
        yield


def _sign_in(page: Any, origin: str, email: str) -> None:
    """The organization's own sign-in page (its home, signed out)."""
    page.goto(f"{origin}/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile(r"^sign in$", re.IGNORECASE)).click()
    page.wait_for_url(f"{origin}/")


def _phone_checks(page: Any) -> None:
    assert unlabeled_fields(page) == []
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0
    page.set_viewport_size(DESKTOP)


def _cell(page: Any, label: str) -> Any:
    """A cell of the newest export's row (the table lists the newest first)."""
    return page.locator("table tbody tr").first.locator(f'td[data-label="{label}"]')


def _start_export(page: Any) -> None:
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Data export").click()
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Data export", level=1)).to_be_visible()
    page.get_by_role("button", name="Export all data").click()
    expect(page.get_by_text("Export started.")).to_be_visible()


def _until_built(page: Any) -> None:
    """Reload the page (it says to) until the newest export has succeeded."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while (status := _cell(page, "Status").inner_text().strip()) != "Succeeded":
        assert status in ("Queued", "Running"), f"the export ended as {status!r}"
        assert time.monotonic() < deadline, f"the export is still {status} after {BUILD_TIMEOUT_S} s"
        time.sleep(0.5)
        page.reload()


def _download_link(page: Any) -> Any:
    return page.get_by_role("link", name=re.compile(r"^Download the export of .* \(works once\)$"))


def _fetch(page: Any, path: str) -> dict[str, Any]:
    """GET a path of the page's own host from the page (its cookies; Chromium resolves
    *.localhost, Playwright's own request client does not): status, text, whether it is a zip."""
    answer: dict[str, Any] = page.evaluate(
        """async path => {
            const response = await fetch(path);
            const bytes = new Uint8Array(await response.arrayBuffer());
            return {
                status: response.status,
                zip: bytes.length > 1 && bytes[0] === 0x50 && bytes[1] === 0x4b,
                text: new TextDecoder().decode(bytes),
            };
        }""",
        path,
    )
    return answer


def _zip_checked(data: bytes, organization: Organization) -> dict[str, Any]:
    """The zip is the organization's export, complete by its own checksums; returns its manifest."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    for line in archive.read("SHA256SUMS").decode().splitlines():
        digest, path = line.split("  ", 1)
        assert hashlib.sha256(archive.read(path)).hexdigest() == digest, path
    manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
    assert manifest["organization"]["slug"] == organization.slug
    assert manifest["organization"]["id"] == organization.pk
    organizations = [json.loads(line) for line in archive.read("public/tenants_organization.jsonl").splitlines()]
    assert [row["id"] for row in organizations] == [organization.pk]
    return manifest


def test_owner_exports_the_organizations_data_and_downloads_it_once(
    page: Any, portal_server: LiveServer, organizations: tuple[Organization, Organization]
) -> None:
    from playwright.sync_api import expect

    a, b = organizations
    origin = portal_server.organization_url(SLUG_A)
    _sign_in(page, origin, f"owner@{SLUG_A}.example.com")

    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Data export").click()
    expect(page.get_by_role("heading", name="Data export", level=1)).to_be_visible()
    expect(page.get_by_text("No exports yet.")).to_be_visible()
    _phone_checks(page)

    # No worker yet: the export waits in the queue, and a second one is refused meanwhile.
    page.get_by_role("button", name="Export all data").click()
    expect(page.get_by_text("Export started.")).to_be_visible()
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(1)
    expect(_cell(page, "Status")).to_have_text("Queued")
    expect(_cell(page, "Progress")).to_contain_text("0 / 0 tables")
    expect(_download_link(page)).to_have_count(0)
    screenshot(page, "data-export-queued")
    _phone_checks(page)
    page.get_by_role("button", name="Export all data").click()
    expect(
        page.get_by_text(re.compile(r"Export [0-9a-f-]{36} is still being built; wait for it to finish"))
    ).to_be_visible()
    expect(rows).to_have_count(1)

    # A worker builds it; the page (reloaded, as it says) shows it ready with its size and checksum.
    with celery_worker(concurrency=2, name="portal-exports"):
        _until_built(page)
    progress = _cell(page, "Progress")
    assert progress.locator("progress").get_attribute("value") == "100"
    tables = re.search(r"(\d+) / (\d+) tables", progress.inner_text())
    assert tables is not None and tables.group(1) == tables.group(2) and int(tables.group(1)) > 10, tables
    expect(_cell(page, "Size")).not_to_have_text("—")
    sha256 = _cell(page, "SHA-256").locator("code").get_attribute("title")
    assert sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", sha256), sha256
    link = _download_link(page)
    expect(link).to_have_count(1)
    href = link.get_attribute("href")
    assert href and href.startswith("/api/v1/exports/"), href
    screenshot(page, "data-export-ready")
    _phone_checks(page)

    # The download: a zip of A's rows only, as the page's checksum says.
    with page.expect_download() as downloading:
        link.click()
    download = downloading.value
    assert download.failure() is None
    assert re.fullmatch(rf"export-{SLUG_A}-[0-9a-f-]{{36}}\.zip", download.suggested_filename), (
        download.suggested_filename
    )
    with open(download.path(), "rb") as file:
        data = file.read()
    assert len(data) > 1000
    assert hashlib.sha256(data).hexdigest() == sha256
    manifest = _zip_checked(data, a)
    assert {"tenant/audit_auditevent.jsonl", "public/rbac_membership.jsonl"} <= {f["path"] for f in manifest["files"]}
    archive = zipfile.ZipFile(io.BytesIO(data))
    everything = b"".join(archive.read(name) for name in archive.namelist())
    assert MARKER_A.encode() in everything
    assert MARKER_B.encode() not in everything
    assert b.slug.encode() not in everything

    # Once: the page no longer offers it, and the link is refused from now on.
    page.reload()
    expect(_cell(page, "Download")).to_contain_text("Downloaded")
    expect(_download_link(page)).to_have_count(0)
    again = _fetch(page, href)
    assert again["status"] == 410, again
    assert json.loads(again["text"])["error"]["code"] == "export_gone"
    screenshot(page, "data-export-downloaded")
    _phone_checks(page)

    # The organization's audit log tells the story.
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Audit log").click()
    for action in ("data_export.started", "data_export.completed", "data_export.downloaded"):
        expect(page.get_by_role("cell", name=action, exact=True).first).to_be_visible()


def test_a_member_of_another_organization_cannot_see_or_download_the_export(
    page: Any,
    browser: Any,
    portal_server: LiveServer,
    organizations: tuple[Organization, Organization],
    worker: None,
) -> None:
    from playwright.sync_api import expect

    origin_a = portal_server.organization_url(SLUG_A)
    origin_b = portal_server.organization_url(SLUG_B)
    _sign_in(page, origin_a, f"owner@{SLUG_A}.example.com")
    _start_export(page)
    _until_built(page)
    href = _download_link(page).get_attribute("href")
    assert href and href.startswith("/api/v1/exports/"), href
    export_id = href.split("/")[4]

    outsider_context = browser.new_context(viewport=DESKTOP)
    try:
        outsider = outsider_context.new_page()
        outsider.set_default_timeout(15_000)
        # B's owner, on B's host: B has no exports, and A's link (leaked, say) names nothing here.
        _sign_in(outsider, origin_b, f"owner@{SLUG_B}.example.com")
        outsider.get_by_role("navigation", name="Portal").get_by_role("link", name="Data export").click()
        expect(outsider.get_by_text("No exports yet.")).to_be_visible()
        for path in (href, f"/api/v1/exports/{export_id}"):
            answer = _fetch(outsider, path)
            assert answer["status"] == 404, (path, answer)
            assert json.loads(answer["text"])["error"]["code"] == "not_found"
            assert not answer["zip"]

        # On A's host, signed in there as themselves: not a member, refused the page and the link.
        _sign_in_as_outsider(outsider, origin_a, f"owner@{SLUG_B}.example.com")
        expect(outsider.get_by_role("heading", name="You are not a member of Export Alpha")).to_be_visible()
        refused = outsider.goto(f"{origin_a}/settings/data-export/")
        assert refused is not None and refused.status == 403
        expect(outsider.get_by_role("button", name="Export all data")).to_have_count(0)
        for path in (href, f"/api/v1/exports/{export_id}", "/api/v1/exports"):
            answer = _fetch(outsider, path)
            assert answer["status"] in (403, 404), (path, answer)
            assert not answer["zip"]
            assert export_id not in answer["text"]
    finally:
        outsider_context.close()

    # None of that used A's one download: its owner still gets the zip.
    page.reload()
    with page.expect_download() as downloading:
        _download_link(page).click()
    with open(downloading.value.path(), "rb") as file:
        _zip_checked(file.read(), organizations[0])


def _sign_in_as_outsider(page: Any, origin: str, email: str) -> None:
    """Sign in on a host of an organization the person is not a member of (its home refuses them)."""
    page.goto(f"{origin}/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_response(lambda answer: answer.url == f"{origin}/") as landed:
        page.get_by_role("button", name=re.compile(r"^sign in$", re.IGNORECASE)).click()
    assert landed.value.status == 403
