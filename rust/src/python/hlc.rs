//! Python face of `timestamp` and `hlc`: thin wrappers that convert arguments and errors.

use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple, PyType};

use crate::hlc::{
    Clock, ClockConfig, ClockError, ManualClock, PhysicalSource, TimestampRange, MAX_RESERVE,
};
use crate::python::args::{
    bounded_arg, bytes_arg, cast_arg, i64_arg, optional_cast_arg, str_arg, type_name, u64_arg,
};
use crate::python::errors::{CeilingReachedError, ClockSkewError, HlcError};
use crate::timestamp::{Timestamp, TimestampError, MAX_LOGICAL, MAX_NODE, MAX_PHYSICAL};

impl From<TimestampError> for PyErr {
    fn from(err: TimestampError) -> Self {
        PyValueError::new_err(err.to_string())
    }
}

impl From<ClockError> for PyErr {
    fn from(err: ClockError) -> Self {
        match err {
            ClockError::Skew { .. } => ClockSkewError::new_err(err.to_string()),
            ClockError::InvalidReserve(_) | ClockError::PhysicalOutOfRange(_) => {
                PyValueError::new_err(err.to_string())
            }
            ClockError::Exhausted => HlcError::new_err(err.to_string()),
            ClockError::CeilingReached { .. } => CeilingReachedError::new_err(err.to_string()),
        }
    }
}

fn node_arg(value: &Bound<'_, PyAny>) -> PyResult<u16> {
    let node = bounded_arg(value, "node", MAX_NODE, "")?;
    Ok(Timestamp::new(0, 0, node)?.node())
}

/// The `ValueError` for a `str` that cannot be encoded as UTF-8, naming where; `err` is the
/// `UnicodeEncodeError` from encoding it.
#[cold]
fn not_unicode(text: &Bound<'_, PyString>, err: &PyErr) -> PyErr {
    let start = err
        .value(text.py())
        .getattr("start")
        .and_then(|s| s.extract::<usize>());
    let at = start.map_or_else(|_| String::new(), |index| format!(" at index {index}"));
    PyValueError::new_err(
        TimestampError::unparsable(
            &text.to_string_lossy(),
            format!("the text has a lone surrogate{at}, which is not valid Unicode"),
        )
        .to_string(),
    )
}

/// A hybrid-logical-clock timestamp: (physical microseconds, logical counter, node id).
#[pyclass(name = "Timestamp", module = "hlc_oracle", frozen, eq, ord, hash)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyTimestamp(pub Timestamp);

// pyo3 methods receive `&self`; the Python names (`to_int`, `to_bytes`) are the public API.
#[allow(clippy::wrong_self_convention)]
#[pymethods]
impl PyTimestamp {
    #[new]
    #[pyo3(signature = (physical, logical = None, node = None))]
    fn py_new(
        physical: &Bound<'_, PyAny>,
        logical: Option<&Bound<'_, PyAny>>,
        node: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let physical = bounded_arg(
            physical,
            "physical",
            MAX_PHYSICAL,
            " (microseconds since the Unix epoch)",
        )?;
        let logical = logical.map_or(Ok(0), |v| bounded_arg(v, "logical", MAX_LOGICAL, ""))?;
        let node = node.map_or(Ok(0), |v| bounded_arg(v, "node", MAX_NODE, ""))?;
        Ok(Self(Timestamp::new(physical, logical, node)?))
    }

    #[getter]
    fn physical(&self) -> u64 {
        self.0.physical()
    }

    #[getter]
    fn logical(&self) -> u64 {
        self.0.logical()
    }

    #[getter]
    fn node(&self) -> u16 {
        self.0.node()
    }

    /// The 64-bit `(physical << 12) | logical` integer; sorts like the timestamp (node excluded).
    fn to_int(&self) -> u64 {
        self.0.packed()
    }

    #[classmethod]
    #[pyo3(signature = (value, node = None))]
    fn from_int(
        _cls: &Bound<'_, PyType>,
        value: &Bound<'_, PyAny>,
        node: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let packed = u64_arg(value, "value")?;
        let node = node.map_or(Ok(0), node_arg)?;
        Ok(Self(Timestamp::from_packed(packed, node)))
    }

    /// 10 bytes, big-endian; byte order equals timestamp order.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.to_bytes())
    }

    #[classmethod]
    fn from_bytes(_cls: &Bound<'_, PyType>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bytes = bytes_arg(data, "timestamp bytes")?;
        Ok(Self(Timestamp::from_bytes(bytes.as_bytes())?))
    }

    #[classmethod]
    fn parse(_cls: &Bound<'_, PyType>, text: &Bound<'_, PyAny>) -> PyResult<Self> {
        let text = str_arg(text, "timestamp text")?;
        // A str is not always text: a lone surrogate has no UTF-8 form (and no timestamp has one).
        let text = text.to_str().map_err(|err| not_unicode(text, &err))?;
        Ok(Self(Timestamp::parse(text)?))
    }

    /// The physical part as a timezone-aware UTC `datetime`.
    fn to_datetime(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.datetime()
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "Timestamp(physical={}, logical={}, node={})",
            self.0.physical(),
            self.0.logical(),
            self.0.node()
        )
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let ts = slf.get().0;
        let args = (ts.physical(), ts.logical(), ts.node());
        PyTuple::new(
            slf.py(),
            [
                slf.get_type().into_any(),
                args.into_pyobject(slf.py())?.into_any(),
            ],
        )
    }
}

