//! Generates the Python modules of the wire contract (`python/hlc_oracle/proto/*.proto` ->
//! `*_pb2.py` and `*_pb2.pyi`, with grpcio-tools) whenever maturin builds the extension, so that
//! every route that makes a wheel ships them: `pip install` of a clone or of an sdist,
//! `maturin build`, `maturin develop` (`make build`). The modules are not checked in: protoc
//! marks its output "NO CHECKED-IN PROTOBUF GENCODE", and the `protobuf` bound in
//! `pyproject.toml` follows the pinned `grpcio-tools` of `[build-system] requires`.
//!
//! maturin names the target interpreter in `PYO3_PYTHON`; that interpreter must have
//! `grpc_tools` (pip's build isolation installs it from `[build-system] requires`; `make build`
//! from the `dev` extra). Without it the build stops here with a message, so no wheel is made
//! without its protobuf modules. Plain `cargo` builds (tests, clippy) make no wheel and skip this.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// Where the `.proto` files and the generated modules live, from the crate root.
const PROTO_DIR: &str = "python/hlc_oracle/proto";
/// protoc's include root: module paths (`hlc_oracle/proto/oracle_pb2.py`) are relative to it.
const PYTHON_ROOT: &str = "python";

fn fail(message: &str) -> ! {
    eprintln!("error: generating the protobuf modules of hlc_oracle failed: {message}");
    exit(1);
}

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if env::var_os("CARGO_FEATURE_PYTHON").is_none() {
        return;
    }
    let Some(python) = env::var_os("PYO3_PYTHON") else {
        return; // not maturin: no wheel is being made
    };
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    let protos = proto_files(&root.join(PROTO_DIR));
    if protos.is_empty() {
        fail(&format!(
            "no .proto file in {}",
            root.join(PROTO_DIR).display()
        ));
    }
    let outputs: Vec<PathBuf> = protos
        .iter()
        .flat_map(|proto| generated_paths(proto))
        .collect();
    for path in protos.iter().chain(&outputs) {
        // A missing output counts as changed, so deleting the modules regenerates them.
        println!("cargo:rerun-if-changed={}", path.display());
    }
    generate(&python, &root.join(PYTHON_ROOT), &protos);
    // The outputs take the newest input's time: written now, they would look changed to cargo on
    // every later build and rebuild the crate each time.
    let newest_input = protos
        .iter()
        .filter_map(|proto| fs::metadata(proto).and_then(|meta| meta.modified()).ok())
        .max();
    for output in &outputs {
        let file = fs::File::options()
            .append(true)
            .open(output)
            .unwrap_or_else(|err| {
                fail(&format!("protoc did not write {}: {err}", output.display()))
            });
        if let Some(time) = newest_input {
            // Only an optimisation: a failure costs a rebuild, never a wrong module.
            let _ = file.set_modified(time);
        }
    }
}

fn proto_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|err| fail(&format!("cannot list {}: {err}", dir.display())));
    let mut protos: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    protos
}

fn generated_paths(proto: &Path) -> [PathBuf; 2] {
    let stem = proto
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = proto.parent().unwrap_or(Path::new("."));
    [
        dir.join(format!("{stem}_pb2.py")),
        dir.join(format!("{stem}_pb2.pyi")),
    ]
}

fn generate(python: &OsString, include_root: &Path, protos: &[PathBuf]) {
    let mut out = OsString::from("--python_out=");
    out.push(include_root);
    let mut pyi = OsString::from("--pyi_out=");
    pyi.push(include_root);
    let status = Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(include_root)
        .arg(out)
        .arg(pyi)
        .args(protos)
        .status()
        .unwrap_or_else(|err| {
            fail(&format!(
                "cannot run {}: {err}",
                Path::new(python).display()
            ))
        });
    if !status.success() {
        fail(&format!(
            "`{} -m grpc_tools.protoc` exited with {status}; the interpreter needs grpcio-tools \
             (pip installs it from [build-system] requires; for `maturin build` or `maturin \
             develop`, `pip install` the pinned grpcio-tools of pyproject.toml first)",
            Path::new(python).display()
        ));
    }
}
