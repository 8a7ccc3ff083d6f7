"""Settings: one model, three sources (TOML file, CONFERO_* environment, flags) over defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from confero.settings import ENV_PREFIX, AppSettings, Settings, SettingsError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "confero.toml"
    path.write_text(text)
    return path


def load(*argv: str, env: dict[str, str] | None = None) -> Settings:
    return Settings.load(list(argv), env=env or {})


# -- defaults -------------------------------------------------------------------------------


def test_defaults() -> None:
    s = load()
    assert s.host == "0.0.0.0"
    assert s.port == 5080
    assert s.data_dir == "./confero-data"
    assert s.ice_addresses == []
    assert s.udp_port_range == ""
    assert s.port_range() is None
    assert s.announced_address == ""
    assert s.log_level == "INFO"
    assert s.applications == ["WebRTCAppEE", "LiveApp"]
    assert s.codecs == ["VP8", "H264", "opus"]
    assert s.max_bitrate == 2_500_000
    assert s.publish_timeout == 20.0
    assert s.apps == {}
    # An application without a table gets Ant Media's defaults.
    assert s.app("WebRTCAppEE") == AppSettings()
    assert s.app("WebRTCAppEE").dataChannelEnabled is True
    assert s.app("WebRTCAppEE").acceptOnlyStreamsInDataStore is False


def test_default_lists_are_not_shared() -> None:
    a, b = Settings(), Settings()
    a.applications.append("Extra")
    a.ice_addresses.append("127.0.0.1")
    assert b.applications == ["WebRTCAppEE", "LiveApp"]
    assert b.ice_addresses == []


# -- file -----------------------------------------------------------------------------------


def test_file_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
host = "127.0.0.1"
port = 6080
data_dir = "/var/lib/confero"
ice_addresses = ["127.0.0.1", "::1"]
udp_port_range = "40000-40100"
announced_address = "203.0.113.7"
log_level = "DEBUG"
applications = ["LiveApp"]
codecs = ["H264", "opus"]
max_bitrate = 1000000
publish_timeout = 5.5
""",
    )
    s = load("--config", str(path))
    assert s.host == "127.0.0.1"
    assert s.port == 6080
    assert s.data_dir == "/var/lib/confero"
    assert s.ice_addresses == ["127.0.0.1", "::1"]
    assert s.port_range() == (40000, 40100)
    assert s.announced_address == "203.0.113.7"
    assert s.log_level == "DEBUG"
    assert s.applications == ["LiveApp"]
    assert s.codecs == ["H264", "opus"]
    assert s.max_bitrate == 1_000_000
    assert s.publish_timeout == 5.5


def test_file_from_env_confero_config(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 7000\n")
    assert load(env={"CONFERO_CONFIG": str(path)}).port == 7000


def test_file_single_string_for_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, 'ice_addresses = "10.0.0.1"\n')
    assert load("--config", str(path)).ice_addresses == ["10.0.0.1"]


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 6080\nprot = 7\n")
    with pytest.raises(SettingsError, match="prot"):
        load("--config", str(path))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load("--config", str(tmp_path / "nope.toml"))


def test_malformed_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "port = = 1\n")
    with pytest.raises(SettingsError, match=r"confero\.toml"):
        load("--config", str(path))


