"""The configuration object: defaults < TOML file < HLC_ORACLE_* environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from hlc_oracle.config import ConfigError, OracleConfig, load


def test_defaults_are_the_embedded_single_node() -> None:
    config = load(environ={})
    assert config == OracleConfig()
    assert config.server.listen == "127.0.0.1:50051"
    assert config.server.data_dir == Path("hlc-oracle-data")
    assert config.metrics.port is None
    assert config.tls.cert_file is None


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "oracle.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:6000"\ndata_dir = "/file"\n'
        "[clock]\nnode_id = 1\nmax_offset_us = 1000\n"
        "[limits]\nmax_count = 10\n"
    )
    environ = {
        "HLC_ORACLE_SERVER_DATA_DIR": "/env",
        "HLC_ORACLE_CLOCK_NODE_ID": "2",
        "HLC_ORACLE_LIMITS_MAX_COUNT": "20",
        "UNRELATED": "x",
    }
    config = load(path, environ, {"clock": {"node_id": "3"}})
    assert config.server.listen == "127.0.0.1:6000"  # file
    assert config.clock.max_offset_us == 1000  # file
    assert config.server.data_dir == Path("/env")  # environment over file
    assert config.limits.max_count == 20  # environment over file
    assert config.clock.node_id == 3  # flag over environment


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[window]\nsize_ms = 9000\n")
    assert load(environ={"HLC_ORACLE_CONFIG": str(path)}).window.size_ms == 9000


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[server]\nlistne = 'x'\n", "unknown setting server.listne"),
        ("[clock]\nnode_id = 'seven'\n", "clock.node_id must be int, got 'seven'"),
        ("[clock]\nnode_id = 65536\n", "clock.node_id must be in 0..65535, got 65536"),
        ("[limits]\nmax_count = 0\n", "limits.max_count must be in 1..4194304, got 0"),
        ("[server]\nlisten = 'nowhere'\n", "server.listen must be host:port"),
        ("[tls]\ncert_file = 'a.pem'\n", "tls.cert_file and tls.key_file must be set together"),
        ("[log]\nformat = 'xml'\n", "log.format must be json or text"),
        ("[server\n", "is not valid TOML"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path, environ={})


def test_bad_environment_value_names_the_source() -> None:
    with pytest.raises(ConfigError, match=r"environment: window.size_ms must be int"):
        load(environ={"HLC_ORACLE_WINDOW_SIZE_MS": "soon"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(Path("/nonexistent/oracle.toml"), environ={})


def test_optional_values_and_numbers_from_strings() -> None:
    config = load(
        environ={
            "HLC_ORACLE_METRICS_PORT": "9464",
            "HLC_ORACLE_LIMITS_MAX_CONCURRENT_RPCS": "none",
            "HLC_ORACLE_SERVER_SHUTDOWN_GRACE_S": "2.5",
            "HLC_ORACLE_LIMITS_MAX_COUNT": "100_000",
        }
    )
    assert config.metrics.port == 9464
    assert config.limits.max_concurrent_rpcs is None
    assert config.limits.max_concurrent_streams is None
    assert config.server.shutdown_grace_s == 2.5
    assert config.limits.max_count == 100_000
