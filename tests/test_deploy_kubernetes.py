"""deploy/kustomization.yaml and deploy/kubernetes/ are checked by parsing (no cluster here): the
manifests are well formed, and what they say about ports, user, config and data matches the
config loader, the container image and the example config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hlc_oracle.config import load

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return document


def manifests() -> dict[str, dict[str, Any]]:
    by_kind: dict[str, dict[str, Any]] = {}
    for resource in kustomization()["resources"]:
        for document in yaml.safe_load_all((DEPLOY / resource).read_text()):
            assert document["apiVersion"] and document["metadata"]["name"]
            by_kind[document["kind"]] = document
    return by_kind


def container() -> dict[str, Any]:
    spec = manifests()["StatefulSet"]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    result: dict[str, Any] = only
    return result


def test_every_resource_and_generated_file_exists() -> None:
    kinds = manifests()
    assert set(kinds) == {"Namespace", "Service", "StatefulSet"}
    for generator in kustomization()["configMapGenerator"]:
        for entry in generator["files"]:
            assert (DEPLOY / entry.partition("=")[2]).is_file()


def test_container_ports_match_the_config_the_pod_runs_with() -> None:
    env = {item["name"]: item["value"] for item in container()["env"]}
    config = load(DEPLOY / "oracle.example.toml", environ=env)
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert config.server.listen == "0.0.0.0:50051"
    assert ports["grpc"] == int(config.server.listen.rpartition(":")[2])
    assert ports["metrics"] == config.metrics.port
    assert config.metrics.host == "0.0.0.0"
    service_ports = {p["name"]: p for p in manifests()["Service"]["spec"]["ports"]}
    assert service_ports["grpc"]["port"] == ports["grpc"]
    assert service_ports["metrics"]["port"] == ports["metrics"]


def test_probes_use_grpc_health_for_readiness_only() -> None:
    probes = container()
    assert probes["readinessProbe"]["grpc"]["port"] == 50051
    # A node stopped by the skew guard must not be restarted in a loop: liveness is TCP only.
    assert "tcpSocket" in probes["livenessProbe"]


def test_runs_as_the_image_user_with_data_and_config_mounted() -> None:
    pod = manifests()["StatefulSet"]["spec"]["template"]["spec"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"--uid {pod['securityContext']['runAsUser']}" in dockerfile
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {mount["name"]: mount["mountPath"] for mount in container()["volumeMounts"]}
    env = {item["name"]: item["value"] for item in container()["env"]}
    config = load(DEPLOY / "oracle.example.toml", environ=env)
    assert Path(mounts["data"]) == config.server.data_dir
    assert container()["args"][-1] == f"{mounts['config']}/oracle.toml"
    claims = manifests()["StatefulSet"]["spec"]["volumeClaimTemplates"]
    assert [claim["metadata"]["name"] for claim in claims] == ["data"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > config.server.shutdown_grace_s
