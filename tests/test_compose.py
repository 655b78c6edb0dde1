"""The Docker deployment (compose/) stays in step with the code.

Static checks only: no Docker engine, database or Redis is needed. When the docker CLI
with its compose plugin is on PATH, `docker compose config` validates the file as well.
(tests/test_prometheus_config.py checks what Prometheus and Grafana are given.)
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hive_project import queues

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
DOCKERIGNORE = COMPOSE_DIR / "Dockerfile.dockerignore"
ENTRYPOINT = COMPOSE_DIR / "entrypoint.sh"
SETTINGS = ROOT / "hive_project" / "settings.py"

HIVE_SERVICES = ("web", "worker-high", "worker-medium", "worker-low", "worker-control", "worker-workflows", "beat",
                 "flower")
MONITORING_SERVICES = ("prometheus", "grafana")
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
WORKER_QUEUES = {
    "worker-high": queues.HIGH,
    "worker-medium": queues.MEDIUM,
    "worker-low": queues.LOW,
    "worker-control": queues.CONTROL,
    "worker-workflows": queues.WORKFLOWS,
}
# ${NAME}, ${NAME:-default}, ${NAME:?message}; "$$" is compose's escaped dollar.
VARIABLE_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")
REQUIRED_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")


# These tests only read files and run the entrypoint with stubs: they override the
# suite's autouse Redis fixtures (tests/conftest.py) so they run with no Redis at all.
@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[None]:
    yield None


@pytest.fixture(autouse=True)
def _clean_redis_state() -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[name.strip()] = value.strip()
    return values


def environment_of(service: dict[str, Any]) -> dict[str, Any]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return dict(environment)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert command, "service has no command"
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def option(argv: list[str], *names: str) -> str | None:
    """The value of `-Q x`, `-Q=x`, `--queues x` or `--queues=x` in argv."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def read_by_settings(name: str) -> bool:
    return re.search(rf"[\"']{re.escape(name)}[\"']", SETTINGS.read_text()) is not None


# What runs in the web container before the server: the entrypoint, and the
# ensure_setup command with the bootstrap module it calls. (runhive, the embedded-mode
# supervisor, reads some of the same names but never runs in a container.)
WEB_STARTUP_CODE = (
    ENTRYPOINT,
    ROOT / "hive_project" / "management" / "commands" / "ensure_setup.py",
    ROOT / "hive_project" / "bootstrap.py",
)


def read_at_web_startup(name: str) -> bool:
    pattern = re.compile(rf"[\"']{re.escape(name)}[\"']|\$\{{?{re.escape(name)}\b")
    return any(path.exists() and pattern.search(path.read_text()) for path in WEB_STARTUP_CODE)


# --- services, queues, dependencies -------------------------------------------


def test_it_defines_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= {"postgres", "redis", *HIVE_SERVICES, *MONITORING_SERVICES}


def test_the_file_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


@pytest.mark.parametrize("name", sorted(WORKER_QUEUES))
def test_each_worker_consumes_exactly_its_queue(services: dict[str, dict[str, Any]], name: str) -> None:
    argv = command_of(services[name])
    assert argv[:4] == ["celery", "-A", "hive_project", "worker"]
    assert option(argv, "-Q", "--queues") == WORKER_QUEUES[name]
    node = option(argv, "-n", "--hostname")
    assert node is not None and node.endswith("@%h"), "a unique node name per container, so scaling works"


def test_every_queue_has_a_consumer(services: dict[str, dict[str, Any]]) -> None:
    consumed: set[str] = set()
    for service in services.values():
        if service.get("command") and "worker" in command_of(service):
            consumed.update((option(command_of(service), "-Q", "--queues") or "").split(","))
    assert set(queues.ALL_QUEUES) <= consumed


