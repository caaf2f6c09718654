"""deploy/ is checked by parsing (no container engine or systemd here): the example config loads
through the real loader (its [cluster] examples too), the compose file's three etcd members and
three oracle nodes agree with each other and with the loader, the systemd unit parses, the
Dockerfile has the shape operators rely on (multi-stage, non-root, health-checked)."""

from __future__ import annotations

import asyncio
import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import aetcd
import yaml
from hlc_oracle.config import OracleConfig, load

from tests.etcd_process import EtcdMember

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_example_config_loads_with_the_real_loader() -> None:
    config = load(DEPLOY / "oracle.example.toml", environ={})
    defaults = OracleConfig()
    # The file shows the defaults except where it says otherwise.
    assert config.server.data_dir == Path("/var/lib/hlc-oracle")
    assert config.metrics.port == 9464
    assert config.clock == defaults.clock
    assert config.window == defaults.window
    assert config.limits == defaults.limits
    assert config.tls == defaults.tls
    assert config.log == defaults.log
    assert config.commit == defaults.commit
    assert config.cluster == defaults.cluster  # standalone unless endpoints are given
    assert config.server.listen == defaults.server.listen


def test_example_cluster_block_loads_clustered_once_uncommented(tmp_path: Path) -> None:
    """The [cluster] block's commented examples are valid settings: uncommented, the node is
    clustered and advertises the example address."""
    text = (DEPLOY / "oracle.example.toml").read_text()
    block = text[text.index("[cluster]") :]
    examples = re.findall(r"^# ((?:etcd_endpoints|advertise) = .*)$", block, re.MULTILINE)
    assert len(examples) == 2, examples
    for example in examples:
        key = example.split(" ", 1)[0]
        block = re.sub(rf"^{key} = .*$\n", "", block, flags=re.MULTILINE)
        block = block.replace(f"# {example}", example)
    path = tmp_path / "clustered.toml"
    path.write_text(text[: text.index("[cluster]")] + block)
    cluster = load(path, environ={}).cluster
    assert cluster.clustered and len(cluster.etcd_endpoints) == 3
    assert cluster.advertise is not None


def test_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2
    assert stages[0].endswith("AS build") and stages[1].endswith("AS runtime")
    runtime = instructions[[k for k, _ in instructions].index("FROM", 1) :]
    keywords = [keyword for keyword, _ in runtime]
    assert any(k == "COPY" and "--from=build" in r for k, r in runtime)
    user = [rest for keyword, rest in runtime if keyword == "USER"]
    assert user and not user[-1].startswith(("root", "0"))
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    healthcheck = next(rest for keyword, rest in runtime if keyword == "HEALTHCHECK")
    assert "hlc-oracle" in healthcheck and "status" in healthcheck
    assert next(rest for k, rest in runtime if k == "ENTRYPOINT") == '["hlc-oracle"]'
    # The build stage generates the protobuf modules before building the wheel.
    build = " ".join(rest for keyword, rest in instructions[: len(instructions) - len(runtime)])
    assert build.index("grpc_tools.protoc") < build.index("maturin build")
    # Every COPY source of the build stage exists in the repository.
    root = DEPLOY.parent
    for keyword, rest in instructions:
        if keyword == "COPY" and "--from" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert (root / source).exists(), source


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def url_port(url: str) -> int:
    return int(url.rpartition(":")[2])


def test_compose_runs_three_etcd_members_with_the_operator_settings() -> None:
    services = compose()["services"]
    members = {name: service for name, service in services.items() if name.startswith("etcd")}
    assert set(members) == {"etcd-1", "etcd-2", "etcd-3"}
    initial = dict(
        entry.split("=", 1)
        for entry in members["etcd-1"]["environment"]["ETCD_INITIAL_CLUSTER"].split(",")
    )
    assert set(initial) == set(members)
    volumes = set()
    for name, member in members.items():
        env = member["environment"]
        assert env["ETCD_NAME"] == name
        assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == initial[name] == f"http://{name}:2380"
        assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"http://{name}:2379"
        assert url_port(env["ETCD_LISTEN_CLIENT_URLS"]) == 2379
        # What an operator must set for the oracle: a quota and compaction.
        assert int(env["ETCD_QUOTA_BACKEND_BYTES"]) == 8 * 2**30
        assert env["ETCD_AUTO_COMPACTION_MODE"] == "periodic"
        assert env["ETCD_AUTO_COMPACTION_RETENTION"] == "5m"
        assert member["image"].endswith(":v3.4.23")  # the version the tests run (Debian's)
        assert member["healthcheck"]["test"][:2] == ["CMD", "etcdctl"]
        (volume,) = member["volumes"]
        assert volume.endswith(f":{env['ETCD_DATA_DIR']}")
        volumes.add(volume.split(":")[0])
    assert len(volumes) == 3 and volumes <= set(compose()["volumes"])