@pytest.mark.parametrize(
    "text, name",
    [
        ('port = "many"\n', "port"),
        ("port = true\n", "port"),
        ("host = [1, 2]\n", "host"),
        ("ice_addresses = [1, 2]\n", "ice_addresses"),
        ('publish_timeout = "soon"\n', "publish_timeout"),
    ],
)
def test_wrong_types_in_file_are_refused(tmp_path: Path, text: str, name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load("--config", str(write(tmp_path, text)))


# -- [apps.X] -------------------------------------------------------------------------------


def test_app_tables_use_ams_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[apps.WebRTCAppEE]
dataChannelEnabled = false
acceptOnlyStreamsInDataStore = true
stunServerURI = "stun:127.0.0.1:3478"
turnServerUsername = "user"
turnServerCredential = "secret"
""",
    )
    s = load("--config", str(path))
    app = s.app("WebRTCAppEE")
    assert app.dataChannelEnabled is False
    assert app.acceptOnlyStreamsInDataStore is True
    assert app.stunServerURI == "stun:127.0.0.1:3478"
    assert app.turnServerUsername == "user"
    assert app.turnServerCredential == "secret"
    assert app.to_dict()["dataChannelEnabled"] is False
    # Other applications keep the defaults.
    assert s.app("LiveApp") == AppSettings()
    assert s.applications == ["WebRTCAppEE", "LiveApp"]


def test_unknown_app_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[apps.WebRTCAppEE]\ndataChanelEnabled = false\n")
    with pytest.raises(SettingsError, match="dataChanelEnabled") as info:
        load("--config", str(path))
    assert "WebRTCAppEE" in str(info.value)


def test_app_named_only_in_a_table_is_added(tmp_path: Path) -> None:
    path = write(tmp_path, "[apps.MyApp]\ndataChannelEnabled = false\n")
    s = load("--config", str(path))
    assert s.applications == ["WebRTCAppEE", "LiveApp", "MyApp"]
    assert s.app("MyApp").dataChannelEnabled is False


def test_app_table_with_invalid_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[apps."bad/name"]\ndataChannelEnabled = false\n')
    with pytest.raises(SettingsError, match="bad/name"):
        load("--config", str(path))


def test_apps_must_be_tables(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="apps"):
        load("--config", str(write(tmp_path, "apps = 3\n")))
    with pytest.raises(SettingsError, match=r"apps\.X"):
        load("--config", str(write(tmp_path, "[apps]\nX = 3\n")))


@pytest.mark.parametrize("value", ['"maybe"', "1", '"2"'])
def test_bad_bool_in_app_table_is_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[apps.WebRTCAppEE]\ndataChannelEnabled = {value}\n")
    with pytest.raises(SettingsError, match="dataChannelEnabled"):
        load("--config", str(path))


@pytest.mark.parametrize("value, expected", [('"yes"', True), ('"off"', False), ("true", True), ('"FALSE"', False)])
def test_bool_spellings_in_app_table(tmp_path: Path, value: str, expected: bool) -> None:
    path = write(tmp_path, f"[apps.WebRTCAppEE]\ndataChannelEnabled = {value}\n")
    assert load("--config", str(path)).app("WebRTCAppEE").dataChannelEnabled is expected


def test_app_settings_from_mapping_directly() -> None:
    app = AppSettings.from_mapping("LiveApp", {"acceptOnlyStreamsInDataStore": "true"})
    assert app.acceptOnlyStreamsInDataStore is True
    with pytest.raises(SettingsError, match="maybe"):
        AppSettings.from_mapping("LiveApp", {"dataChannelEnabled": "maybe"})


# -- environment ----------------------------------------------------------------------------


def test_env_vars() -> None:
    s = load(
        env={
            "CONFERO_HOST": "127.0.0.1",
            "CONFERO_PORT": "6001",
            "CONFERO_DATA_DIR": "/tmp/d",
            "CONFERO_ICE_ADDRESSES": "127.0.0.1,::1",
            "CONFERO_UDP_PORT_RANGE": "40000-40100",
            "CONFERO_ANNOUNCED_ADDRESS": "198.51.100.1",
            "CONFERO_LOG_LEVEL": "warning",
            "CONFERO_APPLICATIONS": "LiveApp, Other ,",
            "CONFERO_CODECS": "VP8",
            "CONFERO_MAX_BITRATE": "300000",
            "CONFERO_PUBLISH_TIMEOUT": "2.5",
            "UNRELATED": "x",
        }
    )
    assert s.host == "127.0.0.1"
    assert s.port == 6001
    assert s.data_dir == "/tmp/d"
    assert s.ice_addresses == ["127.0.0.1", "::1"]
    assert s.port_range() == (40000, 40100)
    assert s.announced_address == "198.51.100.1"
    assert s.log_level == "warning"
    assert s.applications == ["LiveApp", "Other"]
    assert s.codecs == ["VP8"]
    assert s.max_bitrate == 300_000
    assert s.publish_timeout == 2.5


def test_env_bad_int_is_refused_with_the_variable_name() -> None:
    with pytest.raises(SettingsError, match="CONFERO_PORT"):
        load(env={"CONFERO_PORT": "eighty"})


# -- flags ----------------------------------------------------------------------------------


def test_flags() -> None:
    s = load(
        "--host",
        "127.0.0.1",
        "--port",
        "6002",
        "--data-dir",
        "/tmp/flags",
        "--ice-address",
        "127.0.0.1",
        "--ice-address",
        "::1",
        "--udp-port-range",
        "40000-40100",
        "--announced-address",
        "192.0.2.1",
        "--log-level",
        "ERROR",
        "--application",
        "Only",
        "--codec",
        "opus",
        "--max-bitrate",
        "64000",
        "--publish-timeout",
        "3",
    )
    assert s.host == "127.0.0.1"
    assert s.port == 6002
    assert s.data_dir == "/tmp/flags"
    assert s.ice_addresses == ["127.0.0.1", "::1"]
    assert s.udp_port_range == "40000-40100"
    assert s.port_range() == (40000, 40100)
    assert s.announced_address == "192.0.2.1"
    assert s.log_level == "ERROR"
    assert s.applications == ["Only"]
    assert s.codecs == ["opus"]
    assert s.max_bitrate == 64000
    assert s.publish_timeout == 3.0


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load("--prot", "1")
    assert info.value.code == 2
    assert "--prot" in capsys.readouterr().err


# -- precedence -----------------------------------------------------------------------------


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
port = 6100
host = "127.0.0.2"
data_dir = "/from/file"
ice_addresses = ["10.0.0.1"]
log_level = "DEBUG"
""",
    )
    env = {"CONFERO_PORT": "6200", "CONFERO_HOST": "127.0.0.3", "CONFERO_ICE_ADDRESSES": "10.0.0.2,10.0.0.3"}
    s = load("--config", str(path), "--port", "6300", env=env)
    assert s.port == 6300  # flag beats env and file
    assert s.host == "127.0.0.3"  # env beats file
    assert s.ice_addresses == ["10.0.0.2", "10.0.0.3"]  # env replaces the file's list
    assert s.data_dir == "/from/file"  # file beats default
    assert s.log_level == "DEBUG"
    assert s.announced_address == ""  # default

    s = load("--config", str(path), "--ice-address", "10.0.0.9", env=env)
    assert s.ice_addresses == ["10.0.0.9"]  # flags replace, they do not append to env