def test_execution_workers_share_the_concurrency_knob(services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker-high", "worker-medium", "worker-low"):
        argv = command_of(services[name])
        assert option(argv, "--concurrency", "-c") == "${HIVE_WORKER_CONCURRENCY:-4}"
        assert option(argv, "-O") == "fair"
    assert option(command_of(services["worker-control"]), "--concurrency", "-c") == "2"


def test_workflow_executions_have_their_own_worker(services: dict[str, dict[str, Any]]) -> None:
    """A workflow waits on LLM tasks; on the control queue it would block the passes that place them."""
    argv = command_of(services["worker-workflows"])
    assert option(argv, "-Q", "--queues") == queues.WORKFLOWS != queues.CONTROL
    assert option(argv, "--concurrency", "-c") == "${HIVE_WORKFLOW_WORKER_CONCURRENCY:-4}"
    assert option(argv, "-O") == "fair"
    for name, service in services.items():
        if name != "worker-workflows" and service.get("command") and "worker" in command_of(service):
            assert queues.WORKFLOWS not in (option(command_of(service), "-Q", "--queues") or "").split(","), name


def test_beat_uses_the_database_scheduler(services: dict[str, dict[str, Any]]) -> None:
    argv = command_of(services["beat"])
    assert argv[:4] == ["celery", "-A", "hive_project", "beat"]
    assert option(argv, "-S", "--scheduler") == "django_celery_beat.schedulers:DatabaseScheduler"
    assert "--pidfile=" in argv


def test_flower_requires_a_login(services: dict[str, dict[str, Any]]) -> None:
    argv = command_of(services["flower"])
    assert argv[:4] == ["celery", "-A", "hive_project", "flower"]
    assert environment_of(services["flower"])["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_processes_start_in_order(services: dict[str, dict[str, Any]]) -> None:
    def healthy_dependencies(name: str) -> set[str]:
        depends = services[name].get("depends_on") or {}
        return {dep for dep, spec in depends.items() if spec.get("condition") == "service_healthy"}

    assert healthy_dependencies("web") >= {"postgres", "redis"}
    for name in ("worker-high", "worker-medium", "worker-low", "worker-control", "worker-workflows", "beat"):
        assert healthy_dependencies(name) >= {"postgres", "redis", "web"}, name
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name], name


def test_only_web_migrates(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        migrate = environment_of(service).get("HIVE_MIGRATE")
        assert (migrate == "true") == (name == "web"), name


def test_hive_services_restart_and_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    images = set()
    for name in HIVE_SERVICES:
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert service["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}, name
        images.add(service["image"])
    assert len(images) == 1
    assert services["postgres"]["restart"] == services["redis"]["restart"] == "unless-stopped"


def test_configuration_is_never_mounted(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """Hive reads environment variables only; Prometheus and Grafana get their files as
    `configs` from this directory (never a bind mount of an arbitrary host path)."""
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            assert source in named, f"{name} mounts {source!r}; only named volumes are allowed"
        assert "env_file" not in service, name
        if name not in MONITORING_SERVICES:
            assert "configs" not in service, name
            assert "secrets" not in service, name


def test_monitoring_configs_are_files_of_this_directory(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = compose.get("configs") or {}
    used = set()
    for name in MONITORING_SERVICES:
        for entry in services[name].get("configs") or []:
            assert isinstance(entry, dict) and entry.get("target", "").startswith("/etc/"), (name, entry)
            used.add(entry["source"])
    assert used == set(declared), "declared and used configs differ"
    for config in declared.values():
        path = (COMPOSE_DIR / config["file"]).resolve()
        assert path.is_file(), path
        assert COMPOSE_DIR in path.parents, f"{path} is outside compose/"


def test_monitoring_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, repository in (("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")):
        image, _, tag = services[name]["image"].partition(":")
        assert image == repository, name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag or 'latest'!r}"
        assert services[name]["restart"] == "unless-stopped", name


def test_prometheus_gets_the_metrics_token_as_a_secret(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """Prometheus does not expand ${...} in its config: the token must arrive as a file,
    made by Compose from the same HIVE_METRICS_TOKEN the web process reads."""
    shared = compose["x-hive-env"]
    assert shared["HIVE_METRICS_TOKEN"].startswith("${HIVE_METRICS_TOKEN:?")
    assert read_by_settings("HIVE_METRICS_TOKEN")
    secrets = services["prometheus"]["secrets"]
    assert len(secrets) == 1
    secret = secrets[0]
    assert compose["secrets"][secret["source"]] == {"environment": "HIVE_METRICS_TOKEN"}
    mounted_at = f"/run/secrets/{secret.get('target', secret['source'])}"
    assert "HIVE_METRICS_TOKEN" not in environment_of(services["prometheus"]), "the token stays out of its environment"
    scrape = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}["hive"]
    assert scrape["authorization"] == {"type": "Bearer", "credentials_file": mounted_at}
    if "mode" in secret:
        assert secret["mode"] & 0o004, "Prometheus runs as nobody: the file must be world-readable"


def test_prometheus_scrapes_the_web_service(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    scrape = {job["job_name"]: job for job in config["scrape_configs"]}["hive"]
    assert scrape.get("metrics_path", "/metrics") == "/metrics"
    targets = [target for group in scrape["static_configs"] for target in group["targets"]]
    assert targets == ["web:8000"]
    assert "web" in services
    # Django answers 400 to a Host it does not allow; Prometheus sends Host: web.
    allowed = compose["x-hive-env"]["HIVE_ALLOWED_HOSTS"]
    assert allowed.split("}", 1)[-1].split(",")[-1] == "web"
    # The rules file sits beside the config in the container, as in this directory.
    mounts = {entry["source"]: entry["target"] for entry in services["prometheus"]["configs"]}
    targets_by_file = {Path(compose["configs"][source]["file"]).name: target for source, target in mounts.items()}
    assert targets_by_file["prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file(), rule_file
        assert targets_by_file[Path(rule_file).name] == f"/etc/prometheus/{rule_file}"
    assert "/etc/prometheus/prometheus.yml" in " ".join(command_of(services["prometheus"]))


def test_grafana_is_provisioned_and_needs_a_password(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    assert environment_of(grafana)["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_PASSWORD:?")
    mounts = {Path(compose["configs"][entry["source"]]["file"]).as_posix(): entry["target"] for entry in grafana["configs"]}
    datasource_target = mounts["grafana/provisioning/datasources/prometheus.yml"]
    provider_target = mounts["grafana/provisioning/dashboards/hive.yml"]
    dashboard_target = mounts["grafana/dashboards/hive.json"]
    assert datasource_target.startswith("/etc/grafana/provisioning/datasources/")
    assert provider_target.startswith("/etc/grafana/provisioning/dashboards/")
    provider = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/dashboards/hive.yml").read_text())
    paths = [p["options"]["path"].rstrip("/") for p in provider["providers"]]
    assert str(Path(dashboard_target).parent) in paths, "the provider must look where hive.json is mounted"
    datasources = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    home = environment_of(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home in (None, dashboard_target)


def test_metrics_multiprocess_dir_is_a_fresh_tmpfs_in_every_hive_container(compose: dict[str, Any],
                                                                           services: dict[str, dict[str, Any]]) -> None:
    """Files left by a previous container's processes would be summed into /metrics."""
    directory = compose["x-hive-env"]["PROMETHEUS_MULTIPROC_DIR"]
    assert read_by_settings("PROMETHEUS_MULTIPROC_DIR")
    uid = re.search(r"useradd [^\n]*--uid (\d+)", DOCKERFILE.read_text()).group(1)
    for name in HIVE_SERVICES:
        service = services[name]
        assert environment_of(service)["PROMETHEUS_MULTIPROC_DIR"] == directory, name
        mounts = [entry.split(":", 1) for entry in service.get("tmpfs") or []]
        options = {path: dict(opt.split("=", 1) for opt in (rest[0].split(",") if rest else [])) for path, *rest in mounts}
        assert directory in options, f"{name}: {directory} is not a tmpfs"
        assert options[directory].get("uid") == uid, f"{name}: the hive user (uid {uid}) must own it"


# --- variables ------------------------------------------------------------------


def test_every_variable_the_compose_file_uses_is_documented() -> None:
    used = set(VARIABLE_REFERENCE.findall(COMPOSE_FILE.read_text()))
    documented = set(env_example())
    assert used, "no ${VAR} found; has the reference syntax changed?"
    assert used - documented == set(), "add these to compose/.env.example"
    assert documented - used == set(), "compose/.env.example documents variables nothing uses"


def test_required_secrets_ship_empty() -> None:
    """Forgetting to edit .env must stop `up`, not start Hive with a published secret."""
    required = set(REQUIRED_REFERENCE.findall(COMPOSE_FILE.read_text()))
    assert {"HIVE_SECRET_KEY", "HIVE_JWT_SIGNING_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "HIVE_METRICS_TOKEN",
            "GRAFANA_PASSWORD"} <= required
    example = env_example()
    assert {name: example[name] for name in required if example[name]} == {}


def test_shared_environment_matches_what_settings_read(compose: dict[str, Any]) -> None:
    shared = compose["x-hive-env"]
    for name in ("HIVE_MODE", "HIVE_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "HIVE_ALLOWED_HOSTS", "HIVE_CSRF_TRUSTED_ORIGINS"):
        assert name in shared, name
    assert shared["HIVE_MODE"] == "production"
    checked = [name for name in shared if name.startswith("HIVE_") or name in ("DATABASE_URL", "REDIS_URL")]
    unread = [name for name in checked if not read_by_settings(name)]
    assert unread == [], "hive_project/settings.py does not read these"


def test_hive_services_use_the_shared_environment(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    shared = compose["x-hive-env"]
    for name in HIVE_SERVICES:
        environment = environment_of(services[name])
        assert {key: environment.get(key) for key in shared} == shared, name


def test_service_specific_variables_are_read_where_they_are_set(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    shared = compose["x-hive-env"]
    names = {key for name in HIVE_SERVICES for key in environment_of(services[name]) if key.startswith("HIVE_") and key not in shared}
    assert "HIVE_MIGRATE" in names
    unread = sorted(name for name in names if not (read_by_settings(name) or read_at_web_startup(name)))
    if unread and set(unread) <= {"HIVE_ADMIN_USER", "HIVE_ADMIN_PASSWORD"}:
        pytest.xfail("ensure_setup does not read HIVE_ADMIN_USER/HIVE_ADMIN_PASSWORD yet")
    assert unread == []


def test_image_environment_is_read_by_settings() -> None:
    env_lines = re.findall(r"^ENV\s+(.+?)(?<!\\)$", DOCKERFILE.read_text().replace("\\\n", " "), re.M)
    names = {match for line in env_lines for match in re.findall(r"\b([A-Z_][A-Z0-9_]*)=", line)}
    assert {"HIVE_MODE", "PYTHONUNBUFFERED", "HIVE_VAR_DIR"} <= names
    assert [name for name in names if name.startswith("HIVE_") and not read_by_settings(name)] == []


# --- image ----------------------------------------------------------------------


def test_dockerfile_builds_the_web_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "requirements/base.txt" in text
    assert "hive_project.asgi:application" in text
    assert re.search(r"^CMD \[\"python\", \"-m\", \"uvicorn\", \"hive_project\.asgi:application\"", text, re.M)
    assert "--proxy-headers" in text
    assert re.search(r"collectstatic --noinput", text)
    assert re.search(r"^HEALTHCHECK .*\n?.*python", text, re.M)
    assert re.search(r"^ENTRYPOINT \[\"/app/compose/entrypoint\.sh\"\]", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    if (ROOT / "hive_project" / "asgi.py").exists():
        assert "application" in (ROOT / "hive_project" / "asgi.py").read_text()


def test_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", "var", ".git", "compose/.env*"} <= ignored


def test_entrypoint_is_executable_bash() -> None:
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- entrypoint behaviour, with python/celery stubbed on PATH --------------------


def run_entrypoint(tmp_path: Path, *argv: str, migrate: str | None,
                   extra_env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = tmp_path / "calls.log"
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for program in ("python", "celery"):
        stub = stubs / program
        stub.write_text(f'#!/bin/sh\necho "{program} $*" >> "{log}"\n')
        stub.chmod(0o755)
    env = {"PATH": f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {})}
    if migrate is not None:
        env["HIVE_MIGRATE"] = migrate
    result = subprocess.run([str(ENTRYPOINT), *argv], capture_output=True, text=True, env=env, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


WEB = ("python", "-m", "uvicorn", "hive_project.asgi:application", "--host", "0.0.0.0", "--port", "8000")
MANAGE = str(ROOT / "manage.py")


def test_web_migrates_then_sets_up_then_serves(tmp_path: Path) -> None:
    result, calls = run_entrypoint(tmp_path, *WEB, migrate="true")
    assert result.returncode == 0, result.stderr
    assert calls == [f"python {MANAGE} migrate --noinput", f"python {MANAGE} ensure_setup", " ".join(WEB)]


def test_web_without_hive_migrate_just_serves(tmp_path: Path) -> None:
    result, calls = run_entrypoint(tmp_path, *WEB, migrate=None)
    assert result.returncode == 0, result.stderr
    assert calls == [" ".join(WEB)]


def test_workers_never_migrate(tmp_path: Path) -> None:
    worker = ("celery", "-A", "hive_project", "worker", "-Q", "hive.high")
    result, calls = run_entrypoint(tmp_path, *worker, migrate="true")
    assert result.returncode == 0, result.stderr
    assert calls == [" ".join(worker)]


def test_a_misspelt_hive_migrate_stops_the_container(tmp_path: Path) -> None:
    result, calls = run_entrypoint(tmp_path, *WEB, migrate="ture")
    assert result.returncode != 0
    assert "HIVE_MIGRATE" in result.stderr
    assert calls == []


def test_the_entrypoint_empties_the_metrics_dir_before_starting(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    stale = [metrics / name for name in ("counter_41.db", "histogram_41.db", "gauge_livesum_7.db")]
    for path in stale:
        path.write_bytes(b"stale")
    keep = metrics / "README"
    keep.write_text("not prometheus_client's")
    result, calls = run_entrypoint(tmp_path, *WEB, migrate=None, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    assert result.returncode == 0, result.stderr
    assert calls == [" ".join(WEB)]
    assert [path for path in stale if path.exists()] == []
    assert keep.exists(), "only prometheus_client's *.db files are removed"


def test_the_entrypoint_creates_a_missing_metrics_dir(tmp_path: Path) -> None:
    metrics = tmp_path / "not-yet" / "metrics"
    worker = ("celery", "-A", "hive_project", "worker", "-Q", "hive.low")
    result, calls = run_entrypoint(tmp_path, *worker, migrate=None, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    assert result.returncode == 0, result.stderr
    assert metrics.is_dir()
    assert calls == [" ".join(worker)]


def test_the_image_leaves_no_root_owned_metrics_dir() -> None:
    """collectstatic imports the settings, which create VAR_DIR/prometheus as root; the
    hive user could not write there when PROMETHEUS_MULTIPROC_DIR is left at its default."""
    assert re.search(r"collectstatic --noinput \\\n\s*&& rm -rf /var/lib/hive/prometheus\b", DOCKERFILE.read_text())


# --- docker compose config (only where the CLI exists) --------------------------


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not on PATH")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        reason = (probe.stderr.strip() or probe.stdout.strip()).splitlines()[:1]
        pytest.skip(f"the docker CLI has no compose plugin ({' '.join(reason)})")
    env = {**os.environ, "HIVE_SECRET_KEY": "test-secret", "HIVE_JWT_SIGNING_KEY": "test-jwt-key",
           "POSTGRES_PASSWORD": "test-password", "FLOWER_BASIC_AUTH": "admin:test-password",
           "HIVE_METRICS_TOKEN": "test-token", "GRAFANA_PASSWORD": "test-password"}
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    if result.returncode != 0 and re.search(
        r"Cannot connect to the Docker daemon|Is the docker daemon running"
        r"|error during connect",
        result.stderr,
    ):
        pytest.skip(f"no Docker engine reachable ({result.stderr.strip().splitlines()[0]})")
    assert result.returncode == 0, result.stderr
