"""One typed settings object for the streaming shell, read from the environment.

Every value has an environment variable (``RETENTION_*``) and a default that works for a
single local worker. Secrets are masked in ``repr``/``describe()``.

>>> s = Settings.from_env({"RETENTION_BROKER": "k1:9092,k2:9092", "RETENTION_PARTITIONS": "8"})
>>> s.broker, s.partitions, s.store
('k1:9092,k2:9092', 8, 'rocksdb://')
>>> s.faust_broker
['kafka://k1:9092', 'kafka://k2:9092']
>>> Settings.from_env({"RETENTION_SASL_PASSWORD": "hunter2"}).describe()["sasl_password"]
'***'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.gc_tuning import DEFAULT_THRESHOLDS as DEFAULT_GC_THRESHOLDS
from streams.gc_tuning import parse_thresholds

__all__ = ["APP_VERSION", "Settings"]

APP_VERSION = "0.1.0"

_TRUE = {"1", "true", "yes", "on"}


#: bind addresses meaning "every interface": not an address to advertise
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", "", "[::]"})


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    """Settings of one worker (or one CLI client).

    ``embedded_broker`` switches on the workarounds for the local Tansu broker (short
    session timeout so a worker joins in about 5 s instead of 32 s; one record per produce
    batch, because Tansu's ListOffsets is wrong for multi-record batches and Faust's table
    recovery would stop short of the changelog end). Leave it off on Apache Kafka.
    """

    broker: str = "127.0.0.1:9092"
    app_id: str = "retention-scorer"
    topic_prefix: str = ""                        # e.g. "staging." (isolates environments, tests)
    partitions: int = 4
    replication: int = 1
    store: str = "rocksdb://"
    data_dir: str = "var/worker-0"
    web_enabled: bool = True
    web_port: int = 6066
    web_bind: str = "127.0.0.1"
    #: the host other workers reach this one's web server by (routed /customers/<id> lookups);
    #: None: the bind address, or this host's address when bound to all interfaces
    web_host: str | None = None
    embedded_broker: bool = False
    # security passthrough (Faust and kafka-python)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # runtime tuning
    session_timeout: float | None = None          # None: 6 s on the embedded broker, else Faust's
    commit_interval: float = 1.0
    clock_interval: float = 2.0                   # wall seconds between clock ticks; 0 = off
    max_message_bytes: int = 64 * 1024            # ingest size limit (oversized -> DLQ)
    batch_max: int = 1000                         # events per ingest batch at most
    batch_within: float = 0.05                    # seconds a partial batch waits for more
    producer_linger_ms: int = 5                   # how long a produce batch waits to fill
    producer_batch_bytes: int = 256 * 1024        # produce batch size at most, per partition
    flush_interval: float = 0.5                   # seconds between state flushes (each changed
                                                  # customer written once per flush; acks wait)
    log_level: str = "info"
    # the engine (models.config.EngineConfig): event-time rules and money
    store_currency: str = "GBP"
    currency_rates: str = ""                      # "USD=0.8,EUR=0.86": rates into store currency
    allowed_lateness: float = 900.0               # seconds the watermark trails the newest event
    shopper_session_timeout: float = 1800.0       # inactivity that closes a shopping session
    # online models (models.scoring.ModelHub), one per partition
    models: bool = True
    model_key: str | None = field(default=None, repr=False)   # HMAC key of model snapshots
    model_snapshot_interval: float = 30.0         # wall seconds between snapshots per partition
    #: only to prove that tests/test_streams_rebalance.py catches faust issue 596
    disable_faust_fixes: bool = False
    #: Faust's read loop without four tasks per record (streams.faust_speedups); process wide
    faust_fast_drain: bool = True
    #: the engines in a child process (streams.domain_process): two cores per worker
    domain_process: bool = False
    #: the garbage collector's thresholds (streams.gc_tuning); None: Python's, no freeze
    gc_thresholds: tuple[int, int, int] | None = DEFAULT_GC_THRESHOLDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env

        def get(name: str, default: Any = None) -> Any:
            v = e.get(f"RETENTION_{name}")
            return default if v is None or v == "" else v

        session = get("SESSION_TIMEOUT")
        return cls(
            broker=get("BROKER", cls.broker),
            app_id=get("APP_ID", cls.app_id),
            topic_prefix=get("TOPIC_PREFIX", cls.topic_prefix),
            partitions=int(get("PARTITIONS", cls.partitions)),
            replication=int(get("REPLICATION", cls.replication)),
            store=get("STORE", cls.store),
            data_dir=get("DATA_DIR", cls.data_dir),
            web_enabled=_bool(get("WEB_ENABLED"), cls.web_enabled),
            web_port=int(get("WEB_PORT", cls.web_port)),
            web_bind=get("WEB_BIND", cls.web_bind),
            web_host=get("WEB_HOST"),
            embedded_broker=_bool(get("EMBEDDED_BROKER"), cls.embedded_broker),
            security_protocol=get("SECURITY_PROTOCOL", cls.security_protocol).upper(),
            sasl_mechanism=get("SASL_MECHANISM", cls.sasl_mechanism).upper(),
            sasl_username=get("SASL_USERNAME"),
            sasl_password=get("SASL_PASSWORD"),
            ssl_cafile=get("SSL_CAFILE"),
            ssl_certfile=get("SSL_CERTFILE"),
            ssl_keyfile=get("SSL_KEYFILE"),
            session_timeout=float(session) if session is not None else None,
            commit_interval=float(get("COMMIT_INTERVAL", cls.commit_interval)),
            clock_interval=float(get("CLOCK_INTERVAL", cls.clock_interval)),
            max_message_bytes=int(get("MAX_MESSAGE_BYTES", cls.max_message_bytes)),
            batch_max=max(1, int(get("BATCH_MAX", cls.batch_max))),
            batch_within=max(0.001, float(get("BATCH_WITHIN", cls.batch_within))),
            flush_interval=max(0.0, float(get("FLUSH_INTERVAL", cls.flush_interval))),
            producer_linger_ms=max(0, int(get("PRODUCER_LINGER_MS", cls.producer_linger_ms))),
            producer_batch_bytes=max(1024, int(get("PRODUCER_BATCH_BYTES",
                                                   cls.producer_batch_bytes))),
            log_level=get("LOG_LEVEL", cls.log_level),
            disable_faust_fixes=_bool(get("DISABLE_FAUST_FIXES"), False),
            faust_fast_drain=_bool(get("FAUST_FAST_DRAIN"), cls.faust_fast_drain),
            gc_thresholds=parse_thresholds(get("GC_THRESHOLDS")),
            store_currency=get("STORE_CURRENCY", cls.store_currency).upper(),
            currency_rates=get("CURRENCY_RATES", cls.currency_rates),
            allowed_lateness=float(get("ALLOWED_LATENESS", cls.allowed_lateness)),
            shopper_session_timeout=float(get("SHOPPER_SESSION_TIMEOUT", cls.shopper_session_timeout)),
            models=_bool(get("MODELS"), cls.models),
            model_key=get("MODEL_KEY"),
            model_snapshot_interval=float(get("MODEL_SNAPSHOT_INTERVAL", cls.model_snapshot_interval)),
            domain_process=_bool(get("DOMAIN_PROCESS"), cls.domain_process),
        )

    def snapshot_key(self) -> bytes:
        """The HMAC key of model snapshots: ``RETENTION_MODEL_KEY``, else a random key kept
        (mode 0600) in ``<data dir>/model.key`` and reused on every start of this worker.
        Several workers of one app must share a key: set ``RETENTION_MODEL_KEY`` for them."""
        if self.model_key:
            return self.model_key.encode("utf-8")
        import secrets

        path = Path(self.data_dir) / "model.key"
        if path.exists():
            return path.read_bytes().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key

    def engine_config(self) -> Any:
        """The engine's configuration (``models.config.EngineConfig``) from these settings.

        >>> Settings(currency_rates="USD=0.8, eur=0.86").engine_config().currency_rates
        {'USD': 0.8, 'EUR': 0.86}
        """
        from models.config import EngineConfig

        rates: dict[str, float] = {}
        for item in self.currency_rates.split(","):
            if item.strip():
                cur, sep, rate = item.partition("=")
                try:
                    rates[cur.strip().upper()] = float(rate)
                except ValueError:
                    raise ValueError(f"RETENTION_CURRENCY_RATES: {item.strip()!r} is not CUR=RATE "
                                     "(e.g. USD=0.8)") from None
        return EngineConfig(store_currency=self.store_currency, currency_rates=rates,
                            allowed_lateness=self.allowed_lateness,
                            session_timeout=self.shopper_session_timeout)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def topic(self, name: str) -> str:
        """The real name of a catalogue topic (with ``topic_prefix``)."""
        return f"{self.topic_prefix}{name}"

    # -- derived -----------------------------------------------------------------------
    @property
    def bootstrap_list(self) -> list[str]:
        return [b.strip().removeprefix("kafka://") for b in self.broker.split(",") if b.strip()]

    @property
    def faust_broker(self) -> list[str]:
        return [f"kafka://{b}" for b in self.bootstrap_list]

    @property
    def effective_session_timeout(self) -> float | None:
        if self.session_timeout is not None:
            return self.session_timeout
        return 6.0 if self.embedded_broker else None

    def faust_credentials(self) -> Any:
        """A Faust credentials object for the configured security protocol (or None)."""
        import ssl

        import faust

        proto = self.security_protocol
        context = None
        if proto in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        if proto in ("SASL_PLAINTEXT", "SASL_SSL"):
            return faust.SASLCredentials(username=self.sasl_username,
                                         password=self.sasl_password,
                                         mechanism=self.sasl_mechanism,
                                         ssl_context=context)
        if proto == "SSL":
            return faust.SSLCredentials(context)
        return None

    def advertised_web_host(self) -> str:
        """The host name or address this worker's web server is reached at by the other
        workers of the group (Faust's ``canonical_url``, in the assignor's metadata: a
        ``/customers/<id>`` lookup is forwarded to the URL of the key's owner).

        ``RETENTION_WEB_HOST`` when set; else the bind address, unless that is a wildcard
        (``0.0.0.0``, ``::``), which is no address to send a request to: then the address
        this host's name resolves to (a container's own address under Docker).

        >>> Settings(web_bind="127.0.0.1").advertised_web_host()
        '127.0.0.1'
        >>> Settings(web_bind="0.0.0.0", web_host="worker-2.internal").advertised_web_host()
        'worker-2.internal'
        >>> Settings(web_bind="0.0.0.0").advertised_web_host() not in ("0.0.0.0", "")
        True
        """
        if self.web_host:
            return self.web_host
        if self.web_bind not in _WILDCARD_BINDS:
            return self.web_bind
        import socket

        name = socket.gethostname()
        try:
            return socket.gethostbyname(name)
        except OSError:
            return name

    def faust_settings(self) -> dict[str, Any]:
        """Keyword arguments for :class:`faust.App`."""
        conf: dict[str, Any] = {
            "broker": self.faust_broker,
            "store": self.store,
            "datadir": str(Path(self.data_dir)),
            "topic_partitions": self.partitions,
            "topic_replication_factor": self.replication,
            "processing_guarantee": "at_least_once",
            "consumer_auto_offset_reset": "earliest",
            "broker_commit_interval": self.commit_interval,
            "web_enabled": self.web_enabled,
            "web_port": self.web_port,
            "web_bind": self.web_bind,
            "web_host": self.advertised_web_host(),
            # Faust's own table browser (/table/<name>/<key>/) would serve customer state with
            # no token: off. Operators use the token-protected /customers/<id> view.
            "web_tables_enabled": False,
            "version": 1,
            # both producers (changelog, dead letters, changes): fewer, larger produce
            # requests; Kafka's Java producer lingers 5 ms by default too
            "producer_max_batch_size": self.producer_batch_bytes,
            "producer_linger_ms": self.producer_linger_ms,
        }
        timeout = self.effective_session_timeout
        if timeout is not None:
            conf["broker_session_timeout"] = timeout
            conf["broker_heartbeat_interval"] = max(0.5, timeout / 6)
        creds = self.faust_credentials()
        if creds is not None:
            conf["broker_credentials"] = creds
        return conf

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection settings for kafka-python clients (CLI producer, tail, topic init)."""
        conf: dict[str, Any] = {"bootstrap_servers": self.bootstrap_list,
                                "security_protocol": self.security_protocol}
        if self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            conf.update(sasl_mechanism=self.sasl_mechanism,
                        sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self.sasl_password)
        if self.security_protocol in ("SSL", "SASL_SSL"):
            conf.update(ssl_cafile=self.ssl_cafile, ssl_certfile=self.ssl_certfile,
                        ssl_keyfile=self.ssl_keyfile)
        return conf

    def describe(self) -> dict[str, Any]:
        """Settings as a dict with secrets masked (safe to log)."""
        d = dataclasses.asdict(self)
        for secret in ("sasl_password", "model_key"):
            if d.get(secret):
                d[secret] = "***"
        return d
