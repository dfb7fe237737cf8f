"""Configuration: one YAML file, ``${ENV}`` for secrets, validated at start.

Every problem is reported with the key that holds it and what to do about it. Secrets
(typed `SecretStr`) must come from the environment; a literal secret in the file is an
error, so a config file can be committed and shared.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from bridge import keys
from bridge.errors import ConfigError
from bridge.translation import TranslationSettings
from bridge.translation import problems as translation_problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedisSettings(_Section):
    url: str | None = None  # empty (and no sentinels): run an embedded redis-server in data_dir
    # Sentinel instead of url: the sentinels (host:port) and the master name they monitor
    sentinels: list[str] = []
    service: str | None = None
    password: SecretStr | None = None  # the primary's (and replicas') password, with sentinels
    sentinel_password: SecretStr | None = None  # the sentinels' own password (requirepass), if any
    username: str | None = None  # the primary's ACL user, with sentinels ("default" when unset)
    sentinel_username: str | None = None  # the sentinels' own ACL user, if any
    tls: bool = False  # TLS to the primary the sentinels name (with redis.url: rediss://)
    sentinel_tls: bool = False  # TLS to the sentinels themselves
    # with TLS: the CA that signed the servers' certificates (default: the system's), and the
    # bridge's own certificate and key where the servers ask for one (tls-auth-clients)
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # publish and commit succeed only once this many replicas have the write (Redis WAIT)
    wait_replicas: int = Field(0, ge=0)
    wait_timeout_ms: int = Field(1000, ge=1)
    # how long an adapter waits for Redis to store a message before it tells the platform
    # "retry later" (the API answers 503): a frozen or unreachable Redis is not waited out
    publish_timeout_s: float = Field(5.0, gt=0)
    data_dir: Path = Path("./bridge-data")
    server_binary: str | None = None  # redis-server to embed; found on PATH when unset
    max_memory_mb: int = Field(1024, ge=0)  # the embedded redis-server's maxmemory (noeviction); 0: no limit


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None  # how the outside reaches us; http://host:port when unset
    # slow clients and floods (bridge/httplimits.py); the peer is the TCP peer, a proxy if there is one
    header_timeout_s: float = Field(10.0, gt=0)  # a request's headers, from connect or its first byte
    body_timeout_s: float = Field(30.0, gt=0)  # a request's body, plus 1 s per body_min_rate_bytes_s
    body_min_rate_bytes_s: int = Field(1024, ge=0)  # 0: the whole body within body_timeout_s
    keepalive_timeout_s: float = Field(75.0, gt=0)  # an idle connection between requests
    max_connections: int = Field(4096, ge=1)
    max_connections_per_ip: int = Field(64, ge=0)  # 0: no cap per address (e.g. behind a proxy)


class EngineSettings(_Section):
    partitions: int = Field(8, ge=1, le=1024)
    batch_size: int = Field(200, ge=1, le=10_000)  # entries per stream per read
    block_ms: int = Field(500, ge=1)
    lease_ttl_s: float = Field(10.0, gt=0)
    claim_min_idle_s: float = Field(15.0, ge=0)
    max_deliveries: int = Field(5, ge=1)  # reads of an entry that crashed its workers before it is dead-lettered
    step_retry_window_s: float = Field(30.0, ge=0)  # a failing step is retried with backoff this long
    conversation_cache: int = Field(50_000, ge=0)
    reopen_within_h: float = Field(72.0, ge=0)  # a message after resolution reopens; later, a new one
    steps: list[str] = ["triage", "routing"]


class StreamSettings(_Section):
    max_len: int = Field(100_000, ge=0)  # acknowledged entries kept per stream, roughly
    trim_interval_s: float = Field(30.0, gt=0)
    dedupe_ttl_s: int = Field(keys.DEDUPE_TTL_S, ge=60)
    dead_letter_max_len: int = Field(100_000, ge=1)


class HistorySettings(_Section):
    """The SQL record (bridge/history): every conversation, message, contact and event."""

    enabled: bool = True  # the engine appends each turn's record to an outbox; the projector writes it to SQL
    # a SQLAlchemy URL: postgresql://user:pass@host/db (asyncpg) or sqlite:///path; empty: an SQLite
    # file history.sqlite3 in redis.data_dir
    url: str | None = None
    keep_in_redis_days: float | None = Field(30.0, ge=0)  # resolved conversations leave Redis after; null: never
    retention_interval_s: float = Field(300.0, gt=0)  # how often the projector looks for them
    batch_size: int = Field(500, ge=1, le=10_000)  # records (turns) per SQL transaction, about
    retry_cap_s: float = Field(30.0, gt=0)  # the longest wait between attempts while the database is down


class QueueSettings(_Section):
    email: str  # the team address tickets go to
    reply_within_h: float = Field(24.0, gt=0)  # the promise made in the acknowledgement
    slack_channel: str | None = None
    topics: list[str] = []  # topic names routed to this queue
    #: give each new unassigned case to the next agent online in the console, in turn
    auto_assign: bool = False


class TriageSettings(_Section):
    default_language: str = "en"
    languages: list[str] = ["en", "zh", "ru", "tl", "ms"]
    urgent_keywords: dict[str, list[str]] = {}

    @field_validator("urgent_keywords")
    @classmethod
    def _no_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for lang, words in value.items():
            if any(not w.strip() for w in words):
                raise ValueError(f"an empty keyword in language {lang!r} would match everything")
        return value


class AgentsSettings(_Section):
    channels: list[str] = []  # agent-side channels that receive escalations and news
    urgent_mention: str = ""  # e.g. "<!here>" or "@oncall"


class LogSettings(_Section):
    level: str = "INFO"
    format: str = Field("json", pattern="^(json|text)$")


class Settings(_Section):
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    engine: EngineSettings = EngineSettings()
    streams: StreamSettings = StreamSettings()
    history: HistorySettings = HistorySettings()
    roles: list[str] = ["ingest", "engine", "dispatch", "web", "projector"]
    queues: dict[str, QueueSettings] = {"default": QueueSettings(email="support@example.com")}
    triage: TriageSettings = TriageSettings()
    replies: dict[str, dict[str, str]] = {}  # template name -> language -> text
    agents: AgentsSettings = AgentsSettings()
    flows: dict[str, Any] = {}  # settings of flow steps beyond the core, by step name
    translation: TranslationSettings = TranslationSettings()  # machine translation for agents; off by default
    channels: dict[str, dict[str, Any]] = {}  # validated by each adapter's config model
    log: LogSettings = LogSettings()
    # relative file paths in flow settings (flows.kb.path) are taken from here: the config
    # file's directory (the working directory with no config file)
    _config_dir: Path = PrivateAttr(default_factory=Path)

    @property
    def config_dir(self) -> Path:
        return self._config_dir

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {"ingest", "engine", "dispatch", "web", "projector"}
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; use ingest, engine, dispatch, web, projector")
        return value

    @field_validator("queues")
    @classmethod
    def _default_queue(cls, value: dict[str, QueueSettings]) -> dict[str, QueueSettings]:
        if "default" not in value:
            raise ValueError("a queue named 'default' is required (routine cases no rule matches go there)")
        return value

    @property
    def history_url(self) -> str:
        """The history database's SQLAlchemy async URL (history.url, or the SQLite file)."""
        url = self.history.url
        if not url:
            return f"sqlite+aiosqlite:///{(self.redis.data_dir / 'history.sqlite3').resolve()}"
        scheme, sep, rest = url.partition("://")
        scheme = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
                  "sqlite": "sqlite+aiosqlite"}.get(scheme, scheme)
        return f"{scheme}{sep}{rest}"

    @property
    def public_url(self) -> str:
        if self.http.public_url:
            return self.http.public_url.rstrip("/")
        host = "localhost" if self.http.host in ("0.0.0.0", "127.0.0.1", "::") else self.http.host
        return f"http://{host}:{self.http.port}"


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, problems: list[str], from_env: set[str], unset: set[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}``; record the paths whose value came from the
    environment (``from_env``) and those whose variable is unset (``unset``)."""
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), problems, from_env, unset)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", problems, from_env, unset) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None or value == "":
            if default is not None:
                return default
            missing.append(name)
            return ""
        return value

    defaults: list[str] = []

    def substitute_tracked(match: re.Match[str]) -> str:
        value = substitute(match)
        if match.group(2) and value == match.group(2):
            defaults.append(value)  # a default written in the file is literal text
        return value

    result = _ENV.sub(substitute_tracked, node)
    if not _ENV.sub("", node) and not defaults:
        from_env.add(path)  # nothing but references, every one set in the environment
    for name in missing:
        problems.append(f"{path}: environment variable {name} is not set (export {name}=...)")
    if missing:
        unset.add(path)
        return None
    return None if result == "" else result


def sentinel_address(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[::1]:26379`` for IPv6) as a pair; None when it is not one."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _redis_problems(redis: RedisSettings) -> list[str]:
    """The redis section's keys that only make sense together."""
    problems = []
    scheme = redis.url.partition("://")[0].lower() if redis.url else ""
    if scheme.endswith("+cluster") or scheme == "cluster":
        if scheme not in ("redis+cluster", "rediss+cluster"):
            problems.append(f"redis.url: {scheme}:// is not a Redis Cluster URL; use redis+cluster://host:6379 "
                            "(any node of the cluster; rediss+cluster:// for TLS)")
    elif redis.url and scheme not in ("redis", "rediss", "unix"):
        problems.append(f"redis.url: {scheme + '://' if '://' in redis.url else repr(redis.url)} is not a Redis URL; "
                        "use redis://host:6379/0, rediss:// (TLS), unix:///path/to/redis.sock or "
                        "redis+cluster://host:6379 (a Redis Cluster: any node)")
    if redis.sentinels and redis.url:
        problems.append("redis.sentinels: set either redis.url (one Redis) or redis.sentinels with redis.service "
                        "(Sentinel), not both")
    for i, entry in enumerate(redis.sentinels):
        if sentinel_address(entry) is None:
            problems.append(f"redis.sentinels[{i}]: {entry!r} is not host:port (e.g. 10.0.0.5:26379)")
    if redis.sentinels and not redis.service:
        problems.append("redis.service: required with redis.sentinels: the master name the sentinels monitor "
                        "(the name in 'sentinel monitor <name> <host> <port> <quorum>')")
    if redis.service and not redis.sentinels:
        problems.append("redis.service: only used with redis.sentinels (list them as host:port)")
    for key in ("password", "sentinel_password"):
        if getattr(redis, key) is not None and not redis.sentinels:
            problems.append(f"redis.{key}: only used with redis.sentinels; with redis.url, put the password in "
                            "the URL: redis://:${REDIS_PASSWORD}@host:6379")
    for key in ("username", "sentinel_username"):
        if getattr(redis, key) is not None and not redis.sentinels:
            problems.append(f"redis.{key}: only used with redis.sentinels; with redis.url, put the user in "
                            "the URL: redis://user:${REDIS_PASSWORD}@host:6379")
    for key in ("tls", "sentinel_tls"):
        if getattr(redis, key) and not redis.sentinels:
            problems.append(f"redis.{key}: only used with redis.sentinels; with redis.url, use rediss://")
    tls = redis.tls or redis.sentinel_tls or scheme.startswith("rediss")
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(redis, key)
        if path is None:
            continue
        if not tls:
            problems.append(f"redis.{key}: only used with TLS (redis.tls or redis.sentinel_tls with sentinels, "
                            "or a rediss:// redis.url)")
        elif not path.is_file():
            problems.append(f"redis.{key}: {path}: no such file")
    if (redis.tls_cert_file is None) != (redis.tls_key_file is None):
        problems.append("redis.tls_cert_file: the certificate and its key (redis.tls_key_file) go together")
    if redis.wait_replicas:
        if not redis.url and not redis.sentinels:
            problems.append("redis.wait_replicas: the embedded Redis has no replicas; set redis.url or "
                            "redis.sentinels, or leave wait_replicas at 0")
        if redis.publish_timeout_s * 1000 <= redis.wait_timeout_ms:
            problems.append(f"redis.publish_timeout_s: {redis.publish_timeout_s} s leaves no time for "
                            f"redis.wait_timeout_ms ({redis.wait_timeout_ms} ms); make it longer")
    return problems


