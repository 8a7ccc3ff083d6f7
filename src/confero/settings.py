"""The one settings model: defaults here; the TOML file, CONFERO_* variables and flags derive from it.

Precedence: defaults < config file < environment < command-line flags. Unknown keys in the file
are refused, so a typo is an error rather than a silently ignored setting.

Server settings use snake_case keys. Per-application settings keep Ant Media's camelCase names
(`[apps.WebRTCAppEE] publishTokenControlEnabled = true`), since that is what its users know.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CONFERO_"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""


def _opt(help: str, flag: str | None = None, **kw: Any) -> Any:
    return field(metadata={"help": help, "flag": flag}, **kw)


@dataclass
class AppSettings:
    """Per-application settings (Ant Media's names in the file and over REST)."""

    dataChannelEnabled: bool = True
    #: Largest data-channel message relayed, in bytes (Confero's own setting).
    dataChannelMessageLimit: int = 65536
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

    def update(self, values: Mapping[str, Any], where: str = "settings") -> None:
        """Apply a partial update (REST POST); unknown keys and bad values are refused whole."""
        known = {f.name: f for f in fields(self)}
        staged = {}
        for key, value in values.items():
            if key not in known:
                raise SettingsError(f"{where}: unknown setting {key!r}")
            staged[key] = _coerce(f"{where}.{key}", known[key].type, value)
        candidate = dataclasses.replace(self, **staged)
        candidate.validate(where)
        for key, value in staged.items():
            setattr(self, key, value)

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

    def allowed_networks_text(self) -> list[str]:
        return [c.strip() for c in self.remoteAllowedCIDR.split(",") if c.strip()]

    @classmethod
    def from_mapping(cls, name: str, values: Mapping[str, Any]) -> AppSettings:
        known = {f.name: f for f in fields(cls)}
        out = cls()
        for key, value in values.items():
            if key not in known:
                raise SettingsError(f"[apps.{name}]: unknown setting {key!r}")
            setattr(out, key, _coerce(f"apps.{name}.{key}", known[key].type, value))
        out.validate(f"apps.{name}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Settings:
    """Everything `confero serve` can be told."""

    host: str = _opt("address the HTTP/WebSocket server listens on", default="0.0.0.0")
    port: int = _opt("HTTP/WebSocket port", default=5080)
    data_dir: str = _opt("folder of the embedded store", default="./confero-data")
    ice_addresses: list[str] = _opt(
        "local address to gather ICE candidates on (repeatable; default: every non-loopback interface)",
        flag="--ice-address",
        default_factory=list,
    )
    udp_port_range: str = _opt("UDP ports for media, as LOW-HIGH (default: any)", default="")
    announced_address: str = _opt("public address put in candidates instead of the local one (1:1 NAT)", default="")
    log_level: str = _opt("DEBUG, INFO, WARNING or ERROR", default="INFO")
    applications: list[str] = _opt(
        "application names (repeatable)", flag="--application", default_factory=lambda: ["WebRTCAppEE", "LiveApp"]
    )
    codecs: list[str] = _opt(
        "codecs accepted from publishers, in order of preference (repeatable)",
        flag="--codec",
        default_factory=lambda: ["VP8", "H264", "opus"],
    )
    max_bitrate: int = _opt("bitrate (bit/s) publishers are told they may send (REMB)", default=2_500_000)
    publish_timeout: float = _opt("seconds a publish or play may take to connect", default=20.0)
    compiled_fanout: bool = _opt(
        "forward with the compiled fan-out when it is built (false: the pure-Python engine)", default=True
    )
    apps: dict[str, AppSettings] = field(default_factory=dict, metadata={"help": "", "flag": None, "file_only": True})

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

    def validate(self) -> None:
        self.port_range()
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port: {self.port} is not a port")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"log_level: {self.log_level!r} is not a level")
        for codec in self.codecs:
            if codec.lower() not in ("vp8", "h264", "opus"):
                raise SettingsError(f"codecs: {codec!r} is not one of VP8, H264, opus")
        for name in self.apps:
            if name not in self.applications:
                self.applications.append(name)
        for name in self.applications:
            if not name or not all(c.isalnum() or c in "_-." for c in name):
                raise SettingsError(f"applications: {name!r} is not a valid application name")

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
            if _is_list(f.type):
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
        known = {f.name: f for f in self.server_fields()}
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
            setattr(self, key, _coerce(key, known[key].type, value))

    def apply_env(self, env: Mapping[str, str]) -> None:
        for f in self.server_fields():
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                value: Any = [p.strip() for p in raw.split(",") if p.strip()] if _is_list(f.type) else raw
                setattr(self, f.name, _coerce(ENV_PREFIX + f.name.upper(), f.type, value))

    def apply_args(self, args: argparse.Namespace) -> None:
        for f in self.server_fields():
            value = getattr(args, f.name, None)
            if value is not None:
                setattr(self, f.name, _coerce("--" + f.name.replace("_", "-"), f.type, value))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _is_list(type_: Any) -> bool:
    return str(type_).startswith("list")


def _coerce(name: str, type_: Any, value: Any) -> Any:
    kind = str(type_)
    try:
        if kind.startswith("list"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return list(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise TypeError
        if kind == "int":
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: {value!r} is not a valid {kind}") from None
    return value