/// `len(range)` consecutive timestamps of one node, reserved in one atomic step.
#[pyclass(name = "TimestampRange", module = "hlc_oracle", frozen, eq, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyTimestampRange(pub TimestampRange);

#[pymethods]
impl PyTimestampRange {
    #[new]
    fn py_new(first: &Bound<'_, PyAny>, count: &Bound<'_, PyAny>) -> PyResult<Self> {
        let first = cast_arg::<PyTimestamp>(first, "first")?.get().0;
        let count = u64_arg(count, "count")?;
        TimestampRange::new(first, count).map(Self).ok_or_else(|| {
            PyValueError::new_err(format!(
                "count must be at least 1 and the range must end within the 64-bit timestamp \
                 space, got count={count} from {first}"
            ))
        })
    }

    #[getter]
    fn first(&self) -> PyTimestamp {
        PyTimestamp(self.0.first())
    }

    #[getter]
    fn last(&self) -> PyTimestamp {
        PyTimestamp(self.0.last())
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.0.count()).unwrap_or(usize::MAX)
    }

    fn __contains__(&self, item: &Bound<'_, PyAny>) -> bool {
        item.cast::<PyTimestamp>()
            .is_ok_and(|ts| self.0.contains(ts.get().0))
    }

    fn __getitem__(&self, index: i64) -> PyResult<PyTimestamp> {
        let count = self.0.count();
        let position = if index < 0 {
            count.checked_sub(index.unsigned_abs())
        } else {
            Some(index.unsigned_abs())
        };
        position
            .and_then(|i| self.0.get(i))
            .map(PyTimestamp)
            .ok_or_else(|| {
                PyIndexError::new_err(format!(
                    "TimestampRange index {index} out of range for length {count}"
                ))
            })
    }

    fn __iter__(&self) -> TimestampRangeIterator {
        TimestampRangeIterator {
            range: self.0,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "TimestampRange(first={}, count={})",
            PyTimestamp(self.0.first()).__repr__(),
            self.0.count()
        )
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let range = slf.get().0;
        let args = (PyTimestamp(range.first()), range.count());
        PyTuple::new(
            slf.py(),
            [
                slf.get_type().into_any(),
                args.into_pyobject(slf.py())?.into_any(),
            ],
        )
    }
}

#[pyclass(module = "hlc_oracle", frozen)]
pub struct TimestampRangeIterator {
    range: TimestampRange,
    next: std::sync::atomic::AtomicU64,
}

#[pymethods]
impl TimestampRangeIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self) -> Option<PyTimestamp> {
        let index = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.range.get(index).map(PyTimestamp)
    }
}

/// The wall clock (`CLOCK_REALTIME`) in microseconds: the default physical clock.
#[pyclass(name = "SystemClock", module = "hlc_oracle", frozen)]
pub struct PySystemClock;

#[pymethods]
impl PySystemClock {
    #[new]
    fn py_new() -> Self {
        Self
    }

    fn now_us(&self) -> u64 {
        crate::hlc::system_now_us()
    }

    fn __repr__(&self) -> &'static str {
        "SystemClock()"
    }
}

/// A physical clock that only moves when told to: for tests and simulations.
#[pyclass(name = "ManualClock", module = "hlc_oracle", frozen)]
pub struct PyManualClock(Arc<ManualClock>);

#[pymethods]
impl PyManualClock {
    #[new]
    #[pyo3(signature = (start_us = None))]
    fn py_new(start_us: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = start_us.map_or(Ok(0), |v| u64_arg(v, "start_us"))?;
        Ok(Self(Arc::new(ManualClock::new(start)?)))
    }

    fn now_us(&self) -> u64 {
        self.0.now_us()
    }

    fn set(&self, us: &Bound<'_, PyAny>) -> PyResult<()> {
        Ok(self.0.set(u64_arg(us, "us")?)?)
    }

    /// Moves the clock by `us` (negative steps it backwards); returns the new reading.
    fn advance(&self, us: &Bound<'_, PyAny>) -> PyResult<u64> {
        Ok(self.0.advance(i64_arg(us, "us")?)?)
    }

    fn __repr__(&self) -> String {
        format!("ManualClock(start_us={})", self.0.now_us())
    }
}

/// A thread-safe hybrid logical clock; see the `hlc_oracle` module docstring for its guarantees.
#[pyclass(name = "Clock", module = "hlc_oracle", frozen)]
pub struct PyClock {
    clock: Clock,
    physical_clock: Py<PyAny>,
}

impl PyClock {
    pub fn core(&self) -> &Clock {
        &self.clock
    }
}

