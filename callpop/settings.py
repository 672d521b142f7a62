"""One typed settings object, read from a TOML file with ``CALLPOP_`` overrides.

Environment variables override file keys: ``CALLPOP_SIP__MODE=trunk``,
``CALLPOP_DATABASE__URL=postgresql+psycopg://…``. Built once in ``main()`` and
passed down; nothing reads settings at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class _Section(BaseModel):
    # A misspelt key is an error that names it, not a silently ignored line.
    model_config = ConfigDict(extra="forbid")


class SipSettings(_Section):
    mode: Literal["register", "trunk"] = "register"
    bind_host: str = "0.0.0.0"
    bind_port: int = 5062
    # Address put in Via/Contact; empty = bind_host, or the address used to reach the PBX.
    public_host: str = ""
    registrar_host: str = ""
    registrar_port: int = 5060
    domain: str = ""  # SIP domain of the AOR; empty = registrar_host
    user: str = "callpop"
    auth_user: str = ""  # digest username when it differs from user
    password: str = ""
    expires: int = 300
    # Hosts (IP addresses) whose INVITEs are accepted. In register mode the
    # registrar host is always allowed; in trunk mode only these are.
    allowed_hosts: list[str] = Field(default_factory=list)
    ring_timeout: float = 60.0
    # Calls ringing at once; an INVITE beyond this gets 486 Busy Here (docs/security.md).
    max_ringing: int = Field(default=200, ge=1, le=100_000)
    # Extensions whose calls are watched (RFC 4235 dialog events, register mode), besides
    # every active staff member's extension from the database (at most 500 in all).
    # Each 1-32 of 0-9 A-Z a-z * # + . _ - (the user part of sip:<extension>@<domain>).
    watch_extensions: list[Annotated[str, Field(pattern=r"^[0-9A-Za-z*#+._-]{1,32}$")]] = Field(
        default_factory=list, max_length=500
    )
    # Lifetime asked for each dialog-event subscription, in seconds (refreshed before it ends).
    subscription_expires: int = Field(default=600, ge=60, le=86_400)
    # Seconds between re-reads of the staff list while running: staff added, moved or
    # deactivated (``callpop user ...``) are watched or unwatched without a restart.
    staff_refresh_seconds: float = Field(default=60.0, ge=1.0, le=86_400.0)
    # Extensions watched at once at most (configured + staff); beyond it, logged and counted.
    max_watched: int = Field(default=500, ge=1, le=500)


class RewriteRule(_Section):
    pattern: str  # Python regular expression, matched against the whole raw number
    replace: str  # replacement, with \\1 group references


class NumberingSettings(_Section):
    region: str = "JP"
    rewrite: list[RewriteRule] = Field(default_factory=list)
    # Numbers of at most this many digits are office extensions (internal callers).
    extension_max_digits: int = 4
    # The office's own numbers and their names ("03-3555-0100" = "代表"): the dialled line.
    lines: dict[str, str] = Field(default_factory=dict)


class DatabaseSettings(_Section):
    url: str = "sqlite:///callpop.db"
    lookup_timeout_ms: int = 300
    # Call-log writes waiting in memory for the database, at most; more go to the journal.
    call_log_queue: int = Field(default=1000, ge=1)
    # The call-log journal file; empty = beside the SQLite file, or ./callpop.calllog-journal.jsonl.
    call_log_journal: str = ""


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    session_secret: str = ""  # unused since sessions live in the database; old configs load
    session_max_age: int = 12 * 3600
    cookie_secure: bool = False
    # Extra origins allowed to open /ws besides the page's own host.
    allowed_origins: list[str] = Field(default_factory=list)
    # Reverse proxies (IP addresses or networks) whose X-Forwarded-For/-Proto is believed;
    # empty: none, the peer address is the client (docs/security.md).
    trusted_proxies: list[str] = Field(default_factory=list)
    # A connection must deliver a whole request within this many seconds of opening (or
    # of starting its next one), else it is closed (callpop/http_server.py).
    request_timeout: float = Field(default=10.0, gt=0)
    # A kept-alive connection idle this many seconds after a response is closed.
    keep_alive_timeout: int = Field(default=5, ge=1)
    # Open connections (HTTP and WebSocket) at most; 0 = computed below the open-file limit.
    max_connections: int = Field(default=0, ge=0)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "text": one readable line per event; "json": one JSON object per line.
    format: Literal["text", "json"] = "text"


class UiSettings(_Section):
    language: Literal["ja", "en"] = "ja"
    company_name: str = ""


class RoutedLine(_Section):
    # The office line whose calls are routed (a number, read like [numbering.lines]).
    line: str
    # Where its calls go when they do not go straight to the 担当者: an extension ("600",
    # sent as sip:600@<sip.domain or the registrar>) or a whole sip: URI.
    ring_group: str


class RoutingSettings(_Section):
    # Known-customer routing (docs/telephony.md): lines whose calls the PBX offers to
    # callpop first; callpop answers 302 to the 担当者's idle extension or the ring group.
    lines: list[RoutedLine] = Field(default_factory=list, max_length=100)
    # Seconds the SIP side waits for the decision before it redirects to the ring group.
    decision_deadline: float = Field(default=0.5, gt=0, le=5.0)


class BackupSettings(_Section):
    # Directory of the daily backups; empty = no daily backup (``callpop backup`` still works).
    dir: str = ""
    # Wall-clock time (Asia/Tokyo) of the daily backup, "HH:MM".
    daily_at: str = Field(default="03:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    # Daily backups kept; older ones in ``dir`` are removed after each new one.
    keep: int = Field(default=7, ge=1, le=1000)


class FollowupSettings(_Section):
    # A customer is dormant (休眠) after this many days without a transaction, a note or a
    # call; ``dormant_days`` sets it per rank (the customer's rank as written, e.g. "A").
    dormant_days_default: int = Field(default=90, ge=1, le=3650)
    dormant_days: dict[str, Annotated[int, Field(ge=1, le=3650)]] = Field(default_factory=dict)
    # The pop asks after a transaction (「その後いかがですか」) for this many days after its date.
    transaction_follow_up_days: int = Field(default=180, ge=0, le=3650)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLPOP_", env_nested_delimiter="__", extra="forbid"
    )

    sip: SipSettings = Field(default_factory=SipSettings)
    numbering: NumberingSettings = Field(default_factory=NumberingSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    followups: FollowupSettings = Field(default_factory=FollowupSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and key."""


def load_settings(path: Path | None = None, **overrides: object) -> Settings:
    """Read ``path`` (TOML) with environment overrides; raise ConfigError naming the key."""
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: config file not found")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        loaded = _FileSettings(**overrides) if path else Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        where = str(path) if path else "environment"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc
    except Exception as exc:  # tomllib.TOMLDecodeError and friends
        raise ConfigError(f"{path}: {exc}") from exc
    return Settings.model_validate(loaded.model_dump())
