"""``docker-compose.yml`` and the ``Dockerfile`` checked against the code they deploy.

No Docker engine runs here, so the production files are never started by the suite. What can
be checked without one is checked: every ``RETENTION_*`` variable they set is one the code
reads, the worker's settings come out as intended (broker, store, data volume, web port),
the secrets that several workers must share are required, the health check asks a view that
needs no token, the commands exist, and every file the packages load at run time is in the
wheel the image installs (``pip install .``, not the editable install of the tests).
"""

from __future__ import annotations

import base64
import fnmatch
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()

_SUBST = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` (the forms used).

    >>> interpolate("${A:-4}", {}), interpolate("${A:-4}", {"A": "8"})
    ('4', '8')
    >>> try:
    ...     interpolate("${A:?needed}", {})
    ... except MissingVariable as exc:
    ...     print(exc)
    A: needed
    """
    def one(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        given = env.get(name)
        if given:
            return given
        if op == ":?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return _SUBST.sub(one, value)


def service_env(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """A service's environment as the container gets it (YAML merge keys already applied)."""
    raw = COMPOSE["services"][service].get("environment") or {}
    return {k: interpolate(str(v), env) for k, v in raw.items()}


def dockerfile_env() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in DOCKERFILE.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                k, _, v = pair.partition("=")
                out[k] = v
    return out


SECRETS = {"RETENTION_MODEL_KEY": "k" * 64, "RETENTION_WEB_TOKEN": "t" * 32}


def worker_container_env() -> dict[str, str]:
    """What a worker container sees: the image's ``ENV``, then compose's environment."""
    return {**dockerfile_env(), **service_env("worker", SECRETS)}


class _Recording(dict):
    """An environment that notes every name asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def names_the_code_reads() -> set[str]:
    """``RETENTION_*`` names read by ``Settings.from_env`` (recorded) or by name anywhere in
    the packages (``os.environ`` lookups such as the web token and the schema folder)."""
    rec = _Recording()
    Settings.from_env(rec)
    names = {n for n in rec.asked if n.startswith("RETENTION_")}
    for path in list((ROOT / "streams").rglob("*.py")) + list((ROOT / "models").rglob("*.py")):
        names |= set(re.findall(r"\bRETENTION_[A-Z0-9_]+\b", path.read_text()))
    return names


def test_every_variable_set_is_one_the_code_reads() -> None:
    known = names_the_code_reads()
    assert {"RETENTION_BROKER", "RETENTION_WEB_TOKEN", "RETENTION_SCHEMA_DIR"} <= known
    env = dict(SECRETS)
    set_by_deployment = set(dockerfile_env())
    for service in ("topics", "worker"):
        set_by_deployment |= set(service_env(service, env))
    unknown = sorted(n for n in set_by_deployment if n.startswith("RETENTION_") and n not in known)
    assert unknown == [], f"set in docker-compose.yml / Dockerfile but read nowhere: {unknown}"


def test_worker_settings_come_out_as_intended() -> None:
    env = worker_container_env()
    s = Settings.from_env(env)
    assert s.broker == "kafka:9092" and s.bootstrap_list == ["kafka:9092"]
    assert not s.embedded_broker
    assert s.store == "rocksdb://" and s.data_dir == "/data"
    assert "/data" in COMPOSE["services"]["worker"]["volumes"]     # one volume per replica
    # longer than the 20 s the tests give a worker's clean stop (tests/conftest.py)
    assert int(COMPOSE["services"]["worker"]["stop_grace_period"].rstrip("s")) >= 30
    assert s.partitions == 4 and s.web_enabled
    # the same secret in every replica: a partition moving to another worker keeps its models
    assert s.snapshot_key() == SECRETS["RETENTION_MODEL_KEY"].encode()
    conf = s.faust_settings()
    assert conf["web_bind"] == "0.0.0.0"
    # advertised to the group for routed /customers/<id> lookups: never the wildcard
    assert conf["web_host"] not in ("0.0.0.0", "::", "")
    assert env["RETENTION_SCHEMA_DIR"] == "/app/schemas"
    assert "COPY schemas ./schemas" in DOCKERFILE and "WORKDIR /app" in DOCKERFILE
    kafka = COMPOSE["services"]["kafka"]["environment"]
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"      # KRaft, no ZooKeeper
    assert interpolate(str(kafka["KAFKA_NUM_PARTITIONS"]), {}) == str(s.partitions)
    # the broker's data is on its volume (the image's default log dir is under /tmp)
    volume, _, mount = COMPOSE["services"]["kafka"]["volumes"][0].partition(":")
    assert volume in COMPOSE["volumes"] and kafka["KAFKA_LOG_DIRS"] == mount
    # KRaft formats the log dir with it: a base64url UUID (16 bytes), else the broker exits
    cluster_id = interpolate(kafka["CLUSTER_ID"], {})
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_shared_secrets_are_required(secret: str) -> None:
    """Without them compose refuses to start the workers (instead of each replica drawing its
    own model key, whose snapshots the next owner of a partition would refuse, or exposing
    the views without a token)."""
    env = {k: v for k, v in SECRETS.items() if k != secret}
    with pytest.raises(MissingVariable, match=secret):
        service_env("worker", env)
    service_env("topics", {})        # the topics job needs neither


def test_health_check_asks_an_open_view_on_the_web_port() -> None:
    test = COMPOSE["services"]["worker"]["healthcheck"]["test"]
    url = urlparse(re.search(r"http://[^'\" ]+", " ".join(test)).group(0))
    env = worker_container_env()
    assert url.port == Settings.from_env(env).web_port
    # the views that answer without the token (tests/test_web_api.py checks them over HTTP)
    assert url.path in ("/health/live", "/health/ready")
    views = (ROOT / "streams" / "web" / "views.py").read_text()
    assert f'@app.page("{url.path}"' in views


def test_commands_exist() -> None:
    import streams.__main__ as entry

    worker = COMPOSE["services"]["worker"]["command"]
    assert worker[:4] == ["python", "-m", "streams", "worker"]
    assert 'CMD ["python", "-m", "streams", "worker"' in DOCKERFILE
    topics = COMPOSE["services"]["topics"]["command"]
    assert topics[:3] == ["python", "-m", "streams"] and topics[3] in entry.LOCAL_COMMANDS
    from streams import cli

    with pytest.raises(SystemExit) as exc:      # argparse knows the command and its option
        cli.main([*topics[3:], "--help"])
    assert exc.value.code == 0


def test_every_runtime_file_is_in_the_wheel() -> None:
    """``pip install .`` (the image) ships only the modules and the declared package data:
    every other file under the packages must match a ``package-data`` pattern."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["models*", "streams*"]
    missing = []
    for package in ("models", "streams"):
        for path in (ROOT / package).rglob("*"):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".py", ".pyc"):
                continue
            rel = path.relative_to(ROOT / package).as_posix()
            if not any(fnmatch.fnmatch(rel, pat) for pat in patterns.get(package, [])):
                missing.append(f"{package}/{rel}")
    assert missing == [], f"not in package-data, so not in the image: {missing}"
    for package in ("models", "streams"):
        assert f"COPY {package} ./{package}" in DOCKERFILE