#[pymethods]
impl PyClock {
    #[new]
    #[pyo3(signature = (
        node = None,
        max_offset_us = None,
        physical_clock = None,
        floor = None,
        *,
        backward_jump_tolerance_us = None,
        ceiling_physical = None,
    ))]
    fn py_new(
        py: Python<'_>,
        node: Option<&Bound<'_, PyAny>>,
        max_offset_us: Option<&Bound<'_, PyAny>>,
        physical_clock: Option<&Bound<'_, PyAny>>,
        floor: Option<&Bound<'_, PyAny>>,
        backward_jump_tolerance_us: Option<&Bound<'_, PyAny>>,
        ceiling_physical: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let node = node.map_or(Ok(0), node_arg)?;
        let max_offset_us = max_offset_us.map_or(Ok(500_000), |v| u64_arg(v, "max_offset_us"))?;
        let mut config = ClockConfig::new(node, max_offset_us);
        if let Some(tolerance) = backward_jump_tolerance_us {
            config.backward_jump_tolerance_us = u64_arg(tolerance, "backward_jump_tolerance_us")?;
        }
        if let Some(ceiling) = ceiling_physical.filter(|c| !c.is_none()) {
            let ceiling = u64_arg(ceiling, "ceiling_physical")?;
            Timestamp::new(ceiling, 0, 0)?;
            config.ceiling_physical = Some(ceiling);
        }
        let physical_clock = match physical_clock {
            None => Bound::new(py, PySystemClock)?.into_any(),
            Some(source) if source.is_none() => Bound::new(py, PySystemClock)?.into_any(),
            Some(source) => source.clone(),
        };
        config.source = if let Ok(manual) = physical_clock.cast::<PyManualClock>() {
            PhysicalSource::Manual(manual.get().0.clone())
        } else if physical_clock.is_instance_of::<PySystemClock>() {
            PhysicalSource::System
        } else {
            return Err(PyTypeError::new_err(format!(
                "physical_clock must be a SystemClock or a ManualClock, got {}",
                type_name(&physical_clock)
            )));
        };
        config.floor = optional_cast_arg::<PyTimestamp>(floor, "floor")?.map(|ts| ts.get().0);
        Ok(Self {
            clock: Clock::new(config),
            physical_clock: physical_clock.unbind(),
        })
    }

    /// Local or send event: a timestamp greater than every one returned or observed before.
    fn now(&self) -> PyResult<PyTimestamp> {
        Ok(PyTimestamp(self.clock.now()?))
    }

    /// Receive event: a timestamp greater than `remote` and every one before; `ClockSkewError`
    /// (clock unchanged) when `remote` is more than `max_offset_us` ahead of physical time.
    fn update(&self, remote: &Bound<'_, PyAny>) -> PyResult<PyTimestamp> {
        let remote = cast_arg::<PyTimestamp>(remote, "remote")?.get().0;
        Ok(PyTimestamp(self.clock.update(remote)?))
    }

    /// `n` consecutive timestamps in one atomic step.
    fn reserve(&self, n: &Bound<'_, PyAny>) -> PyResult<PyTimestampRange> {
        let n = u64_arg(n, "n")?;
        Ok(PyTimestampRange(self.clock.reserve(n)?))
    }

    /// The latest timestamp returned or observed (the floor before any), without advancing.
    fn last(&self) -> PyTimestamp {
        PyTimestamp(self.clock.last())
    }

    /// Raises the ceiling (largest physical part handed out) to `physical`; never lowers it.
    /// Returns the ceiling in force. Raise it only after the new limit is durable.
    fn raise_ceiling(&self, physical: &Bound<'_, PyAny>) -> PyResult<u64> {
        Ok(self
            .clock
            .raise_ceiling(u64_arg(physical, "ceiling_physical")?)?)
    }

    /// The largest physical part this clock may hand out, or `None` without a ceiling.
    #[getter]
    fn ceiling_physical(&self) -> Option<u64> {
        self.clock.ceiling_physical()
    }

    /// Reads the physical clock this HLC uses, in microseconds since the Unix epoch.
    fn physical_now(&self) -> u64 {
        self.clock.physical_now()
    }

    #[getter]
    fn node(&self) -> u16 {
        self.clock.node()
    }

    #[getter]
    fn max_offset_us(&self) -> u64 {
        self.clock.max_offset_us()
    }

    #[getter]
    fn physical_clock(&self, py: Python<'_>) -> Py<PyAny> {
        self.physical_clock.clone_ref(py)
    }

    /// How many times the physical clock was seen stepping back by more than
    /// `backward_jump_tolerance_us` (default `max_offset_us // 10`); smaller drops are not
    /// counted, since threads reading the clock concurrently record their readings out of order.
    /// A call that raises counts nothing.
    #[getter]
    fn backward_jumps(&self) -> u64 {
        self.clock.backward_jumps()
    }

    #[classattr]
    #[allow(non_snake_case)]
    fn MAX_RESERVE() -> u64 {
        MAX_RESERVE
    }

    fn __repr__(&self) -> String {
        format!(
            "Clock(node={}, max_offset_us={}, last={})",
            self.clock.node(),
            self.clock.max_offset_us(),
            PyTimestamp(self.clock.last()).__repr__()
        )
    }
}
