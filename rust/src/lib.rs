//! hlc-oracle's core. Each module is one concept in plain Rust with its own tests; the pyo3 glue
//! lives in `python/` behind the `python` feature, and this file only registers the module.

pub mod commit;
pub mod conflict;
pub mod hlc;
pub mod log;
pub mod timestamp;
pub mod vclock;

#[cfg(feature = "python")]
mod python;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _core(module: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    python::register(module)
}
