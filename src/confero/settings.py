"""The one settings model: defaults here; the TOML file, CONFERO_* variables and flags derive from it.

Precedence: defaults < config file < environment < command-line flags. Unknown keys in the file
are refused, so a typo is an error rather than a silently ignored setting.

Server settings use snake_case keys. Per-application settings keep Ant Media's camelCase names
(`[apps.WebRTCAppEE] publishTokenControlEnabled = true`), since that is what its users know.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

logger = logging.getLogger(__name__)

ENV_PREFIX = "CONFERO_"

#: The codecs a publisher may be allowed to send, by the name settings use (any case).
CODEC_MIMES = {"vp8": "video/VP8", "h264": "video/H264", "opus": "audio/opus"}

#: The bodies a webhook POST may have (Ant Media's `webhookContentType`).
WEBHOOK_CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""


def _about(help_text: str, flag: str | None = None) -> dict[str, str | None]:
    """A server field's metadata: its help text, and its flag when not --FIELD-NAME."""
    return {"help": help_text, "flag": flag}


@dataclass
class AppSettings:
    """Per-application settings (Ant Media's names in the file and over REST)."""

    dataChannelEnabled: bool = True
    #: Largest data-channel message relayed, in bytes (Confero's own setting).
    dataChannelMessageLimit: int = 65536
    #: Video m-lines (slots) of a room play; -1: one per member (Ant Media's default).
    maxVideoTrackCount: int = -1
    stunServerURI: str = ""
    turnServerUsername: str = ""
    turnServerCredential: str = ""
    acceptOnlyStreamsInDataStore: bool = False
    acceptOnlyRoomsInDataStore: bool = False
    publishTokenControlEnabled: bool = False
    playTokenControlEnabled: bool = False
    publishJwtControlEnabled: bool = False
    playJwtControlEnabled: bool = False
    jwtStreamSecretKey: str = ""
    ipFilterEnabled: bool = True
    remoteAllowedCIDR: str = "127.0.0.1,::1"
    jwtControlEnabled: bool = False
    jwtSecretKey: str = ""
    #: Webhooks: where every application event is POSTed (a stream's own listenerHookURL wins).
    listenerHookURL: str = ""
    #: Retries after a failed webhook POST (not 200, or no answer), Ant Media's default 0.
    webhookRetryCount: int = 0
    #: Milliseconds before the first retry; each further retry waits twice as long (capped).
    webhookRetryDelay: int = 1000
    #: "application/json" (default) or "application/x-www-form-urlencoded".
    webhookContentType: str = "application/json"
    #: Confero's own: HMAC-SHA256 key; when set, each POST has `X-Confero-Signature: sha256=<hex>`.
    listenerHookSecret: str = ""
    #: A directory whose files are served at /{App}/ in place of Confero's own pages, with every
    #: path that names no file answered by its index.html (a single-page app such as Circle, which
    #: routes /{App}/{roomName}); "" serves Confero's pages (Confero's own setting).
    webRoot: str = ""

    def __post_init__(self) -> None:
        #: Settings Confero does not use, kept as given over REST (Ant Media's other AppSettings
        #: keys: a client posts the whole object it read). Returned by `to_dict`, never in effect.
        self.unused: dict[str, Any] = {}

    def update(self, values: Mapping[str, Any], where: str = "settings") -> None:
        """Apply a partial update (REST POST). A bad value of a known key refuses the update
        whole; a key Confero does not use is kept as given (logged once per key), not in effect."""
        staged = {}
        unused = {}
        for key, value in values.items():
            if key in _APP_TYPES:
                staged[key] = _coerce(f"{where}.{key}", _APP_TYPES[key], value)
                if key == "webRoot" and staged[key] != self.webRoot:
                    # Which directory the web may read is the operator's choice, not a REST client's.
                    raise SettingsError(f"{where}.webRoot: set in the config file only")
            elif not key or not key[0].isalpha() or not all(c.isalnum() or c in "_-." for c in key):
                raise SettingsError(f"{where}: {key!r} is not a setting name")
            else:
                unused[key] = value
        candidate = dataclasses.replace(self, **staged)
        candidate.validate(where)
        for key, value in staged.items():
            setattr(self, key, value)
        for key in sorted(unused.keys() - self.unused.keys()):
            logger.warning("%s: setting %r is kept but not in effect (Confero does not use it)", where, key)
        self.unused.update(unused)

    def validate(self, where: str = "apps") -> None:
        import ipaddress

        for cidr in self.allowed_networks_text():
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SettingsError(f"{where}.remoteAllowedCIDR: {cidr!r} is not an address or CIDR") from None
        for key in ("jwtStreamSecretKey", "jwtSecretKey"):
            secret = getattr(self, key)
            if secret and len(secret) < 32:
                raise SettingsError(f"{where}.{key}: a secret must have at least 32 characters")
        if (self.publishJwtControlEnabled or self.playJwtControlEnabled) and not self.jwtStreamSecretKey:
            raise SettingsError(f"{where}: JWT stream control needs jwtStreamSecretKey")
        if self.jwtControlEnabled and not self.jwtSecretKey:
            raise SettingsError(f"{where}: jwtControlEnabled needs jwtSecretKey")
        if self.webhookContentType not in WEBHOOK_CONTENT_TYPES:
            raise SettingsError(f"{where}.webhookContentType: one of {', '.join(WEBHOOK_CONTENT_TYPES)}")
        if self.webhookRetryCount < 0 or self.webhookRetryDelay < 0:
            raise SettingsError(f"{where}: webhookRetryCount and webhookRetryDelay cannot be negative")
        if self.listenerHookURL and not self.listenerHookURL.startswith(("http://", "https://")):
            raise SettingsError(f"{where}.listenerHookURL: an http:// or https:// URL")
        if self.webRoot and not Path(self.webRoot).is_dir():
            raise SettingsError(f"{where}.webRoot: {self.webRoot!r} is not a directory")

    def allowed_networks_text(self) -> list[str]:
        return [c.strip() for c in self.remoteAllowedCIDR.split(",") if c.strip()]

    @classmethod
    def from_mapping(cls, name: str, values: Mapping[str, Any]) -> AppSettings:
        staged = {}
        for key, value in values.items():
            if key not in _APP_TYPES:
                raise SettingsError(f"[apps.{name}]: unknown setting {key!r}")
            staged[key] = _coerce(f"apps.{name}.{key}", _APP_TYPES[key], value)
        out = cls(**staged)
        out.validate(f"apps.{name}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.unused, **dataclasses.asdict(self)}


@dataclass
class Settings:
    """Everything `confero serve` can be told."""

    host: str = field(default="0.0.0.0", metadata=_about("address the HTTP/WebSocket server listens on"))
    port: int = field(default=5080, metadata=_about("HTTP/WebSocket port"))
    data_dir: str = field(default="./confero-data", metadata=_about("folder of the embedded store"))
    ice_addresses: list[str] = field(
        default_factory=list,
        metadata=_about(
            "local address to gather ICE candidates on (repeatable; default: every non-loopback interface)",
            flag="--ice-address",
        ),
    )
    udp_port_range: str = field(default="", metadata=_about("UDP ports for media, as LOW-HIGH (default: any)"))
    announced_address: str = field(
        default="", metadata=_about("public address put in candidates instead of the local one (1:1 NAT)")
    )
    log_level: str = field(default="INFO", metadata=_about("DEBUG, INFO, WARNING or ERROR"))
    applications: list[str] = field(
        default_factory=lambda: ["WebRTCAppEE", "LiveApp"],
        metadata=_about("application names (repeatable)", flag="--application"),
    )
    codecs: list[str] = field(
        default_factory=lambda: ["VP8", "H264", "opus"],
        metadata=_about("codecs accepted from publishers, in order of preference (repeatable)", flag="--codec"),
    )
    max_bitrate: int = field(
        default=2_500_000, metadata=_about("bitrate (bit/s) publishers are told they may send (REMB)")
    )
    publish_timeout: float = field(default=20.0, metadata=_about("seconds a publish or play may take to connect"))
    media_timeout: float = field(
        default=5.0,
        metadata=_about("seconds without RTP/RTCP from a connected publisher or player before it is closed (0: never)"),
    )
    ws_heartbeat: float = field(
        default=5.0,
        metadata=_about(
            "seconds without a message from a WebSocket client before it is pinged; no answer within"
            " half of that closes the socket and ends its sessions (0: never)"
        ),
    )
    drain_timeout: float = field(
        default=30.0,
        metadata=_about(
            "seconds SIGTERM lets running publishes, plays, rooms and calls go on (no new ones are"
            " taken) before the server closes them and stops (0: close at once)"
        ),
    )
    ice_consent_interval: float = field(
        default=1.0, metadata=_about("seconds between ICE consent checks of a server peer (RFC 7675; aioice: 5)")
    )
    ice_consent_failures: int = field(
        default=4, metadata=_about("a server peer is closed when no consent check was answered for this many intervals")
    )
    compiled_fanout: bool = field(
        default=True,
        metadata=_about("forward with the compiled fan-out when it is built (false: the pure-Python engine)"),
    )
    tls_cert: str = field(
        default="", metadata=_about("PEM certificate (or chain, leaf first) for https/wss; reloaded on SIGHUP")
    )
    tls_key: str = field(default="", metadata=_about("PEM private key of tls_cert"))
    tls_port: int = field(default=5443, metadata=_about("HTTPS/WSS port, served when tls_cert is set"))
    tls_redirect: bool = field(
        default=False,
        metadata=_about("redirect pages asked over plain HTTP to the HTTPS port (REST and WebSocket stay)"),
    )
    trusted_proxies: list[str] = field(
        default_factory=list,
        metadata=_about(
            "address or CIDR of a reverse proxy whose X-Forwarded-For/-Proto is believed (repeatable)",
            flag="--trusted-proxy",
        ),
    )
    turn_urls: list[str] = field(
        default_factory=list,
        metadata=_about(
            "TURN server URL given to clients, e.g. turn:HOST:3478?transport=udp, turns:HOST:5349 (repeatable)",
            flag="--turn-url",
        ),
    )
    turn_secret: str = field(
        default="", metadata=_about("coturn's static-auth-secret: clients get time-limited credentials from it")
    )
    turn_ttl: int = field(default=86400, metadata=_about("seconds a TURN credential handed out stays valid"))
    server_ice_servers: list[str] = field(
        default_factory=list,
        metadata=_about(
            "STUN/TURN URL the server's own peers use (repeatable; one turn: or turns: URL, credentials from turn_secret)",
            flag="--server-ice-server",
        ),
    )
    apps: dict[str, AppSettings] = field(default_factory=dict, metadata={"help": "", "flag": None, "file_only": True})

    def _check_server_turn_urls(self) -> None:
        """The TURN URLs the server's own peers (aiortc/aioice) can use; aiortc would skip the
        others without a word: one TURN server, over UDP or TCP, or TLS over TCP (no DTLS)."""
        turn = [u for u in self.server_ice_servers if u.startswith("turn")]
        for url in turn:
            query = dict(p.partition("=")[::2] for p in url.partition("?")[2].split("&") if p)
            transport = query.get("transport", "tcp" if url.startswith("turns:") else "udp")
            if url.startswith("turns:") and transport != "tcp":
                raise SettingsError(
                    f"server_ice_servers: {url!r}: the server's peers speak turns: over TCP only "
                    "(TLS, e.g. turns:HOST:5349?transport=tcp), not DTLS"
                )
            if transport not in ("udp", "tcp"):
                raise SettingsError(f"server_ice_servers: {url!r}: transport is udp or tcp")
        if len(turn) > 1:
            raise SettingsError(
                f"server_ice_servers: the server's peers use one TURN URL (aiortc's limit), got {len(turn)}: {turn}"
            )

    # -- derived -------------------------------------------------------------------------

    def port_range(self) -> tuple[int, int] | None:
        if not self.udp_port_range:
            return None
        try:
            low_s, high_s = self.udp_port_range.split("-", 1)
            low, high = int(low_s), int(high_s)
        except ValueError:
            raise SettingsError(f"udp_port_range: expected LOW-HIGH, got {self.udp_port_range!r}") from None
        if not 1 <= low <= high <= 65535:
            raise SettingsError(f"udp_port_range: {self.udp_port_range!r} is not a port range")
        return low, high

    def app(self, name: str) -> AppSettings:
        if name not in self.apps:
            self.apps[name] = AppSettings()
        return self.apps[name]

    def codec_mimes(self) -> tuple[str, ...]:
        """The MIME types of `codecs`, in the same order; an unknown name is a SettingsError."""
        out = []
        for name in self.codecs:
            mime = CODEC_MIMES.get(name.lower())
            if mime is None:
                raise SettingsError(f"codecs: {name!r} is not one of VP8, H264, opus")
            out.append(mime)
        return tuple(out)

    def validate(self) -> None:
        """Raise SettingsError for the first unusable setting; changes nothing."""
        self.port_range()
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port: {self.port} is not a port")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"log_level: {self.log_level!r} is not a level")
        self.codec_mimes()
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("tls_cert and tls_key: set both, or neither")
        for key in ("tls_cert", "tls_key"):
            if getattr(self, key) and not Path(getattr(self, key)).is_file():
                raise SettingsError(f"{key}: {getattr(self, key)!r} is not a file")
        if not 0 <= self.tls_port <= 65535:
            raise SettingsError(f"tls_port: {self.tls_port} is not a port")
        if self.tls_cert and self.port and self.tls_port == self.port:
            raise SettingsError(f"tls_port: {self.tls_port} is also the plain port")
        if self.media_timeout < 0:
            raise SettingsError(f"media_timeout: {self.media_timeout} is negative")
        if self.ws_heartbeat < 0:
            raise SettingsError(f"ws_heartbeat: {self.ws_heartbeat} is negative")
        if self.drain_timeout < 0:
            raise SettingsError(f"drain_timeout: {self.drain_timeout} is negative")
        if self.ice_consent_interval <= 0:
            raise SettingsError(f"ice_consent_interval: {self.ice_consent_interval} is not a positive number")
        if self.ice_consent_failures < 1:
            raise SettingsError(f"ice_consent_failures: {self.ice_consent_failures} is less than 1")
        if self.tls_redirect and not self.tls_cert:
            raise SettingsError("tls_redirect: needs tls_cert and tls_key")
        self.trusted_networks()
        for key in ("turn_urls", "server_ice_servers"):
            for url in getattr(self, key):
                if not url.startswith(("turn:", "turns:", "stun:", "stuns:")):
                    raise SettingsError(f"{key}: {url!r} is not a turn:, turns: or stun: URL")
        if self.turn_urls and not self.turn_secret:
            raise SettingsError("turn_urls: needs turn_secret (coturn's static-auth-secret)")
        if any(u.startswith("turn") for u in self.server_ice_servers) and not self.turn_secret:
            raise SettingsError("server_ice_servers: a TURN URL needs turn_secret")
        self._check_server_turn_urls()
        if self.turn_ttl <= 0:
            raise SettingsError(f"turn_ttl: {self.turn_ttl} is not a positive number of seconds")
        for name in [*self.applications, *self.apps]:
            if not name or not all(c.isalnum() or c in "_-." for c in name):
                raise SettingsError(f"applications: {name!r} is not a valid application name")

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """`trusted_proxies` as networks; a bad entry is a SettingsError."""
        out = []
        for text in self.trusted_proxies:
            try:
                out.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise SettingsError(f"trusted_proxies: {text!r} is not an address or CIDR") from None
        return out

    def application_names(self) -> list[str]:
        """`applications` followed by every [apps.NAME] table's name it does not list yet."""
        return [*self.applications, *(name for name in self.apps if name not in self.applications)]

    @classmethod
    def sample_toml(cls) -> str:
        """The commented sample config file (confero.sample.toml; a test keeps it in sync)."""
        lines = [
            "# Confero settings: every key with its default.",
            "# Precedence: defaults < this file < CONFERO_* environment variables < command-line flags.",
            "",
        ]
        defaults = cls()
        for f in cls.server_fields():
            lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(getattr(defaults, f.name))}")
            lines.append("")
        lines.append("# Per-application settings, with Ant Media's names:")
        lines.append("[apps.WebRTCAppEE]")
        for key, value in AppSettings().to_dict().items():
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    # -- sources -------------------------------------------------------------------------

    @classmethod
    def load(cls, argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Defaults < file (--config or CONFERO_CONFIG) < environment < flags."""
        env = os.environ if env is None else env
        parser = cls.argument_parser()
        args = parser.parse_args(argv or [])
        settings = cls()
        config = args.config or env.get(ENV_PREFIX + "CONFIG")
        if config:
            settings.apply_file(Path(config))
        settings.apply_env(env)
        settings.apply_args(args)
        # An application named only by its [apps.NAME] table is served too, whichever source
        # set `applications`.
        settings.applications = settings.application_names()
        settings.validate()
        return settings

    @classmethod
    def server_fields(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in fields(cls) if not f.metadata.get("file_only")]

    @classmethod
    def argument_parser(cls, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
        parser = parser or argparse.ArgumentParser(prog="confero serve")
        parser.add_argument("--config", help="TOML settings file (env CONFERO_CONFIG)")
        for f in cls.server_fields():
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            env_name = ENV_PREFIX + f.name.upper()
            help_text = f"{f.metadata['help']} (env {env_name})"
            if _is_list(_SERVER_TYPES[f.name]):
                parser.add_argument(flag, dest=f.name, action="append", help=help_text)
            else:
                parser.add_argument(flag, dest=f.name, help=help_text)
        return parser

    def apply_file(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
        known = {f.name: _SERVER_TYPES[f.name] for f in self.server_fields()}
        for key, value in data.items():
            if key == "apps":
                if not isinstance(value, dict):
                    raise SettingsError("apps: expected tables [apps.NAME]")
                for name, values in value.items():
                    if not isinstance(values, dict):
                        raise SettingsError(f"apps.{name}: expected a table")
                    self.apps[name] = AppSettings.from_mapping(name, values)
                continue
            if key not in known:
                raise SettingsError(f"config file {path}: unknown setting {key!r}")
            setattr(self, key, _coerce(key, known[key], value))

    def apply_env(self, env: Mapping[str, str]) -> None:
        for f in self.server_fields():
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                type_ = _SERVER_TYPES[f.name]
                value: object = [p.strip() for p in raw.split(",") if p.strip()] if _is_list(type_) else raw
                setattr(self, f.name, _coerce(ENV_PREFIX + f.name.upper(), type_, value))

    def apply_args(self, args: argparse.Namespace) -> None:
        for f in self.server_fields():
            value = getattr(args, f.name, None)
            if value is not None:
                setattr(self, f.name, _coerce("--" + f.name.replace("_", "-"), _SERVER_TYPES[f.name], value))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _field_types(cls: type[Any]) -> Mapping[str, object]:
    """A dataclass's field types, resolved (the module's annotations are strings)."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _is_list(type_: object) -> bool:
    return get_origin(type_) is list


def _type_name(type_: object) -> str:
    if get_origin(type_) is list:
        return "list[" + ", ".join(_type_name(a) for a in get_args(type_)) + "]"
    return getattr(type_, "__name__", str(type_))


def _coerce(name: str, type_: object, value: object) -> Any:
    """`value` as `type_` (str, int, float, bool or list[str]), or a SettingsError naming `name`."""
    try:
        if _is_list(type_):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return list(value)
        if type_ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise TypeError
        if type_ is int or type_ is float:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise TypeError
            return int(value) if type_ is int else float(value)
        if type_ is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: {value!r} is not a valid {_type_name(type_)}") from None
    raise TypeError(f"{name}: settings cannot hold a {_type_name(type_)}")


_APP_TYPES = _field_types(AppSettings)
_SERVER_TYPES = _field_types(Settings)
