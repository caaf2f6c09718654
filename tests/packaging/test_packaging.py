"""Every install route gives a working package.

The wheel (``maturin build`` from the tree) and the sdist (``maturin sdist``, then built alone
by pip with build isolation, as ``pip install <sdist>`` does) are each installed with pip into a
fresh venv, which then runs ``hlc-oracle serve``, ``hlc-oracle now`` and commits, from a
temporary directory (no make, no repository on the path). The sdist's venv gets the lowest
versions ``pyproject.toml`` allows, which checks the bounds against the generated code.

Cost, for CI on 2 cores: one release build without LTO (``CARGO_PROFILE_RELEASE_*``) in its own
target dir, ``target/install-test``, shared by both builds and kept between runs, and pip's
cache for every download.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.oracle_process import OracleProcess
from tests.support.repository import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GENERATED = ROOT / "python" / "hlc_oracle" / "proto" / "oracle_pb2.py"
BUILD_TIMEOUT_S = 1500


def requirements(entries: list[str]) -> dict[str, Requirement]:
    return {(req := Requirement(entry)).name: req for entry in entries}


def runtime_requirements() -> dict[str, Requirement]:
    return requirements(PYPROJECT["project"]["dependencies"])


def lower_bound(requirement: Requirement) -> str:
    return next(spec.version for spec in requirement.specifier if spec.operator == ">=")


def gencode_version(module: Path) -> tuple[int, int, int]:
    """The protobuf version the module was generated for (its runtime version check)."""
    for node in ast.walk(ast.parse(module.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "ValidateProtobufRuntimeVersion"
        ):
            major, minor, patch = (ast.literal_eval(arg) for arg in node.args[1:4])
            return major, minor, patch
    raise AssertionError(f"{module} has no ValidateProtobufRuntimeVersion call")


def test_grpcio_tools_is_a_build_and_dev_dependency_only() -> None:
    build = requirements(PYPROJECT["build-system"]["requires"])
    dev = requirements(PYPROJECT["project"]["optional-dependencies"]["dev"])
    assert "grpcio-tools" not in runtime_requirements()
    # One pin, so the generated code's version is known wherever the build runs.
    assert str(build["grpcio-tools"].specifier).startswith("==")
    assert build["grpcio-tools"].specifier == dev["grpcio-tools"].specifier
    assert importlib.metadata.version("grpcio-tools") in build["grpcio-tools"].specifier


def test_protobuf_and_grpcio_bounds_match_the_generated_code() -> None:
    runtime = runtime_requirements()
    generated = gencode_version(GENERATED)
    # The runtime must not be older than the gencode; protobuf's next major is untested.
    assert runtime["protobuf"].specifier == f">={'.'.join(map(str, generated))},<{generated[0] + 1}"
    # grpcio-tools' own protobuf requirement says which gencode it writes.
    tools = requirements(importlib.metadata.requires("grpcio-tools") or [])
    assert lower_bound(tools["protobuf"]) == lower_bound(runtime["protobuf"])
    # Health checking and reflection ship generated code too: at their lower bounds they must
    # accept the same protobuf, and grpcio at least the version they need.
    for name in ("grpcio-health-checking", "grpcio-reflection"):
        assert lower_bound(runtime[name]) == lower_bound(tools["grpcio"])
    assert lower_bound(runtime["grpcio"]) == lower_bound(tools["grpcio"])


def build_environment(target_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "CARGO_TARGET_DIR")
    }
    env.update(
        CARGO_TARGET_DIR=str(target_dir),
        CARGO_PROFILE_RELEASE_LTO="false",
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def run(command: list[str | Path], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The wheel built from the tree, and the wheel pip builds from the sdist alone."""
    out = tmp_path_factory.mktemp("dist")
    env = build_environment(ROOT / "target" / "install-test")
    maturin = Path(sys.executable).parent / "maturin"
    run([maturin, "sdist", "--out", out / "sdist"], env, ROOT)
    run(
        [maturin, "build", "--release", "--interpreter", sys.executable, "--out", out / "tree"],
        env,
        ROOT,
    )
    (sdist,) = (out / "sdist").glob("hlc_oracle-*.tar.gz")
    # pip's build isolation: a fresh build environment from the sdist's [build-system] requires,
    # where this venv's grpcio-tools is out of sight.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    run([*pip_wheel, "--wheel-dir", out / "from-sdist", sdist], env, out)
    (from_tree,) = (out / "tree").glob("hlc_oracle-*.whl")
    (from_sdist,) = (out / "from-sdist").glob("hlc_oracle-*.whl")
    yield {"sdist": sdist, "wheel": from_tree, "wheel from sdist": from_sdist}


