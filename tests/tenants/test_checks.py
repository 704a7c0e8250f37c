from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.tenants import checks


def test_pgvector_is_available_on_the_test_server(db: None) -> None:
    assert checks.extension_available(name="vector")
    assert not checks.extension_available(name="no_such_extension")


def test_migrate_refuses_a_server_without_pgvector(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "REQUIRED_EXTENSIONS", ("vector", "no_such_extension"))
    with pytest.raises(CommandError, match="lacks the no_such_extension extension"):
        call_command("migrate", interactive=False, verbosity=0)
