"""The web server: Granian's WSGI server in the one configuration that `make run`, the container
image, the Kubernetes manifests, the tests and the benches all start.

    python -m cognitionos.web [--host H] [--port P] [--processes N] [--threads N]
                              [--graceful-timeout S] [--no-access-log]

Defaults come from the environment: WEB_BIND_HOST (0.0.0.0), PORT (8000), WEB_PROCESSES (2) and
WEB_THREADS (8). Why Granian and not gunicorn, with the figures: deploy/README.md, "The web server".
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from granian import Granian
from granian.constants import HTTPModes, Interfaces
from granian.server.common import AbstractServer

APPLICATION = "cognitionos.wsgi:application"


def web_server(
    *, host: str, port: int, processes: int, threads: int, graceful_timeout: int, access_log: bool
) -> AbstractServer[Any]:
    """The server, not started. Threads, not processes, carry concurrency: requests mostly wait on
    providers and the database. Granian's `backpressure` stays at its default (backlog / processes)
    because it bounds the connections a process serves, not its requests: set to the thread count,
    it left every keep-alive connection past the eighth unanswered (deploy/README.md)."""
    return Granian(
        APPLICATION,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=processes,
        blocking_threads=threads,
        respawn_failed_workers=True,
        respawn_interval=1.0,
        workers_kill_timeout=graceful_timeout,
        log_access=access_log,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cognitionos.web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("WEB_BIND_HOST", "0.0.0.0"))  # noqa: S104 - container default
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--processes", type=int, default=int(os.environ.get("WEB_PROCESSES", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("WEB_THREADS", "8")))
    parser.add_argument("--graceful-timeout", type=int, default=30, help="seconds a stopping process may finish in")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    options = parser.parse_args(argv)
    # The settings read the thread count (LONG_RESPONSES_PER_PROCESS).
    os.environ.update(WEB_PROCESSES=str(options.processes), WEB_THREADS=str(options.threads))
    web_server(
        host=options.host,
        port=options.port,
        processes=options.processes,
        threads=options.threads,
        graceful_timeout=options.graceful_timeout,
        access_log=options.access_log,
    ).serve()


if __name__ == "__main__":
    main()
