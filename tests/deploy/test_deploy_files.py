"""The deployment files in deploy/ and .dockerignore: parsed and checked without Docker or a cluster.

No Docker engine or Compose plugin is assumed, so compose.yaml is read as YAML (with the merge keys
Compose resolves) rather than through `docker compose config`. The health-check commands are run
against a stand-in HTTP server. The Kubernetes manifests are rendered and checked in test_kubernetes.py.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

APP_SERVICES = ("migrate", "web", "worker", "beat")
# Paths inside the container: the only writable places of the read-only image.
CONTAINER_TMP = "/tmp"  # noqa: S108
METRICS_DIR = "/tmp/prometheus"  # noqa: S108
SECRET_ENV = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CREDENTIALS_ENCRYPTION_KEYS", "METRICS_TOKEN")
COMMANDS: dict[str, list[str]] = {
    "migrate": ["cognitionos", "migrate"],
    "web": ["python", "-m", "cognitionos.web"],
    "worker": [
        "celery",
        "-A",
        "cognitionos",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "32",
        "--queues",
        "cognitionos",
        "--loglevel",
        "INFO",
    ],
    # The schedule and the lock live in Redis (apps.ops.beat): no schedule file.
    "beat": ["celery", "-A", "cognitionos", "beat", "--loglevel", "INFO"],
}
# What the image needs from the build context; pyproject.toml names README.md as the readme.
BUILD_CONTEXT = {
    "apps",
    "cognitionos",
    "templates",
    "static",
    "manage.py",
    "pyproject.toml",
    "README.md",
    "requirements.lock",
}


# --- helpers ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_values(keyword: str) -> list[str]:
    return [rest for instruction, rest in dockerfile_instructions() if instruction == keyword]


def probe_script(check: list[str] | dict[str, Any]) -> str:
    """The Python source of a `python -c ...` check (a Compose test list or a Kubernetes probe)."""
    command = check["exec"]["command"] if isinstance(check, dict) else check
    parts = list(command[1:] if command[0] == "CMD" else command)
    assert parts[:2] == ["python", "-c"], parts
    return str(parts[2])


class HealthServer:
    """A stand-in for the web process: 200 on /health/live; /health/ready as configured; 400 for
    a Host header other than the expected one, as Django answers a host not in ALLOWED_HOSTS."""

    def __init__(self, host_header: str, ready_status: int) -> None:
        expected_host, ready = host_header, ready_status
        self.seen: list[tuple[str, str | None]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Host")))
                if self.headers.get("Host") != expected_host:
                    status = 400
                else:
                    status = {"/health/live": 200, "/health/ready": ready}.get(self.path, 404)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self) -> HealthServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_probe(script: str, port: int | None = None, **env: str) -> int:
    if port is not None:
        assert "8000" in script
        script = script.replace("8000", str(port))
    environ = {key: value for key, value in os.environ.items() if key != "BASE_DOMAIN"} | env
    result = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, timeout=30, check=False)
    return result.returncode


@pytest.fixture
def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


# --- health endpoints ---------------------------------------------------------------------------


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_312_slim() -> None:
    assert "PYTHON_IMAGE=python:3.12-slim" in dockerfile_values("ARG")
    stages = dockerfile_values("FROM")
    assert len(stages) >= 2
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)
    assert any("--from=" in copy for copy in dockerfile_values("COPY"))


def test_dockerfile_installs_from_the_lock_and_collects_static_files() -> None:
    runs = dockerfile_values("RUN")
    assert any(re.search(r"pip install (.* )?-r \S*requirements\.lock", run) for run in runs)
    assert any("--no-deps" in run and "pip install" in run for run in runs)
    assert any("collectstatic --noinput" in run and "cognitionos.settings.production" in run for run in runs)


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = dockerfile_values("USER")
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_dockerfile_has_a_healthcheck_on_the_health_endpoints() -> None:
    (healthcheck,) = dockerfile_values("HEALTHCHECK")
    assert "CMD" in healthcheck and "/health/" in healthcheck and "BASE_DOMAIN" in healthcheck


def test_dockerfile_default_command_is_the_web_process() -> None:
    (cmd,) = dockerfile_values("CMD")
    assert json.loads(cmd) == COMMANDS["web"]
    assert "8000" in dockerfile_values("EXPOSE")


def test_dockerfile_sets_the_metrics_directory_and_creates_it_for_the_app_user() -> None:
    environment = " ".join(dockerfile_values("ENV"))
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus" in environment
    uid = dockerfile_values("USER")[-1].split(":")[0]
    assert any(f"install -d -o {uid} -g {uid}" in run and METRICS_DIR in run for run in dockerfile_values("RUN"))


def test_dockerfile_bakes_in_no_secret() -> None:
    declared = " ".join(dockerfile_values("ENV") + dockerfile_values("ARG"))
    for name in SECRET_ENV:
        assert name not in declared


def test_dockerfile_healthcheck_needs_an_allowed_host_and_a_200() -> None:
    (healthcheck,) = dockerfile_values("HEALTHCHECK")
    script = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :].strip())[2]
    with HealthServer("cognitionos.example.com", ready_status=503) as server:
        assert run_probe(script, server.port, BASE_DOMAIN="cognitionos.example.com") == 0
        assert run_probe(script, server.port) != 0  # Host: localhost is not the expected host
    assert run_probe(script, server.port, BASE_DOMAIN="cognitionos.example.com") != 0  # nothing listening


# --- .dockerignore ------------------------------------------------------------------------------


def test_dockerignore_is_an_allowlist_of_what_the_image_needs(dockerignore: list[str]) -> None:
    assert dockerignore[0] == "*"
    allowed = {line[1:].strip("/") for line in dockerignore if line.startswith("!")}
    assert allowed == BUILD_CONTEXT
    assert not allowed & {"tests", ".venv", ".data", ".git", "deploy", "bench", "docs", ".env"}
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in allowed
    for name in BUILD_CONTEXT - {"static"}:  # static/ is empty and may be absent from a checkout
        assert (ROOT / name).exists(), name


def test_dockerignore_drops_caches_and_env_files_inside_allowed_folders(dockerignore: list[str]) -> None:
    assert {"**/__pycache__", "**/.env"} <= set(dockerignore)


# --- compose.yaml -------------------------------------------------------------------------------


def test_compose_defines_the_stack() -> None:
    assert set(services()) == {"postgres", "redis", *APP_SERVICES}
    assert set(compose()["volumes"]) == {"postgres-data", "redis-data"}


def test_compose_postgres_has_pgvector_a_volume_and_a_healthcheck() -> None:
    postgres = services()["postgres"]
    assert postgres["image"] == "pgvector/pgvector:pg16"
    assert any(volume.startswith("postgres-data:") for volume in postgres["volumes"])
    assert "pg_isready" in " ".join(argv(postgres["healthcheck"]["test"]))


def test_compose_redis_is_append_only_and_never_evicts() -> None:
    redis = services()["redis"]
    command = argv(redis["command"])
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.startswith("redis-data:") for volume in redis["volumes"])


def test_compose_runs_each_process_with_its_command() -> None:
    for name, command in COMMANDS.items():
        assert argv(services()[name]["command"]) == command, name


def test_compose_migrate_runs_once_before_web_worker_and_beat() -> None:
    migrate = services()["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("web", "worker", "beat"):
        depends_on = services()[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends_on["postgres"]["condition"] == depends_on["redis"]["condition"] == "service_healthy"


def test_compose_app_services_share_one_image_and_the_production_settings() -> None:
    images = {services()[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        service = services()[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        env = service["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "cognitionos.settings.production"
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["DATABASE_URL"]


def test_compose_sizes_database_pools_per_process() -> None:
    assert services()["web"]["environment"]["DATABASE_POOL_MAX_SIZE"] == "8"  # threads per web process
    assert services()["worker"]["environment"]["DATABASE_POOL_MAX_SIZE"] == "32"  # worker concurrency


def test_compose_web_publishes_8000_and_is_healthy_when_ready() -> None:
    web = services()["web"]
    assert any(str(port).endswith(":8000") for port in web["ports"])
    script = probe_script(web["healthcheck"]["test"])
    assert "/health/ready" in script
    with HealthServer("cognitionos.example.com", ready_status=200) as server:
        assert run_probe(script, server.port, BASE_DOMAIN="cognitionos.example.com") == 0
        assert server.seen[-1] == ("/health/ready", "cognitionos.example.com")
    with HealthServer("cognitionos.example.com", ready_status=503) as server:
        assert run_probe(script, server.port, BASE_DOMAIN="cognitionos.example.com") != 0


def test_compose_worker_and_beat_override_the_image_healthcheck() -> None:
    assert "inspect ping --destination celery@$${HOSTNAME}" in " ".join(
        argv(services()["worker"]["healthcheck"]["test"])
    )
    assert "env -u PROMETHEUS_MULTIPROC_DIR celery" in " ".join(argv(services()["worker"]["healthcheck"]["test"]))
    assert "BEAT_HEARTBEAT_FILE" in probe_script(services()["beat"]["healthcheck"]["test"])
    assert services()["beat"]["environment"]["BEAT_HEARTBEAT_FILE"] == "/tmp/cognitionos-beat"  # noqa: S108
    assert services()["migrate"]["healthcheck"] == {"disable": True}


def test_compose_app_containers_run_read_only_with_tmp_and_metrics_mounts() -> None:
    for name in APP_SERVICES:
        service = services()[name]
        assert service["read_only"] is True, name
        mounts = [mount.split(":")[0] for mount in service["tmpfs"]]
        assert mounts == [CONTAINER_TMP, METRICS_DIR], name  # the parent first
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_compose_secrets_are_required_interpolations_never_values() -> None:
    required = r"\$\{%s:\?[^}]+\}"
    for name in APP_SERVICES:
        env = services()[name]["environment"]
        assert re.fullmatch(required % "SECRET_KEY", env["SECRET_KEY"]), name
        assert re.search(required % "POSTGRES_PASSWORD", env["DATABASE_URL"]), name
        for secret in ("CREDENTIALS_ENCRYPTION_KEYS", "METRICS_TOKEN"):  # production refuses to start without
            assert re.fullmatch(required % secret, env[secret]), name
    password = services()["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert re.fullmatch(required % "POSTGRES_PASSWORD", password)

    text = (DEPLOY / "compose.yaml").read_text()
    assigned = set()
    for match in re.finditer(r"^\s*(?:-\s*)?(SECRET_KEY|POSTGRES_PASSWORD)\s*[:=]\s*(\S+)", text, re.MULTILINE):
        assert match.group(2).startswith("${" + match.group(1) + ":?"), match.group(0)
        assigned.add(match.group(1))
    assert assigned == {"SECRET_KEY", "POSTGRES_PASSWORD"}


def test_compose_interpolations_are_well_formed() -> None:
    text = (DEPLOY / "compose.yaml").read_text().replace("$$", "")
    references = re.findall(r"\$\{[^}]*\}", text)
    assert references
    for reference in references:
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}", reference), reference
    assert "$" not in re.sub(r"\$\{[^}]*\}", "", text), "a bare $ that Compose would try to interpolate"


def test_env_example_leaves_the_secrets_empty() -> None:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    values = {line.partition("=")[0]: line.partition("=")[2] for line in lines if line and not line.startswith("#")}
    assert values["SECRET_KEY"] == "" and values["POSTGRES_PASSWORD"] == ""
    assert values["CREDENTIALS_ENCRYPTION_KEYS"] == "" and values["METRICS_TOKEN"] == ""
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()