def format_validation(error: ValidationError, prefix: str = "", unset: set[str] | None = None) -> list[str]:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        key = f"{prefix}.{key}" if prefix and key else (prefix or key)
        if unset and key in unset:
            continue  # already reported as an unset environment variable
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config.example.yaml and docs/)"
        elif item["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{key}: {msg}")
    return lines


def _literal_secrets(model: BaseModel, path: str, from_env: set[str]) -> list[str]:
    """Secret fields whose value was written in the file instead of ``${ENV}``."""
    problems = []
    for name, value in model:
        key = f"{path}.{name}" if path else name
        if isinstance(value, SecretStr) and key not in from_env:
            hint = key.upper().replace(".", "_")
            problems.append(
                f"{key}: secrets must come from the environment, not the file; write ${{{hint}}} and export {hint}"
            )
        elif isinstance(value, BaseModel):
            problems.extend(_literal_secrets(value, key, from_env))
    return problems


_SENSITIVE_HEADER = re.compile(r"authorization|cookie|token|key|secret|auth|password|session", re.IGNORECASE)
_SCHEME_WORD = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_-]{0,19} )?$")
_MARK = "\x00"


def _literal_credentials(raw: dict[str, Any]) -> list[str]:
    """Credentials written in the file outside `SecretStr` fields: the password of
    ``redis.url``, and the value of a sensitive header under ``flows`` (``headers:``)."""
    problems = []
    for section, example, variable in (("redis", "redis://:${REDIS_PASSWORD}@host:6379", "REDIS_PASSWORD"),
                                       ("history", "postgresql://bridge:${DB_PASSWORD}@host/bridge",
                                        "DB_PASSWORD")):
        settings = raw.get(section)
        url = settings.get("url") if isinstance(settings, dict) else None
        if isinstance(url, str):
            try:
                password = urllib.parse.urlsplit(_ENV.sub(_MARK, url)).password
            except ValueError:
                password = None
            if password and password.replace(_MARK, ""):
                problems.append(f"{section}.url: the password is written in the file; write "
                                f"{example} and export {variable}")

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            here = f"{path}.{key}"
            if key == "headers" and isinstance(value, dict):
                for name, header in value.items():
                    if not isinstance(header, str) or not _SENSITIVE_HEADER.search(str(name)):
                        continue
                    literal = _ENV.sub("", header)
                    if header == literal or not _SCHEME_WORD.match(literal) or _has_default(header):
                        problems.append(f"{here}.{name}: a credential written in the file; write it as "
                                        f"\"Bearer ${{TOKEN}}\" (or just \"${{TOKEN}}\") and export TOKEN")
            else:
                walk(value, here)

    walk(raw.get("flows"), "flows")
    return problems


