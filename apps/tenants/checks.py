from django.core.management.base import CommandError
from django.db import connection

REQUIRED_EXTENSIONS = ("vector",)


def extension_available(*, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", [name])
        return cursor.fetchone() is not None


def database_require_extensions() -> None:
    """Refuse to migrate a PostgreSQL server that cannot give tenants what their schemas need."""
    missing = [name for name in REQUIRED_EXTENSIONS if not extension_available(name=name)]
    if missing:
        settings = connection.settings_dict
        where = f"{settings.get('HOST') or 'localhost'}/{settings['NAME']}"
        raise CommandError(
            f"The PostgreSQL server at {where} lacks the {', '.join(missing)} extension (pgvector). "
            "Debian 12's own PostgreSQL packages do not ship it: install pgvector on that server, "
            "or unset DATABASE_URL to use the embedded PostgreSQL, which includes it."
        )
