//! Python face of `log`: `CommitLog.open(path)` → `(CommitLog, LogRecovery)`.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple, PyType};

use crate::log::{CommitLog, LogError, LogOptions, Recovered, DEFAULT_SEGMENT_SIZE};
use crate::python::args::{bytes_arg, path_arg, type_name, u64_arg};
use crate::python::errors::{CommitLogCorruptError, CommitLogError};

impl From<LogError> for PyErr {
    fn from(err: LogError) -> Self {
        match err {
            LogError::Corrupt { .. } => CommitLogCorruptError::new_err(err.to_string()),
            LogError::RecordTooLarge(_) | LogError::InvalidOption(_) => {
                PyValueError::new_err(err.to_string())
            }
            LogError::Io { .. } | LogError::Locked(_) | LogError::Closed => {
                CommitLogError::new_err(err.to_string())
            }
        }
    }
}

pub(crate) fn log_options(
    segment_size: Option<&Bound<'_, PyAny>>,
    preallocate: bool,
) -> PyResult<LogOptions> {
    let segment_size = segment_size
        .filter(|v| !v.is_none())
        .map_or(Ok(DEFAULT_SEGMENT_SIZE), |v| u64_arg(v, "segment_size"))?;
    Ok(LogOptions {
        segment_size,
        preallocate,
    })
}

/// What `CommitLog.open` found on disk: the records after the checkpoint and the figures.
#[pyclass(name = "LogRecovery", module = "hlc_oracle", frozen)]
pub struct PyLogRecovery {
    records: Py<PyList>,
    checkpoint: Option<(u64, Py<PyBytes>)>,
    segments: usize,
    record_count: u64,
    bytes_read: u64,
    truncated_bytes: u64,
    truncated_at: Option<(String, u64)>,
    seconds: f64,
    next_seq: u64,
}

impl PyLogRecovery {
    pub(crate) fn new(
        py: Python<'_>,
        recovered: &Recovered,
        records: Bound<'_, PyList>,
        next_seq: u64,
    ) -> Self {
        let stats = &recovered.stats;
        Self {
            records: records.unbind(),
            checkpoint: recovered
                .checkpoint
                .as_ref()
                .map(|(seq, data)| (*seq, PyBytes::new(py, data).unbind())),
            segments: stats.segments,
            record_count: stats.records,
            bytes_read: stats.bytes,
            truncated_bytes: stats.truncated_bytes,
            truncated_at: stats
                .truncated_at
                .as_ref()
                .map(|(path, offset)| (path.display().to_string(), *offset)),
            seconds: stats.elapsed.as_secs_f64(),
            next_seq,
        }
    }
}

#[pymethods]
impl PyLogRecovery {
    /// `(seq, payload)` of every record after the checkpoint, in log order.
    #[getter]
    fn records(&self, py: Python<'_>) -> Py<PyList> {
        self.records.clone_ref(py)
    }

    /// `(covered_seq, data)` of the checkpoint, or None.
    #[getter]
    fn checkpoint(&self, py: Python<'_>) -> Option<(u64, Py<PyBytes>)> {
        self.checkpoint
            .as_ref()
            .map(|(seq, data)| (*seq, data.clone_ref(py)))
    }

    #[getter]
    fn segments(&self) -> usize {
        self.segments
    }

    #[getter]
    fn record_count(&self) -> u64 {
        self.record_count
    }

    #[getter]
    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Bytes of a torn tail cut from the last segment (0 after a clean shutdown).
    #[getter]
    fn truncated_bytes(&self) -> u64 {
        self.truncated_bytes
    }

    /// `(file, offset)` where the torn tail was cut, or None.
    #[getter]
    fn truncated_at(&self) -> Option<(String, u64)> {
        self.truncated_at.clone()
    }

    #[getter]
    fn seconds(&self) -> f64 {
        self.seconds
    }

    #[getter]
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn __repr__(&self) -> String {
        format!(
            "LogRecovery(segments={}, record_count={}, bytes_read={}, truncated_bytes={}, \
             seconds={:.6})",
            self.segments, self.record_count, self.bytes_read, self.truncated_bytes, self.seconds
        )
    }
}

/// An append-only, checksummed, segmented write-ahead log (format in `docs/commit-log.md`). One `write` and one `fdatasync` per `append` batch; a failed fsync aborts the process.
#[pyclass(name = "CommitLog", module = "hlc_oracle", frozen)]
pub struct PyCommitLog {
    log: Mutex<Option<CommitLog>>,
    path: PathBuf,
}