def _has_default(text: str) -> bool:
    return any(m.group(2) for m in _ENV.finditer(text))


def secrets_in(settings: Settings) -> list[str]:
    """Values to mask in logs beyond the channels' `SecretStr` fields: the Redis password
    and sensitive header values of flow settings."""
    found = [p for p in [_url_password(settings.redis.url)] if p]
    found += [s.get_secret_value() for s in (settings.redis.password, settings.redis.sentinel_password) if s]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "headers" and isinstance(value, dict):
                    found.extend(str(v).split(" ")[-1] for k, v in value.items()
                                 if isinstance(v, str) and _SENSITIVE_HEADER.search(str(k)))
                else:
                    walk(value)

    walk(settings.flows)
    if settings.translation.api_key is not None:
        found.append(settings.translation.api_key.get_secret_value())
    return found


def _url_password(url: str | None) -> str | None:
    try:
        password = urllib.parse.urlsplit(url).password if url else None
    except ValueError:
        return None
    return urllib.parse.unquote(password) if password else None


def load_raw(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{file}: no such config file (copy config.example.yaml to start)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: cannot be read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{file}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{file}: the top level must be a mapping of sections (redis:, http:, channels:, ...)"])
    return data


def load(path: str | Path | None) -> tuple[Settings, dict[str, BaseModel]]:
    """Load and validate everything; raise `ConfigError` listing every problem.

    ``path`` None means no config file: the built-in desk (`registry.without_config`).
    Returns the settings and each enabled channel's validated config.
    """
    from bridge import registry  # the composition root knows which channels exist

    problems: list[str] = []
    from_env: set[str] = set()
    unset: set[str] = set()
    raw = load_raw(path) if path is not None else registry.without_config()
    problems.extend(_literal_credentials(raw))
    raw = _interpolate(raw, "", problems, from_env, unset)
    channels_raw = raw.pop("channels", None) or {}
    settings: Settings | None = None
    try:
        settings = Settings.model_validate({**raw, "channels": {}})
    except ValidationError as exc:
        problems.extend(format_validation(exc, unset=unset))
    if not isinstance(channels_raw, dict):
        problems.append("channels: must be a mapping of channel name to its settings")
        channels_raw = {}
    channel_configs: dict[str, BaseModel] = {}
    for name, section in channels_raw.items():
        key = f"channels.{name}"
        if name not in registry.channels():
            problems.append(f"{key}: unknown channel; known channels: {', '.join(sorted(registry.channels()))}")
            continue
        try:
            model = registry.channel_config_model(name)
        except ImportError as exc:
            problems.append(f"{key}: the channel's support is not installed ({exc}); "
                            f"pip install 'support-bridge[{name}]'")
            continue
        try:
            config = model.model_validate(section or {})
        except ValidationError as exc:
            problems.extend(format_validation(exc, key, unset))
            continue
        problems.extend(_literal_secrets(config, key, from_env))
        if getattr(config, "enabled", True):
            channel_configs[name] = config
    if settings is not None:
        problems.extend(_redis_problems(settings.redis))
        problems.extend(_literal_secrets(settings.redis, "redis", from_env))
        settings = settings.model_copy(update={"channels": {k: dict(v or {}) for k, v in channels_raw.items()}})
        for i, name in enumerate(settings.agents.channels):
            if name not in channel_configs:
                problems.append(f"agents.channels[{i}]: channel {name!r} is not configured under channels:")
        for name, queue in settings.queues.items():
            if "@" not in queue.email:
                problems.append(f"queues.{name}.email: {queue.email!r} is not an email address")
        problems.extend(_literal_secrets(settings.translation, "translation", from_env))
        problems.extend(translation_problems(settings.translation))
        for i, step in enumerate(settings.engine.steps):
            if step not in registry.steps():
                known = ", ".join(sorted(registry.steps()))
                problems.append(f"engine.steps[{i}]: unknown step {step!r}; known: {known}")
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    if path is not None:
        settings._config_dir = Path(path).resolve().parent
    return settings, channel_configs
