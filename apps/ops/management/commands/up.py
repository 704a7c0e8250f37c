"""`cognitionos up`: migrate, make sure the demo organization exists, then run the web server, a
Celery worker and Celery beat until Ctrl-C, and stop everything it started."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from apps.ops.metrics import MULTIPROC_ENV, metrics_multiproc_prepare
from apps.ops.services import demo_ensure, portal_url
from cognitionos.embedded import default_data_dir

_PR_SET_PDEATHSIG = 1
SHUTDOWN_GRACE_SECONDS = 20


def _die_with_parent() -> None:
    """Children get SIGTERM if `up` itself is killed, so no process outlives it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def web_hosts(host: str) -> list[str]:
    """Where the web server listens. On the default loopback host it listens on ::1 as well (where
    the machine has IPv6), so http://localhost, http://127.0.0.1 and http://[::1] all answer."""
    if host == "127.0.0.1" and _ipv6_loopback_available():
        return [host, "::1"]
    return [host]


def web_commands(*, host: str, port: int, processes: int) -> dict[str, list[str]]:
    """The web server's command per listening address (Granian listens on one): the first host gets
    `processes` processes, an extra loopback address one."""
    return {
        "web" if index == 0 else f"web on {address}": [
            sys.executable,
            "-m",
            "cognitionos.web",
            *("--host", address, "--port", str(port)),
            *("--processes", str(processes if index == 0 else 1)),
            *("--graceful-timeout", "10"),
        ]
        for index, address in enumerate(web_hosts(host))
    }


class Command(BaseCommand):
    help = "Run CognitionOS on this machine: web server, Celery worker and beat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--worker-concurrency", type=int, default=32)

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        demo = demo_ensure()
        data_dir = default_data_dir()
        port = options["port"]

        stopping: list[int] = []

        def request_stop(signum: int, _frame: object) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        processes = self._start(options, data_dir)
        self._banner(demo, port, data_dir)
        failed = None
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    failed = name
                    break
            if failed:
                self.stderr.write(f"{failed} exited with status {processes[failed].returncode}; stopping.")
                break
            time.sleep(0.3)
        self._stop(processes)
        self.stdout.write("Stopped.")
        if failed:
            raise SystemExit(1)

    def _start(self, options: dict[str, Any], data_dir: Path) -> dict[str, subprocess.Popen[bytes]]:
        python = sys.executable
        commands = {
            **web_commands(host=options["host"], port=options["port"], processes=options["web_workers"]),
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "cognitionos",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(options["worker_concurrency"]),
                "--loglevel",
                "INFO",
                "--hostname",
                f"worker-{os.getpid()}@%h",
                "--queues",
                settings.CELERY_TASK_DEFAULT_QUEUE,
            ],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "cognitionos",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(data_dir / "celerybeat-schedule"),
            ],
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        # Every process writes its metrics there; /metrics adds them up (prometheus_client multiprocess).
        env = os.environ.copy()
        metrics_dir = Path(env.setdefault(MULTIPROC_ENV, str(data_dir / "prometheus")))
        metrics_multiproc_prepare(metrics_dir)
        return {
            name: subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                command,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
            for name, command in commands.items()
        }

    def _stop(self, processes: dict[str, subprocess.Popen[bytes]]) -> None:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for process in processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _banner(self, demo: Any, port: int, data_dir: Path) -> None:
        base = f"http://{settings.BASE_DOMAIN}:{port}"
        if demo.operator_password:
            login = (
                f"  Operator login:     {demo.operator_email}\n"
                f"  Password:           {demo.operator_password}   (shown this once; it is stored only as a hash)\n"
            )
        else:
            login = (
                f"  Operator login:     {demo.operator_email} (password shown at first start; to set a new one:\n"
                f"                      .venv/bin/cognitionos changepassword {demo.operator_email})\n"
            )
        mailbox = (
            f"  Mailbox (dev):      {base}/dev/mail/  (verification and reset links; no mail is sent)\n"
            if settings.DEV_MAILBOX
            else ""
        )
        self.stdout.write(
            "\nCognitionOS is running.\n"
            f"  Admin (operators):  {base}/admin/\n"
            f"{login}"
            f"  Demo organization:  {portal_url(demo.organization, port)}  (sign in as the operator)\n"
            f"  Sign up:            {base}/accounts/signup/\n"
            f"{mailbox}"
            f"  Health:             {base}/health/ready\n"
            f"  Data folder:        {data_dir}\n"
            "  Other terminal:     .venv/bin/cognitionos tenant list\n"
            "  API key:            .venv/bin/cognitionos apikey create --tenant demo\n"
            f"  OpenAI-compatible:  {base}/v1  (simulated models unless OPENAI_API_KEY / ANTHROPIC_API_KEY are set)\n"
            "Press Ctrl-C to stop.\n"
        )
        self.stdout.flush()