def test_config_flag_beats_config_env(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text("port = 1111\n")
    b = tmp_path / "b.toml"
    b.write_text("port = 2222\n")
    assert load("--config", str(b), env={"CONFERO_CONFIG": str(a)}).port == 2222


# -- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["x-y", "70000-80000", "100-50", "0-10", "5", "nonsense", "1-2-3"])
def test_bad_port_range_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="udp_port_range"):
        load("--udp-port-range", value)
    with pytest.raises(SettingsError, match="udp_port_range"):
        load(env={"CONFERO_UDP_PORT_RANGE": value})


def test_good_port_ranges() -> None:
    assert load("--udp-port-range", "1-65535").port_range() == (1, 65535)
    assert load("--udp-port-range", "40000-40000").port_range() == (40000, 40000)


@pytest.mark.parametrize("value", ["LOUD", "verbose", ""])
def test_bad_log_level_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="log_level"):
        load("--log-level", value)


@pytest.mark.parametrize("value", ["-1", "65536", "http"])
def test_bad_port_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="port"):
        load("--port", value)


def test_bad_application_name_is_refused() -> None:
    with pytest.raises(SettingsError, match="applications"):
        load("--application", "a/b")


def test_bad_codec_is_refused() -> None:
    with pytest.raises(SettingsError, match="codecs"):
        load("--codec", "theora")


def test_bad_float_is_refused() -> None:
    with pytest.raises(SettingsError, match="publish-timeout"):
        load("--publish-timeout", "soon")


# -- the single model is the source of all three --------------------------------------------


SAMPLES: dict[str, tuple[str, Any]] = {
    "int": ("4321", 4321),
    "float": ("1.25", 1.25),
    "str": ("sample", "sample"),
    "list[str]": ("one", ["one"]),
    "bool": ("false", False),  # for a bool that defaults to true; see `_sample`
}


def _sample(f: Any, kind: str) -> tuple[str, Any]:
    """A value that differs from the field's default, so that setting it shows it took."""
    if kind == "bool" and getattr(Settings(), f.name) is False:
        return "true", True
    return SAMPLES[kind]


