# The few verbs people type. Everything installs into ./.venv and ./target; system packages the
# integration tests need come from Debian through scripts/setup-system.sh.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup system build proto serve cluster docs docs-check test test-fast lint rust-test python-test bench bench-smoke clean

setup: system build

system:
	bash scripts/setup-system.sh

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip "maturin>=1.9.4,<2"

# Builds the extension in release mode and installs the package (editable) with its dev extras.
# The build also generates the protobuf modules (rust/build.rs runs grpcio-tools, which the dev
# extra pins): every build after an edit of python/hlc_oracle/proto/*.proto regenerates them.
build: $(PYTHON)
	$(BIN)/maturin develop --release --extras dev --quiet

# The same generation without a Rust build, for a quick look at an edited .proto. The modules
# (python/hlc_oracle/proto/*_pb2.py and .pyi) are never checked in.
PROTOS := $(wildcard python/hlc_oracle/proto/*.proto)
proto:
	$(PYTHON) -m grpc_tools.protoc -I python --python_out=python --pyi_out=python $(PROTOS)

serve: setup
	$(BIN)/hlc-oracle serve

# A local cluster to try: one etcd member and three nodes on 127.0.0.1, until Ctrl-C.
cluster: build
	$(BIN)/hlc-oracle cluster

lint: build
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench
	$(BIN)/mypy python/hlc_oracle
	$(PYTHON) -m mypy.stubtest hlc_oracle --allowlist stubtest-allowlist.txt --mypy-config-file pyproject.toml

rust-test:
	cargo test

# The documentation site (MkDocs, Material theme, mkdocstrings): the settings page is generated
# from config.py's field metadata; --strict turns every warning (a broken link, a missing page)
# into a failure. Local only: no network.
export NO_MKDOCS_2_WARNING := 1
docs: build
	$(PYTHON) -m hlc_oracle.config_reference docs/settings.md
	$(BIN)/mkdocs build --strict --quiet

docs-check: build
	$(BIN)/mkdocs build --strict --quiet --site-dir $(abspath target)/docs-site

python-test: build
	$(BIN)/pytest tests

# The fast tier: tests/unit alone (no server, no etcd, no chrony), well under a minute. The
# other tiers: tests/etcd, tests/integration, tests/packaging (`pytest -m etcd`, ...).
test-fast: build
	$(BIN)/pytest tests/unit -q

# A short smoke run: every benchmark body runs once, no timing is taken or asserted.
bench-smoke: build
	$(BIN)/pytest bench --benchmark-disable -q

bench: build
	$(BIN)/pytest bench --benchmark-json=bench/results/latest.json
	$(PYTHON) bench/ratios.py bench/results/latest.json

test: setup lint rust-test python-test docs-check bench-smoke

clean:
	rm -rf target $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
