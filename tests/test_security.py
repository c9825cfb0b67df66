"""Security basics (see docs/SECURITY.md).

* web views listen on loopback by default, need a token when one is set, and Faust's own
  table browser (``/table/<name>/<key>/``, on by default in Faust) is off;
* SASL / SSL settings reach the Kafka clients (Faust -> aiokafka, and kafka-python);
* secrets never appear in ``repr``, ``describe()`` or the worker log;
* model snapshots are signed and a bad signature is refused *before* anything is unpickled;
* no ``eval`` of untrusted input (segment rules are a checked AST), no pickle on topics or
  tables, no ``eval``/``exec``/``pickle.loads`` anywhere else in the code (a static scan).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import hmac
import json
import pickle
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SECRET_WORDS = ("password", "token", "secret")


# --------------------------------------------------------------------------- web exposure
def test_web_listens_on_loopback_by_default():
    for s in (Settings(), Settings.from_env({})):
        assert s.web_bind in LOOPBACK
        conf = s.faust_settings()
        assert conf["web_bind"] in LOOPBACK and conf["web_host"] in LOOPBACK


def test_bind_is_configurable_for_exposure():
    s = Settings.from_env({"RETENTION_WEB_BIND": "0.0.0.0"})
    assert s.faust_settings()["web_bind"] == "0.0.0.0"


def test_faust_table_browser_is_off():
    """Faust serves every table at /table/<name>/<key>/ unless web_tables_enabled=False,
    with no token (customer state, i.e. personal data)."""
    assert Settings().faust_settings().get("web_tables_enabled") is False


# --------------------------------------------------------------------------- SASL / SSL
def _cafile() -> str:
    paths = ssl.get_default_verify_paths()
    for p in (paths.cafile, paths.openssl_cafile):
        if p and Path(p).exists():
            return p
    certifi = pytest.importorskip("certifi")
    return certifi.where()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_settings_reach_faust_and_aiokafka(mechanism: str):
    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    env = {"RETENTION_SECURITY_PROTOCOL": "sasl_ssl", "RETENTION_SASL_MECHANISM": mechanism,
           "RETENTION_SASL_USERNAME": "svc-retention", "RETENTION_SASL_PASSWORD": "pw-123456",
           "RETENTION_SSL_CAFILE": _cafile()}
    s = Settings.from_env(env)
    creds = s.faust_settings()["broker_credentials"]
    assert isinstance(creds, SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == mechanism
    assert auth["sasl_plain_username"] == "svc-retention"
    assert auth["sasl_plain_password"] == "pw-123456"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert auth["ssl_context"].check_hostname
    kp = s.kafka_python_config()
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_mechanism"] == mechanism
    assert kp["sasl_plain_username"] == "svc-retention"
    assert kp["sasl_plain_password"] == "pw-123456"
    assert kp["ssl_cafile"] == env["RETENTION_SSL_CAFILE"]


def test_ssl_only_and_plaintext():
    from faust.auth import SSLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = Settings.from_env({"RETENTION_SECURITY_PROTOCOL": "SSL",
                           "RETENTION_SSL_CAFILE": _cafile()})
    creds = s.faust_settings()["broker_credentials"]
    assert isinstance(creds, SSLCredentials)
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"
    assert s.kafka_python_config()["security_protocol"] == "SSL"
    plain = Settings()
    assert "broker_credentials" not in plain.faust_settings()
    assert plain.kafka_python_config()["security_protocol"] == "PLAINTEXT"


def test_sasl_plaintext_is_passed_through_too():
    s = Settings.from_env({"RETENTION_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "RETENTION_SASL_USERNAME": "u", "RETENTION_SASL_PASSWORD": "p"})
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(s.faust_settings()["broker_credentials"])
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None


def test_topic_creation_uses_the_security_settings(monkeypatch):
    """``python -m streams topics --create`` (the compose ``topics`` job) talks to the broker
    with the same protocol and credentials as the worker, not in plain text. The admin client
    is replaced by a recorder (it cannot connect anywhere here)."""
    import kafka

    from streams.cli import create_all_topics

    seen: list[dict] = []

    class Admin:
        def __init__(self, **conf):
            seen.append(conf)

        def list_topics(self):
            return []

        def create_topics(self, topics, timeout_ms=None):
            pass

        def close(self):
            pass

    monkeypatch.setattr(kafka, "KafkaAdminClient", Admin)
    s = Settings.from_env({"RETENTION_BROKER": "k1:9093,k2:9093",
                           "RETENTION_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "RETENTION_SASL_MECHANISM": "SCRAM-SHA-512",
                           "RETENTION_SASL_USERNAME": "svc", "RETENTION_SASL_PASSWORD": "pw"})
    assert create_all_topics(s)
    assert seen and seen[0]["bootstrap_servers"] == "k1:9093,k2:9093"
    assert seen[0]["security_protocol"] == "SASL_PLAINTEXT"
    assert seen[0]["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (seen[0]["sasl_plain_username"], seen[0]["sasl_plain_password"]) == ("svc", "pw")


# --------------------------------------------------------------------------- secrets
def _secret_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if (any(w in f.name for w in SECRET_WORDS) or f.name.endswith("_key"))
            and not f.name.endswith("file")]


def test_settings_never_show_secrets():
    secrets = {name: f"S3cr3t-{name}" for name in _secret_fields(Settings)}
    assert "sasl_password" in secrets
    s = Settings(**secrets)
    shown = [repr(s), str(s), json.dumps(s.describe(), default=str),
             repr(s.faust_settings().get("broker_credentials"))]
    s2 = Settings(**secrets, security_protocol="SASL_SSL")
    shown.append(repr(s2.faust_credentials()))
    for text in shown:
        for value in secrets.values():
            assert value not in text, text
    for name in secrets:
        assert s.describe()[name] == "***"


def test_model_hub_config_never_shows_its_key():
    from models.scoring import HubConfig, ModelHub

    cfg = HubConfig(snapshot_key=b"S3cr3t-hub-key")
    assert b"S3cr3t-hub-key".decode() not in repr(cfg)
    assert "S3cr3t" not in repr(ModelHub(cfg).config)


# --------------------------------------------------------------------------- snapshots
class _Boom:
    """Unpickling this runs code: what an attacker would put on a topic."""

    def __reduce__(self):  # noqa: D105
        return (exec, ("raise SystemExit('unpickled attacker code')",))


def test_model_snapshot_is_signed_and_checked_before_unpickling(monkeypatch):
    from models.scoring import HubConfig, ModelHub, SnapshotError
    from models.scoring import hub as hub_module

    key = b"k" * 32
    hub = ModelHub(HubConfig(snapshot_key=key))
    blob = hub.snapshot()
    again = ModelHub.restore(blob, key)
    assert type(again) is ModelHub and again.config.snapshot_key == key
    assert key not in blob                                            # the key is not shipped

    calls = []
    real_loads = pickle.loads

    def spy(data: bytes, *a, **kw):
        calls.append(len(data))
        return real_loads(data, *a, **kw)

    monkeypatch.setattr(hub_module.pickle, "loads", spy)
    n = hub_module._HEADER.size
    header, payload = blob[:n], blob[n + 32:]
    evil = pickle.dumps(_Boom())
    forged_bad_mac = header + b"\0" * 32 + evil
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    for bad, k in ((blob, b"another key"), (bytes(flipped), key), (forged_bad_mac, key),
                   (b"", key), (blob[:10], key), (blob, b"")):
        with pytest.raises(SnapshotError):
            ModelHub.restore(bad, k)
    assert calls == [], "unpickled before the signature was checked"
    # only the key holder can make a blob that is unpickled
    good_mac = hmac.new(key, header + evil, hashlib.sha256).digest()
    with pytest.raises(SystemExit):
        ModelHub.restore(header + good_mac + evil, key)
    assert calls == [len(evil)]
    assert payload


# --------------------------------------------------------------------------- no eval
MALICIOUS_RULES = [
    "__import__('os').system('id')",
    "orders.__class__",
    "().__class__.__bases__[0]",
    "orders[0]",
    "[x for x in (1, 2)]",
    "(lambda: 1)()",
    "open('/etc/passwd')",
    "getattr(orders, 'real')",
    "eval('1')",
    "'a' == 'a'",
    "f'{orders}' == '1'",
    "orders if orders else 1",
    "2 ** 10000 > orders",
    "orders; import os",
    "unknown_feature > 1",
    "max(orders, key=abs) > 1",
    "orders := 1",
]


@pytest.mark.parametrize("text", MALICIOUS_RULES)
def test_segment_rules_refuse_anything_but_the_checked_language(text: str):
    from models.segments import DefinitionError, Rule

    with pytest.raises(DefinitionError):
        Rule(text)


def test_segment_catalogue_file_with_code_is_refused(tmp_path: Path):
    from models.segments import DefinitionError, load_catalog

    good = (ROOT / "models" / "segments.toml").read_text()
    bad = good.replace('enter = "net_orders >= 2"',
                       'enter = "net_orders >= 2 and __import__(\'os\').system(\'id\') == 0"', 1)
    assert bad != good
    path = tmp_path / "segments.toml"
    path.write_text(bad)
    with pytest.raises(DefinitionError):
        load_catalog(path)


def test_rules_run_without_builtins():
    from models.segments import _GLOBALS, Rule

    assert _GLOBALS["__builtins__"] == {}
    rule = Rule("max(orders, 1) >= 1 and abs(net_revenue) < 10")
    assert rule({"orders": 3, "net_revenue": -5.0}) is True


#: the only places allowed to call these, as (file, enclosing function)
ALLOWED_DYNAMIC = {
    ("eval", "models/segments.py"),            # compiled, checked AST (Rule)
    ("pickle.loads", "models/scoring/hub.py"),  # after the HMAC check (ModelHub.restore)
    # the two ends of the private pipe between a worker and its own domain process
    # (streams/split.py): plain values only, never from a topic or a socket
    ("marshal.loads", "streams/domain_process.py"),
    ("marshal.loads", "streams/split.py"),
}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "pickle.loads", "pickle.load", "marshal.loads",
                   "dill.loads", "cloudpickle.loads", "yaml.load", "yaml.unsafe_load",
                   "__import__", "os.system", "subprocess.call"}


def _calls(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                name = f.id
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                name = f"{f.value.id}.{f.attr}"
            else:
                continue
            if name in FORBIDDEN_CALLS:
                out.append((name, node.lineno))
    return out


def test_no_eval_exec_or_unpickling_outside_the_checked_places():
    found = []
    for pkg in ("models", "streams"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name, line in _calls(path):
                if name == "compile" and rel == "models/segments.py":
                    continue                   # compiles the checked tree
                if (name, rel) not in ALLOWED_DYNAMIC:
                    found.append(f"{rel}:{line}: {name}()")
    assert not found, found


def test_no_pickle_codec_on_topics_or_tables(tmp_path: Path):
    from streams.app import create_app

    app = create_app(Settings(data_dir=str(tmp_path), store="memory://", web_enabled=False))
    topo = app.retention_topology
    assert app.conf.value_serializer != "pickle" and app.conf.key_serializer != "pickle"
    channels = [topo.source, topo.clock, topo.changes, *topo.dlq.values(),
                *topo.segment_topics.values()]
    for t in channels:
        assert t.key_serializer == "raw" and t.value_serializer == "raw", t.topics
    for table in app.tables.values():
        assert table.value_serializer == "json", table.name
        assert table.changelog_topic.value_serializer == "json", table.name
        assert "pickle" not in str(table.key_serializer)


# --------------------------------------------------------------------------- with a worker
@pytest.mark.broker
@pytest.mark.timeout(120)
def test_worker_views_need_the_token_and_never_log_secrets(broker, workers, unique, tmp_path):
    from tests.conftest import produce_raw, wait_committed, worker_env

    from streams.cli import create_all_topics

    token = f"tok-{unique}-0123456789abcdef"
    password = f"pw-{unique}-fedcba9876543210"
    env = worker_env(broker.bootstrap, f"sec-{unique}", tmp_path / "w",
                     RETENTION_TOPIC_PREFIX=f"s{unique}.", RETENTION_CLOCK_INTERVAL="0",
                     RETENTION_WEB_TOKEN=token, RETENTION_SASL_PASSWORD=password,
                     RETENTION_SASL_USERNAME="someone")
    settings = Settings.from_env(env)
    create_all_topics(settings)
    w = workers("streams.web.worker", env, name="sec")
    w.wait_ready(90)
    from tests.eventkit import Shop

    ev = Shop().order("cust-sec-1", day=1, total=42.0)
    produce_raw(broker.bootstrap, settings.topic("shop.orders"),
                [(b"cust-sec-1", orjson.dumps(ev))])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic("shop.orders"), 60, [w])
    base = f"http://127.0.0.1:{env['RETENTION_WEB_PORT']}"

    def get(path: str, auth: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(base + path)
        if auth is not None:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    assert get("/health/live")[0] == 200
    for path in ("/customers/cust-sec-1", "/segments", "/flow", "/metrics"):
        assert get(path)[0] == 401, path
        assert get(path, "Bearer wrong")[0] == 401, path
        assert get(path, token)[0] == 401, path                       # scheme required
    deadline = time.monotonic() + 20
    while True:
        status, body = get("/customers/cust-sec-1", f"Bearer {token}")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, body[:300]
    # Faust's own table browser must not hand out the same state without the token
    table_status, table_body = get("/table/customers/cust-sec-1/")
    w.stop()
    log = w.log()
    assert token not in log and password not in log
    assert not (table_status == 200 and b"gross_revenue" in table_body), \
        "customer state served without a token at /table/customers/<key>/"
