"""For static analysis only (mypy's Django plugin imports settings): placeholders, no services."""

import os

os.environ.setdefault("SECRET_KEY", "typecheck-only-" + "x" * 40)
os.environ.setdefault("DATABASE_URL", "postgresql://typecheck@localhost/typecheck")
os.environ.setdefault("REDIS_URL", "redis://localhost:6379/0")

from .base import *  # noqa: F403
