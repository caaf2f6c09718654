"""deploy/ is checked by parsing (no container engine or systemd here): the example config loads
through the real loader, the compose file and the systemd unit parse, the Dockerfile has the
shape operators rely on (multi-stage, non-root, health-checked)."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import yaml
from hlc_oracle.config import OracleConfig, load

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
    assert config.server.listen == defaults.server.listen


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


def test_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["hlc-oracle"]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / service["build"]["dockerfile"].removeprefix("deploy/")).exists()
    assert service["healthcheck"]["test"][:3] == ["CMD", "hlc-oracle", "status"]
    assert service["stop_signal"] == "SIGTERM"
    mounts = {volume.split(":")[1] for volume in service["volumes"]}
    assert "/var/lib/hlc-oracle" in mounts
    assert "hlc-oracle-data" in compose["volumes"]
    for mount in service["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), source
    # Environment variables the compose file sets are ones the loader knows.
    config = load(DEPLOY / "oracle.example.toml", environ=service["environment"])
    assert config.clock.node_id == 1


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
    assert unit["Install"]["WantedBy"] == "multi-user.target"