impl PyCommitLog {
    fn with_log<T>(&self, f: impl FnOnce(&mut CommitLog) -> Result<T, LogError>) -> PyResult<T> {
        let mut guard = self
            .log
            .lock()
            .map_err(|_| CommitLogError::new_err("the commit log lock is poisoned"))?;
        let log = guard.as_mut().ok_or(LogError::Closed)?;
        Ok(f(log)?)
    }
}

#[pymethods]
impl PyCommitLog {
    /// Opens (creating if needed) the log in directory `path`, replays it, and returns the log
    /// ready to append with what recovery found.
    #[classmethod]
    #[pyo3(signature = (path, *, segment_size = None, preallocate = true))]
    fn open<'py>(
        cls: &Bound<'py, PyType>,
        path: &Bound<'py, PyAny>,
        segment_size: Option<&Bound<'py, PyAny>>,
        preallocate: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let py = cls.py();
        let dir = path_arg(path, "path")?;
        let options = log_options(segment_size, preallocate)?;
        let (log, recovered, replayed) = py.detach(|| {
            let mut replayed: Vec<(u64, Vec<u8>)> = Vec::new();
            CommitLog::open(&dir, options, &mut |seq, payload| {
                replayed.push((seq, payload.to_vec()));
            })
            .map(|(log, recovered)| (log, recovered, replayed))
        })?;
        let records = PyList::empty(py);
        for (seq, payload) in replayed {
            records.append((seq, PyBytes::new(py, &payload)))?;
        }
        let recovery = PyLogRecovery::new(py, &recovered, records, log.next_seq());
        let log = PyCommitLog {
            log: Mutex::new(Some(log)),
            path: dir,
        };
        PyTuple::new(
            py,
            [
                Bound::new(py, log)?.into_any(),
                Bound::new(py, recovery)?.into_any(),
            ],
        )
    }

    /// Appends `records` (bytes) as consecutive records with one write and, when `sync`, one
    /// fdatasync. Returns `(first_seq, last_seq)`, or None for an empty batch.
    #[pyo3(signature = (records, *, sync = true))]
    fn append(
        &self,
        py: Python<'_>,
        records: &Bound<'_, PyAny>,
        sync: bool,
    ) -> PyResult<Option<(u64, u64)>> {
        if records.is_instance_of::<PyBytes>() {
            return Err(PyTypeError::new_err(
                "records must be a sequence of bytes, got bytes (wrap one record in a list)",
            ));
        }
        let mut payloads = Vec::new();
        for (index, item) in records
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "records must be an iterable of bytes, got {}",
                    type_name(records)
                ))
            })?
            .enumerate()
        {
            let item = item?;
            payloads.push(
                bytes_arg(&item, &format!("records[{index}]"))?
                    .as_bytes()
                    .to_vec(),
            );
        }
        py.detach(|| self.with_log(|log| log.append(&payloads, sync)))
    }

    /// fdatasync of everything appended with `sync=False`.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            self.with_log(|log| {
                log.sync();
                Ok(())
            })
        })
    }

    /// Saves `data` as the checkpoint covering records up to `covered_seq` and deletes the
    /// segments it fully covers; returns how many were deleted.
    fn checkpoint(
        &self,
        py: Python<'_>,
        covered_seq: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let covered_seq = u64_arg(covered_seq, "covered_seq")?;
        let data = bytes_arg(data, "data")?.as_bytes().to_vec();
        py.detach(|| self.with_log(|log| log.checkpoint(covered_seq, &data)))
    }

    /// Sequence number the next appended record gets.
    #[getter]
    fn next_seq(&self) -> PyResult<u64> {
        self.with_log(|log| Ok(log.next_seq()))
    }

    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Segment file paths, oldest first.
    fn segment_paths(&self) -> PyResult<Vec<String>> {
        self.with_log(|log| {
            Ok(log
                .segment_paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect())
        })
    }

    /// Syncs and releases the directory; later calls raise CommitLogError. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let mut guard = self
                .log
                .lock()
                .map_err(|_| CommitLogError::new_err("the commit log lock is poisoned"))?;
            if let Some(mut log) = guard.take() {
                log.sync();
            }
            Ok(())
        })
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self
            .log
            .lock()
            .map_err(|_| CommitLogError::new_err("the commit log lock is poisoned"))?
            .is_none())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("CommitLog(path={:?})", self.path.display().to_string())
    }
}
