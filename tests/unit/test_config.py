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
        ("[tls]\ncert_file = 'a.pem'\n", "tls.cert_file must be set together with tls.key_file"),
        ("[log]\nformat = 'xml'\n", "log.format must be json or text"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path, environ={})


def test_bad_environment_value_names_the_source() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^environment variable HLC_ORACLE_WINDOW_SIZE_MS: window.size_ms must be int, "
        r"got 'soon'$",
    ):
        load(environ={"HLC_ORACLE_WINDOW_SIZE_MS": "soon"})


def test_unknown_environment_variables_are_rejected_like_unknown_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={"HLC_ORACLE_CLOCK_NODEID": "7"})
    assert str(caught.value) == (
        "environment variable HLC_ORACLE_CLOCK_NODEID: unknown setting; known: "
        "HLC_ORACLE_CLOCK_MAX_OFFSET_US, HLC_ORACLE_CLOCK_NODE_ID"
    )
    with pytest.raises(
        ConfigError,
        match=r"HLC_ORACLE_NODE_ID: unknown setting; known: "
        r"HLC_ORACLE_CONFIG, HLC_ORACLE_CLOCK_\*, ",
    ):
        load(environ={"HLC_ORACLE_NODE_ID": "7"})
    # The config file's variable is the one HLC_ORACLE_* name that is not a setting; other
    # prefixes are not ours.
    assert load(environ={"HLC_ORACLE_CONFIG": "", "HLC_ORACLEX": "1", "hlc_oracle_x": "1"})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("file", "config file {path}: clock.node_id must be in 0..65535, got 70000"),
        (
            "environment",
            "environment variable HLC_ORACLE_CLOCK_NODE_ID: clock.node_id must be in 0..65535, "
            "got 70000",
        ),
        ("command line", "command line: clock.node_id must be in 0..65535, got 70000"),
    ],
)
def test_range_errors_have_one_format_naming_source_key_value_and_range(
    tmp_path: Path, source: str, message: str
) -> None:
    path = tmp_path / "oracle.toml"
    path.write_text("[clock]\nnode_id = 70000\n" if source == "file" else "")
    environ = {"HLC_ORACLE_CLOCK_NODE_ID": "70000"} if source == "environment" else {}
    overrides = {"clock": {"node_id": "70000"}} if source == "command line" else None
    with pytest.raises(ConfigError) as caught:
        load(path, environ, overrides)
    assert str(caught.value) == message.format(path=path)


def test_section_validators_are_attributed_too(tmp_path: Path) -> None:
    path = tmp_path / "oracle.toml"
    path.write_text("[commit]\nmax_queue = 0\n[ntp]\ntimeout_s = 99\n")
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(caught.value) == f"config file {path}: ntp.timeout_s must be in 0.001..60, got 99.0"
    with pytest.raises(ConfigError) as caught:
        load(environ={"HLC_ORACLE_COMMIT_MAX_QUEUE": "0"})
    assert str(caught.value) == (
        "environment variable HLC_ORACLE_COMMIT_MAX_QUEUE: commit.max_queue must be at least 1, "
        "got 0"
    )


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"config file /nonexistent/oracle.toml: cannot read it"):
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


def test_cluster_defaults_are_standalone() -> None:
    cluster = load(environ={}).cluster
    assert (cluster.etcd_endpoints, cluster.name, cluster.lease_ttl_s, cluster.advertise) == (
        (),
        "hlc-oracle",
        3,
        None,
    )
    assert not cluster.clustered
    assert load(environ={}).advertise_address == "127.0.0.1:50051"


