"""The `cognitionos` command: Django's management commands, with the embedded services found or
started first (unless DATABASE_URL / REDIS_URL name real servers).

    cognitionos up [--port 8000]          everything on one machine
    cognitionos tenant create SLUG ...    organizations
    cognitionos migrate, createsuperuser, shell, ...   any management command
"""

from __future__ import annotations

import atexit
import os
import signal
import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitionos.settings.development")
    command = argv[1] if len(argv) > 1 else "help"
    # SIGTERM ends the command through SystemExit, so the atexit hook below stops the servers this
    # process started even when it arrives before `up` installs its own handlers (during migrate).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if command not in {"help", "--help", "-h", "version", "--version"}:
        from cognitionos.embedded import EmbeddedServiceError, services_attach

        try:
            services = services_attach()
        except EmbeddedServiceError as exc:
            sys.stderr.write(f"cognitionos: could not start the embedded services: {exc}\n")
            raise SystemExit(1) from exc
        if command == "up":
            services.adopt()  # `up` owns the stack: Ctrl-C stops every server it uses
        atexit.register(services.stop_owned)

    from django.core.management import execute_from_command_line

    execute_from_command_line(["cognitionos", *argv[1:]])


if __name__ == "__main__":
    main()
