"""docs/permissions.md is the matrix, written out: stale documentation fails the suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from apps.rbac.docs import permissions_doc_path, permissions_doc_render
from apps.rbac.permissions import ROLE_PERMISSIONS, Permission


def test_docs_permissions_md_is_generated_from_the_matrix() -> None:
    assert permissions_doc_path().read_text(encoding="utf-8") == permissions_doc_render(), (
        "docs/permissions.md is stale: run `manage.py permissions_doc`"
    )
    call_command("permissions_doc", "--check")


def test_the_document_names_every_permission_and_role() -> None:
    text = permissions_doc_render()
    assert all(f"`{permission.value}`" in text for permission in Permission)
    assert all(role.title() in text for role in ROLE_PERMISSIONS)
    # Developer may not set budgets; Billing may.
    row = next(line for line in text.splitlines() if line.startswith("| `budgets:manage`"))
    assert row.split(" | ")[2:] == ["yes", "yes", "—", "yes", "— |"]


def test_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    stale = tmp_path / "docs" / "permissions.md"
    stale.write_text("# Permissions\n\nold\n", encoding="utf-8")
    with override_settings(BASE_DIR=tmp_path):
        with pytest.raises(CommandError, match="stale"):
            call_command("permissions_doc", "--check")
        call_command("permissions_doc")
        assert stale.read_text(encoding="utf-8") == permissions_doc_render()
        call_command("permissions_doc", "--check")