def test_cluster_from_file_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "oracle.toml"
    path.write_text(
        "[cluster]\n"
        'etcd_endpoints = ["10.0.0.1:2379", "10.0.0.2:2379", "[fd00::3]:2379"]\n'
        'name = "east"\nlease_ttl_s = 1\n'
    )
    from_file = load(path, environ={})
    assert from_file.cluster.etcd_endpoints == ("10.0.0.1:2379", "10.0.0.2:2379", "[fd00::3]:2379")
    assert (from_file.cluster.name, from_file.cluster.lease_ttl_s) == ("east", 1)
    assert from_file.cluster.clustered

    environ = {
        "HLC_ORACLE_CLUSTER_ETCD_ENDPOINTS": "etcd-0:2379, etcd-1:2379",
        "HLC_ORACLE_CLUSTER_ADVERTISE": "oracle-0.oracle:50051",
    }
    from_environment = load(path, environ)
    assert from_environment.cluster.etcd_endpoints == ("etcd-0:2379", "etcd-1:2379")
    assert from_environment.advertise_address == "oracle-0.oracle:50051"

    # What `--etcd-endpoints`, `--cluster-name` and `--set cluster.lease_ttl_s=5` hand to load().
    flags = {"cluster": {"etcd_endpoints": "127.0.0.1:2379", "name": "west", "lease_ttl_s": "5"}}
    from_flags = load(path, environ, flags)
    assert from_flags.cluster.etcd_endpoints == ("127.0.0.1:2379",)
    assert (from_flags.cluster.name, from_flags.cluster.lease_ttl_s) == ("west", 5)


