//! Python face of `vclock`: `VectorClock` and the `Ordering` enum.

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyTuple, PyType};

use crate::python::args::{bounded_arg, bytes_arg, cast_arg, type_name, u64_arg};
use crate::python::python_enum;
use crate::vclock::{NodeId, Ordering, VectorClock, VectorClockError};

impl From<VectorClockError> for PyErr {
    fn from(err: VectorClockError) -> Self {
        PyValueError::new_err(err.to_string())
    }
}

static ORDERING_MEMBERS: PyOnceLock<[Py<PyAny>; 4]> = PyOnceLock::new();

/// Adds the `Ordering` enum (`BEFORE`, `AFTER`, `EQUAL`, `CONCURRENT`) to the module.
pub(crate) fn register_ordering(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let members = python_enum(
        module,
        "Ordering",
        "How two vector clocks relate in the happens-before partial order.",
        &[
            ("BEFORE", "before"),
            ("AFTER", "after"),
            ("EQUAL", "equal"),
            ("CONCURRENT", "concurrent"),
        ],
    )?;
    let members: [Py<PyAny>; 4] = members
        .try_into()
        .map_err(|_| PyRuntimeError::new_err("Ordering has four members"))?;
    // Set once per process; a second registration (another interpreter) keeps the first set.
    let _ = ORDERING_MEMBERS.set(module.py(), members);
    Ok(())
}

/// The enum member for `ordering`: the same object every time (results can be tested with
/// `is`), and nothing allocated per comparison.
fn ordering_member(py: Python<'_>, ordering: Ordering) -> PyResult<Py<PyAny>> {
    let members = ORDERING_MEMBERS
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("hlc_oracle._core.Ordering is not registered"))?;
    let index = match ordering {
        Ordering::Before => 0,
        Ordering::After => 1,
        Ordering::Equal => 2,
        Ordering::Concurrent => 3,
    };
    Ok(members[index].clone_ref(py))
}

/// A node id argument: an int in `0..=65535`.
pub(crate) fn node_id_arg(value: &Bound<'_, PyAny>) -> PyResult<NodeId> {
    let node = bounded_arg(value, "node", u64::from(NodeId::MAX), "")?;
    NodeId::try_from(node).map_err(|_| {
        PyValueError::new_err(format!("node must be in 0..={}, got {node}", NodeId::MAX))
    })
}

/// Converts a `dict` of node id → counter; zero counters are dropped.
pub(crate) fn clock_from_dict(value: &Bound<'_, PyAny>) -> PyResult<VectorClock> {
    let dict = value.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "vector clock entries must be a dict of node id to counter, got {}",
            type_name(value)
        ))
    })?;
    let mut entries = Vec::with_capacity(dict.len());
    for (node, counter) in dict.iter() {
        entries.push((node_id_arg(&node)?, u64_arg(&counter, "counter")?));
    }
    Ok(VectorClock::from_entries(entries)?)
}

/// The `other` argument of the comparisons, borrowed: a `TypeError` naming `other` when it is not a
/// `VectorClock` (what a `PyRef<PyVectorClock>` parameter does, with a message that names it).
#[inline]
fn other_arg<'py>(other: &Bound<'py, PyAny>) -> PyResult<PyRef<'py, PyVectorClock>> {
    Ok(cast_arg::<PyVectorClock>(other, "other")?.try_borrow()?)
}

/// A vector clock: node id (0..=65535) → event counter (0..2**64), absent nodes count 0.
///
/// Comparisons are the happens-before partial order: for concurrent clocks `<`, `>`, `<=` and
/// `>=` are all false. Mutable (`increment`, `merge`), hence unhashable.
#[pyclass(name = "VectorClock", module = "hlc_oracle")]
#[derive(Clone)]
pub struct PyVectorClock(pub VectorClock);

// pyo3 methods receive `&self`; the Python names (`to_bytes`, `to_dict`) are the public API.
#[allow(clippy::wrong_self_convention)]
#[pymethods]
impl PyVectorClock {
    #[new]
    #[pyo3(signature = (entries = None))]
    fn py_new(entries: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        match entries {
            Some(entries) if !entries.is_none() => Ok(Self(clock_from_dict(entries)?)),
            _ => Ok(Self(VectorClock::new())),
        }
    }

    /// Counts one event on `node`; returns its new counter.
    fn increment(&mut self, node: &Bound<'_, PyAny>) -> PyResult<u64> {
        let node = node_id_arg(node)?;
        Ok(self.0.increment(node)?)
    }

    /// Pointwise maximum with `other`, in place.
    fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let other = cast_arg::<Self>(other, "other")?;
        if slf.is(other) {
            return Ok(());
        }
        slf.borrow_mut().0.merge(&other.borrow().0);
        Ok(())
    }

    /// The counter of `node` (0 when absent).
    fn get(&self, node: &Bound<'_, PyAny>) -> PyResult<u64> {
        Ok(self.0.get(node_id_arg(node)?))
    }

    fn compare(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let other = other_arg(other)?;
        ordering_member(py, self.0.compare(&other.0))
    }

    fn happens_before(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.0.happens_before(&other_arg(other)?.0))
    }

    fn concurrent_with(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.0.concurrent_with(&other_arg(other)?.0))
    }

    /// True when this clock has seen every event of `other` (after or equal), like `>=`.
    fn dominates(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.0.dominates(&other_arg(other)?.0))
    }

    fn copy(&self) -> Self {
        self.clone()
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.clone()
    }

    /// Compact canonical bytes: equal clocks give equal bytes (format in the README).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.to_bytes())
    }

    #[classmethod]
    fn from_bytes(_cls: &Bound<'_, PyType>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bytes = bytes_arg(data, "vector clock bytes")?;
        Ok(Self(VectorClock::from_bytes(bytes.as_bytes())?))
    }

    /// `{node: counter}` for every node with a non-zero counter.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (node, counter) in self.0.iter() {
            dict.set_item(node, counter)?;
        }
        Ok(dict)
    }

    #[classmethod]
    fn from_dict(_cls: &Bound<'_, PyType>, entries: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self(clock_from_dict(entries)?))
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    /// `(node, counter)` pairs in increasing node order, so `dict(clock)` works.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let pairs = PyList::new(py, self.0.iter())?;
        pairs.try_iter()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<Self>() else {
            return Ok(py.NotImplemented());
        };
        let ordering = self.0.compare(&other.borrow().0);
        let result = match op {
            CompareOp::Eq => ordering == Ordering::Equal,
            CompareOp::Ne => ordering != Ordering::Equal,
            CompareOp::Lt => ordering == Ordering::Before,
            CompareOp::Le => matches!(ordering, Ordering::Before | Ordering::Equal),
            CompareOp::Gt => ordering == Ordering::After,
            CompareOp::Ge => matches!(ordering, Ordering::After | Ordering::Equal),
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }

    pub(crate) fn __repr__(&self) -> String {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(node, counter)| format!("{node}: {counter}"))
            .collect();
        format!("VectorClock({{{}}})", entries.join(", "))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let bytes = PyBytes::new(py, &slf.borrow().0.to_bytes());
        let args = PyTuple::new(py, [bytes])?;
        PyTuple::new(py, [slf.get_type().getattr("from_bytes")?, args.into_any()])
    }
}