def fresh_venv(path: Path, env: dict[str, str]) -> Path:
    run([sys.executable, "-m", "venv", path], env, path.parent)
    return path / "bin"


@pytest.mark.parametrize("route", ["wheel", "sdist"])
def test_installed_package_serves_answers_and_commits(
    route: str, dist: dict[str, Path], tmp_path: Path
) -> None:
    env = build_environment(ROOT / "target" / "install-test")
    bin_dir = fresh_venv(tmp_path / "venv", env)
    if route == "wheel":
        run([bin_dir / "pip", "install", dist["wheel"]], env, tmp_path)
    else:
        # The lowest versions the bounds allow: the generated code must run on them.
        lowest = [
            f"{name}=={lower_bound(req)}"
            for name, req in runtime_requirements().items()
            if name.startswith(("grpcio", "protobuf"))
        ]
        run([bin_dir / "pip", "install", dist["wheel from sdist"], *lowest], env, tmp_path)
    run([bin_dir / "pip", "check"], env, tmp_path)
    installed = run(
        [
            bin_dir / "python",
            "-c",
            "import importlib.util, hlc_oracle.client, hlc_oracle.proto.oracle_pb2 as pb; "
            "print(pb.__file__); print(importlib.util.find_spec('grpc_tools'))",
        ],
        env,
        tmp_path,
    ).split()
    assert installed == [
        str(bin_dir.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
            / "site-packages" / "hlc_oracle" / "proto" / "oracle_pb2.py"),
        "None",  # grpcio-tools is not installed with the package
    ]  # fmt: skip

    program = [str(bin_dir / "hlc-oracle")]
    with OracleProcess(tmp_path / "data", env=env, program=program) as oracle:
        now = oracle.cli("now", "--json")
        assert now.returncode == 0, now.stderr
        (timestamp,) = json.loads(now.stdout)
        assert timestamp["physical"] > 0
        bench = oracle.cli(
            "bench", "--mode", "commit", "--requests", "20", "--concurrency", "4", "--no-progress"
        )
        assert bench.returncode == 0, bench.stderr
        assert bench.stdout.startswith("20 committed transactions"), bench.stdout


def test_a_build_that_cannot_generate_the_protobuf_modules_fails_loudly(tmp_path: Path) -> None:
    # An interpreter without grpcio-tools: the build script stops the build, so no wheel lacks
    # the modules. The venv and the target dir are kept between runs (pyo3 is built once for that
    # interpreter; a failed build script runs again every time), apart from the shared ones.
    kept = ROOT / "target" / "install-test-without-grpcio-tools"
    env = build_environment(kept / "target")
    python = kept / "venv" / "bin" / "python"
    if not python.exists():
        kept.mkdir(parents=True, exist_ok=True)
        fresh_venv(kept / "venv", env)
    done = subprocess.run(
        [Path(sys.executable).parent / "maturin", "build", "--interpreter", python,
         "--out", tmp_path / "wheels"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert re.search(r"generating the protobuf modules of hlc_oracle failed: .*grpcio-tools",
                     done.stderr), done.stderr  # fmt: skip
    assert not list((tmp_path / "wheels").glob("*.whl"))