def _flag_of(f: Any) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def test_every_field_has_a_flag_and_an_env_var(tmp_path: Path) -> None:
    fields = Settings.server_fields()
    assert {f.name for f in fields} >= {
        "host",
        "port",
        "data_dir",
        "ice_addresses",
        "udp_port_range",
        "announced_address",
        "log_level",
    }
    assert "apps" not in {f.name for f in fields}  # file only
    parser = Settings.argument_parser()
    options = {opt: action for action in parser._actions for opt in action.option_strings}
    for f in fields:
        kind = str(f.type)
        assert kind in SAMPLES, f"no sample value for {f.name}: {kind}"
        raw, expected = _sample(f, kind)
        flag = _flag_of(f)
        env_name = ENV_PREFIX + f.name.upper()

        # The flag exists, documents its env var, and sets the field.
        assert flag in options, f"{f.name} has no flag {flag}"
        assert f.metadata.get("help"), f"{f.name} has no help"
        assert env_name in (options[flag].help or ""), f"{flag} help does not name {env_name}"
        from_flag = Settings()
        from_flag.apply_args(parser.parse_args([flag, raw]))
        assert getattr(from_flag, f.name) == expected, f.name

        # The env var sets the field.
        from_env = Settings()
        from_env.apply_env({env_name: raw})
        assert getattr(from_env, f.name) == expected, env_name

        # The file key sets the field.
        from_file = Settings()
        value = f'"{raw}"' if kind in ("str", "list[str]") else raw
        from_file.apply_file(write(tmp_path, f"{f.name} = {value}\n"))
        assert getattr(from_file, f.name) == expected, f"file key {f.name}"
        assert getattr(Settings(), f.name) != expected, f"sample for {f.name} equals its default"


def test_list_fields_are_repeatable_flags() -> None:
    parser = Settings.argument_parser()
    for f in Settings.server_fields():
        if str(f.type).startswith("list"):
            flag = _flag_of(f)
            args = parser.parse_args([flag, "a", flag, "b"])
            s = Settings()
            s.apply_args(args)
            assert getattr(s, f.name) == ["a", "b"], f.name
            s = Settings()
            s.apply_env({ENV_PREFIX + f.name.upper(): "a,b"})
            assert getattr(s, f.name) == ["a", "b"], f.name


# -- validation changes nothing; names normalised when loading ------------------------------


def test_validate_does_not_change_the_settings() -> None:
    s = Settings(applications=["LiveApp"], apps={"MyApp": AppSettings(dataChannelEnabled=False)})
    s.validate()
    assert s.applications == ["LiveApp"]
    assert list(s.apps) == ["MyApp"]


def test_validate_refuses_an_app_table_with_a_bad_name() -> None:
    with pytest.raises(SettingsError, match="bad/name"):
        Settings(apps={"bad/name": AppSettings()}).validate()


def test_app_table_is_added_to_applications_from_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "[apps.MyApp]\ndataChannelEnabled = false\n")
    s = load("--config", str(path), "--application", "Only")
    assert s.applications == ["Only", "MyApp"]
    s = load("--config", str(path), env={"CONFERO_APPLICATIONS": "MyApp,Other"})
    assert s.applications == ["MyApp", "Other"]


# -- codecs ---------------------------------------------------------------------------------


def test_codec_mimes_in_order_any_case() -> None:
    assert Settings().codec_mimes() == ("video/VP8", "video/H264", "audio/opus")
    assert Settings(codecs=["OPUS", "h264", "vp8"]).codec_mimes() == ("audio/opus", "video/H264", "video/VP8")
    assert Settings(codecs=[]).codec_mimes() == ()


def test_unknown_codec_is_a_settings_error() -> None:
    s = Settings(codecs=["VP8", "theora"])
    with pytest.raises(SettingsError, match="codecs: 'theora' is not one of VP8, H264, opus"):
        s.codec_mimes()
    with pytest.raises(SettingsError, match="theora"):
        s.validate()


def test_drain_timeout_from_file_env_and_flag(tmp_path: Path) -> None:
    assert Settings().drain_timeout == 30.0
    path = write(tmp_path, "drain_timeout = 7\n")
    assert load("--config", str(path)).drain_timeout == 7.0
    assert Settings.load([], env={"CONFERO_DRAIN_TIMEOUT": "2.5"}).drain_timeout == 2.5
    assert load("--drain-timeout", "0").drain_timeout == 0.0
    with pytest.raises(SettingsError, match="drain_timeout"):
        load("--drain-timeout", "-1")
