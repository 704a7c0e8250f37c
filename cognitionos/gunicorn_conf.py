"""gunicorn settings shared by `make run`, the container image and the Kubernetes manifests.

gunicorn -c python:cognitionos.gunicorn_conf cognitionos.wsgi:application

Measured against Granian with `bench/gateway.py --server both`; why gunicorn stays, and what a
switch would need: deploy/README.md, "The web server".
"""

import os

bind = f"{os.environ.get('WEB_BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 - container default
# Threads, not processes, carry concurrency: requests mostly wait on providers and the database.
worker_class = "gthread"
workers = int(os.environ.get("WEB_PROCESSES", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
# No control socket: nothing uses it, and it would be written under $HOME.
control_socket_disable = True


def child_exit(server: object, worker: object) -> None:
    """A worker process ended: its live gauges leave the multiprocess metrics (PROMETHEUS_MULTIPROC_DIR)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined,no-untyped-call]