def test_compose_runs_three_clustered_oracle_nodes() -> None:
    services = compose()["services"]
    nodes = {name: service for name, service in services.items() if name.startswith("hlc-oracle")}
    assert set(nodes) == {"hlc-oracle-1", "hlc-oracle-2", "hlc-oracle-3"}
    etcd_members = {name for name in services if name.startswith("etcd")}
    # The image's environment (Dockerfile ENV) under the service's.
    image_env = dict(
        assignment.split("=", 1)
        for keyword, rest in dockerfile_instructions()
        if keyword == "ENV"
        for assignment in shlex.split(rest)
    )
    node_ids, advertised, data_volumes = set(), set(), set()
    for node in nodes.values():
        assert node["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert (DEPLOY / node["build"]["dockerfile"].removeprefix("deploy/")).exists()
        assert node["stop_signal"] == "SIGTERM"
        assert set(node["depends_on"]) == etcd_members
        assert all(dep["condition"] == "service_healthy" for dep in node["depends_on"].values())
        # Healthy means "the node is well", leader or follower: gRPC health of "".
        health = node["healthcheck"]["test"]
        assert health[:3] == ["CMD", "python", "-c"] and "service=''" in health[3]
        config_file = None
        for mount in node["volumes"]:
            source, target = mount.split(":")[:2]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
                config_file = DEPLOY / source
            else:
                data_volumes.add(source)
                assert target == "/var/lib/hlc-oracle"
        assert config_file is not None
        config = load(config_file, environ={**image_env, **node["environment"]})
        assert node["command"][-1] == "/etc/hlc-oracle/oracle.toml"
        assert config.cluster.clustered
        assert {e.partition(":")[0] for e in config.cluster.etcd_endpoints} == etcd_members
        assert {url_port(e) for e in config.cluster.etcd_endpoints} == {2379}
        node_ids.add(config.clock.node_id)
        # A node advertises its port published on the host, where the clients are.
        published = {p.rsplit(":", 1)[1]: p.rsplit(":", 1)[0] for p in node["ports"]}
        grpc_port = config.server.listen.rpartition(":")[2]
        assert config.advertise_address == published[grpc_port]
        advertised.add(config.advertise_address)
    assert len(node_ids) == len(advertised) == len(data_volumes) == 3
    assert data_volumes <= set(compose()["volumes"])


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "hlc-oracle.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].startswith("/") and command[1] == "serve"
    assert command[command.index("--config") + 1] == "/etc/hlc-oracle/oracle.toml"
    assert service["KillSignal"] == "SIGTERM"
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "hlc-oracle"
    assert service["RestartPreventExitStatus"] == "2"
    # Ordered after a local etcd member, if any (it must outlive the leader's resignation).
    assert "etcd.service" in unit["Unit"]["After"].split()
    assert "etcd.service" not in unit["Unit"].get("Wants", "").split()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_real_etcd_takes_the_compose_settings(tmp_path: Path) -> None:
    """The operator settings of the compose file, given to Debian's etcd as flags: it starts,
    reports them in its log, and grants the 1 s lease its election timeout allows."""
    env = compose()["services"]["etcd-1"]["environment"]
    names = (
        "QUOTA_BACKEND_BYTES", "AUTO_COMPACTION_MODE", "AUTO_COMPACTION_RETENTION",
        "MAX_REQUEST_BYTES", "HEARTBEAT_INTERVAL", "ELECTION_TIMEOUT",
    )  # fmt: skip
    flags = [f"--{name.lower().replace('_', '-')}={env[f'ETCD_{name}']}" for name in names]

    async def granted_ttl(endpoint: str) -> int:
        host, _, port = endpoint.rpartition(":")
        async with aetcd.Client(host=host, port=int(port), timeout=5) as client:
            lease = await client.lease(1)
            ttl: int = lease.ttl
            return ttl

    # The last of a repeated flag wins: these replace the fixture's fast test timings.
    with EtcdMember(tmp_path / "etcd", extra_args=tuple(flags)) as member:
        assert asyncio.run(granted_ttl(member.endpoint)) == 1
        log = member.log_path.read_text()
    assert f'"quota-size-bytes":{env["ETCD_QUOTA_BACKEND_BYTES"]}' in log
    assert '"auto-compaction-mode":"periodic"' in log
    assert '"auto-compaction-interval":"5m0s"' in log
    assert f'"election-timeout":"{env["ETCD_ELECTION_TIMEOUT"]}ms"' in log