def test_cluster_flags_reach_the_configuration() -> None:
    from hlc_oracle.cli import build_parser
    from hlc_oracle.cli.serve import _overrides

    args = build_parser().parse_args(
        [
            "serve",
            "--etcd-endpoints", "127.0.0.1:2379,127.0.0.1:2381",
            "--cluster-name", "blue",
            "--advertise", "10.1.2.3:50051",
            "--set", "cluster.lease_ttl_s=2",
        ]
    )  # fmt: skip
    cluster = load(environ={}, overrides=_overrides(args)).cluster
    assert cluster.etcd_endpoints == ("127.0.0.1:2379", "127.0.0.1:2381")
    assert (cluster.name, cluster.advertise, cluster.lease_ttl_s) == ("blue", "10.1.2.3:50051", 2)


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        (
            {"etcd_endpoints": "127.0.0.1:2379,ftp://127.0.0.1:2380"},
            "cluster.etcd_endpoints must be host:port, http://host:port or https://host:port "
            "with a port in 1..65535, got 'ftp://127.0.0.1:2380'",
        ),
        ({"etcd_endpoints": "etcd-0"}, "cluster.etcd_endpoints must be host:port.*got 'etcd-0'"),
        ({"etcd_endpoints": "etcd:99999"}, "got 'etcd:99999'"),
        ({"etcd_endpoints": "etcd:0"}, "got 'etcd:0'"),
        ({"etcd_endpoints": ":2379"}, "got ':2379'"),
        ({"etcd_endpoints": "::1:2379"}, "got '::1:2379'"),
        ({"etcd_endpoints": "a:1,a:1"}, "must list each endpoint once, got 'a:1' twice"),
        (
            {"etcd_endpoints": "http://a:1,https://b:1"},
            "cluster.etcd_endpoints must use one scheme .*got http:// and https://",
        ),
        (
            {"etcd_endpoints": "a:1", "etcd_cert": "c.pem"},
            "cluster.etcd_cert must be set together with cluster.etcd_key, got 'c.pem'",
        ),
        (
            {"etcd_endpoints": "a:1", "etcd_key": "k.pem"},
            "cluster.etcd_key must be set together with cluster.etcd_cert, got 'k.pem'",
        ),
        (
            {"etcd_endpoints": "http://a:1", "etcd_ca": "ca.pem"},
            r"cluster.etcd_ca \(TLS\) cannot go with http:// endpoints",
        ),
        (
            {"etcd_endpoints": "a:1", "etcd_user": "oracle"},
            "cluster.etcd_user needs cluster.etcd_password_file .*got user 'oracle'",
        ),
        (
            {"etcd_endpoints": "a:1", "etcd_password_file": "pw"},
            "cluster.etcd_password_file needs cluster.etcd_user, got 'pw'",
        ),
        ({"lease_ttl_s": "0"}, "cluster.lease_ttl_s must be in 1..3600, got 0"),
        ({"lease_ttl_s": "-3"}, "cluster.lease_ttl_s must be in 1..3600, got -3"),
        ({"lease_ttl_s": "1.5"}, "cluster.lease_ttl_s must be int, got '1.5'"),
        ({"name": "a/b"}, "cluster.name must be non-empty, without '/'.*got 'a/b'"),
        ({"name": ""}, "cluster.name must be non-empty.*got ''"),
        ({"advertise": "oracle-0"}, "cluster.advertise must be host:port.*got 'oracle-0'"),
        (
            {"decision_retention_s": "30"},
            "cluster.decision_retention_s must be in 60..604800, got 30",
        ),
    ],
)
def test_bad_cluster_settings_name_the_value(cluster: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load(environ={}, overrides={"cluster": cluster})
    assert str(raised.value).startswith("command line: cluster.")


def test_etcd_tls_and_auth_settings_from_flags_and_the_environment() -> None:
    from hlc_oracle.cli import build_parser
    from hlc_oracle.cli.serve import _overrides

    args = build_parser().parse_args(
        [
            "serve",
            "--etcd-endpoints", "https://etcd-0:2379,etcd-1:2379",
            "--etcd-cert", "/certs/oracle.pem",
            "--etcd-key", "/certs/oracle-key.pem",
        ]
    )  # fmt: skip
    environ = {
        "HLC_ORACLE_CLUSTER_ETCD_CA": "/certs/ca.pem",
        "HLC_ORACLE_CLUSTER_ETCD_USER": "oracle",
        "HLC_ORACLE_CLUSTER_ETCD_PASSWORD_FILE": "/secrets/etcd-password",
    }
    cluster = load(environ=environ, overrides=_overrides(args)).cluster
    assert (cluster.etcd_ca, cluster.etcd_cert, cluster.etcd_key) == (
        Path("/certs/ca.pem"),
        Path("/certs/oracle.pem"),
        Path("/certs/oracle-key.pem"),
    )
    assert (cluster.etcd_user, cluster.etcd_password_file) == (
        "oracle",
        Path("/secrets/etcd-password"),
    )
    assert cluster.etcd_tls
    plaintext = load(environ={}, overrides={"cluster": {"etcd_endpoints": "http://a:1,b:2"}})
    assert not plaintext.cluster.etcd_tls
    # A CA alone turns TLS on for host:port endpoints, as etcdctl's --cacert does.
    with_ca = load(environ={}, overrides={"cluster": {"etcd_endpoints": "a:1", "etcd_ca": "c"}})
    assert with_ca.cluster.etcd_tls


def test_bad_endpoint_in_the_file_names_the_value(tmp_path: Path) -> None:
    path = tmp_path / "oracle.toml"
    path.write_text("[cluster]\netcd_endpoints = [2379]\n")
    with pytest.raises(ConfigError, match=r"cluster\.etcd_endpoints must be host:port.*got 2379"):
        load(path, environ={})


def test_a_clustered_wildcard_listener_needs_an_advertised_address() -> None:
    overrides = {
        "server": {"listen": "0.0.0.0:50051"},
        "cluster": {"etcd_endpoints": "127.0.0.1:2379"},
    }
    with pytest.raises(ConfigError, match=r"cluster\.advertise must be set \(host:port\) when"):
        load(environ={}, overrides=overrides)
    overrides["cluster"]["advertise"] = "oracle-0.oracle:50051"
    assert load(environ={}, overrides=overrides).advertise_address == "oracle-0.oracle:50051"
    # Standalone, a wildcard listener is fine: nobody is redirected.
    assert load(environ={}, overrides={"server": {"listen": "0.0.0.0:50051"}})


def test_the_default_message_limit_admits_the_largest_transaction() -> None:
    from hlc_oracle.proto import largest_transaction_message_bytes
    from hlc_oracle.scheduler import CommitOptions

    commit = CommitOptions()
    largest = largest_transaction_message_bytes(
        commit.max_read_keys, commit.max_write_keys, commit.max_key_bytes
    )
    assert largest <= OracleConfig().limits.max_message_bytes < largest + 2**20
