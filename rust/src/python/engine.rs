//! The Python face of the commit engine: `CommitEngine`, the batch hot path the
//! `GroupCommitScheduler` drives. Requests come in as `Transaction`s and ids (see `requests`) or
//! as parts (see `commit::batch`); answers go out as the objects of `answers`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::commit::batch::{
    decode_parts, recycle_parts, DecodedPart, PartData, PartsEngine, PartsHandout, ReleasedBatch,
};
use crate::commit::durable::SyncWake;
use crate::commit::stream::StreamPool;
use crate::commit::wire;
use crate::commit::{
    CommitEngine, ConfirmError, Durability, EngineConfig, EngineError, Limits, Released, Request,
};
use crate::conflict::Isolation;
use crate::python::answers::{answer_list, outcome_object, part_results};
use crate::python::args::{cast_arg, path_arg, u64_arg, usize_arg};
use crate::python::errors::{ClockSkewError, CommitLogCorruptError, CommitLogError, HlcError};
use crate::python::hlc::{PyClock, PyTimestamp};
use crate::python::log::{log_options, PyLogRecovery};
use crate::python::requests::{item_requests, items_arg, part_data, parts_arg};

/// Piece bytes `replay_pieces` replays under one hold of the engine lock (about 4,000 compact
/// decisions, a few milliseconds): the writer thread's batches wait no longer than that.
const REPLAY_LOCK_BYTES: usize = 64 * 1024;
/// Longest a replay waits for the callers waiting on the engine lock to take it.
const REPLAY_HANDOFF: Duration = Duration::from_millis(1);

impl From<EngineError> for PyErr {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Log(err) => err.into(),
            EngineError::BadRecord { .. } => CommitLogCorruptError::new_err(err.to_string()),
            EngineError::Clock(_) => ClockSkewError::new_err(err.to_string()),
            EngineError::InvalidConfig(_) => PyValueError::new_err(err.to_string()),
        }
    }
}

fn durability_arg(value: &str) -> PyResult<Durability> {
    match value {
        "sync" => Ok(Durability::Sync),
        "async" => Ok(Durability::Async),
        "memory" => Ok(Durability::Memory),
        "external" => Ok(Durability::External),
        other => Err(PyValueError::new_err(format!(
            "durability must be \"sync\", \"async\", \"memory\" or \"external\", got {other:?}"
        ))),
    }
}

fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Sync => "sync",
        Durability::Async => "async",
        Durability::Memory => "memory",
        Durability::External => "external",
    }
}

/// `COMMIT_DEFAULTS`: the engine's defaults (`EngineConfig::new`), which the `[commit]` settings
/// and the server's default message limit read instead of keeping copies.
pub(crate) fn commit_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let config = EngineConfig::new(Durability::Sync, None);
    let defaults = PyDict::new(py);
    defaults.set_item(
        "isolation",
        match config.isolation {
            Isolation::Snapshot => "snapshot",
            Isolation::Serializable => "serializable",
        },
    )?;
    defaults.set_item("max_keys", config.max_keys)?;
    defaults.set_item("max_read_keys", config.limits.max_read_keys)?;
    defaults.set_item("max_write_keys", config.limits.max_write_keys)?;
    defaults.set_item("max_key_bytes", config.limits.max_key_bytes)?;
    defaults.set_item("retained_decisions", config.retained_decisions)?;
    defaults.set_item("segment_size", config.log_options.segment_size)?;
    defaults.set_item("retain_segments", config.retain_segments)?;
    Ok(defaults)
}

/// A decided batch for Python: `(ticket, [(batch_seq, bytes), ...], released)`.
fn handout_tuple<'py>(
    py: Python<'py>,
    handout: &PartsHandout,
) -> PyResult<(u64, Bound<'py, PyList>, Bound<'py, PyList>)> {
    let pieces = PyList::empty(py);
    for (seq, bytes) in &handout.pieces {
        pieces.append((*seq, PyBytes::new(py, bytes)))?;
    }
    Ok((
        handout.ticket,
        pieces,
        released_list(py, &handout.released)?,
    ))
}

/// `[(ticket, answers), ...]`: `answers` a list per request for a batch of requests, or the
/// per-part results (see `answers::part_results`) for a batch of parts.
fn released_list<'py>(py: Python<'py>, released: &[ReleasedBatch]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for batch in released {
        let Released {
            ticket,
            txn_ids,
            answers,
            ..
        } = &batch.released;
        let answers = match batch.split() {
            Some(split) => part_results(py, split, txn_ids, answers)?,
            None => answer_list(py, txn_ids, answers)?,
        };
        out.append((*ticket, answers))?;
    }
    Ok(out)
}

/// The per-batch hot path of group commit: validate, `check_batch`, one clock `reserve`, one log
/// append (write + fdatasync), record. Driven by `GroupCommitScheduler`; usable on its own.
#[pyclass(name = "CommitEngine", module = "hlc_oracle", frozen)]
pub struct PyCommitEngine {
    /// The engine with the layouts of its pending batches of parts.
    engine: Mutex<PartsEngine>,
    clock: Py<PyClock>,
    recovery: Option<Py<PyLogRecovery>>,
    recovered_commits: u64,
    recovered_aborts: u64,
    floor: Option<PyTimestamp>,
    path: Option<PathBuf>,
    /// Decoded `CommitStream` messages, refilled by later ones.
    streams: Mutex<StreamPool>,
    /// Callers waiting for `engine`: a history replay hands the lock over to them between its
    /// chunks (`replay_pieces`; the mutex alone would let the replay take it straight back).
    lock_waiters: AtomicUsize,
    /// Pipelined syncs: where `sync_parked` waits for written batches, outside `engine`'s lock.
    sync_wake: OnceLock<Arc<SyncWake>>,
}

impl PyCommitEngine {
    fn lock(&self) -> PyResult<MutexGuard<'_, PartsEngine>> {
        self.lock_waiters.fetch_add(1, Ordering::Relaxed);
        let locked = self.engine.lock();
        self.lock_waiters.fetch_sub(1, Ordering::Relaxed);
        locked.map_err(|_| HlcError::new_err("the commit engine lock is poisoned"))
    }

    /// Decodes the parts with the pool of decoded messages (taken out for the decode only).
    fn decode_parts<'d>(&self, data: &'d [PartData<'_>]) -> Vec<DecodedPart<'d>> {
        let mut pool = self
            .streams
            .lock()
            .map(|mut pool| std::mem::take(&mut *pool))
            .unwrap_or_default();
        let decoded = decode_parts(data, &mut pool);
        self.give_back(pool);
        decoded
    }

    fn recycle_parts(&self, decoded: Vec<DecodedPart<'_>>) {
        let mut pool = StreamPool::default();
        recycle_parts(decoded, &mut pool);
        self.give_back(pool);
    }

    fn give_back(&self, pool: StreamPool) {
        if let Ok(mut kept) = self.streams.lock() {
            kept.absorb(pool);
        }
    }
}

#[pymethods]
impl PyCommitEngine {
    #[new]
    #[pyo3(signature = (
        path,
        clock,
        *,
        durability = "sync",
        isolation = "snapshot",
        max_keys = None,
        max_read_keys = None,
        max_write_keys = None,
        max_key_bytes = None,
        retained_decisions = None,
        segment_size = None,
        retain_segments = None,
        preallocate = true,
        max_batch_bytes = None,
        first_batch_seq = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        path: Option<&Bound<'_, PyAny>>,
        clock: &Bound<'_, PyAny>,
        durability: &str,
        isolation: &str,
        max_keys: Option<&Bound<'_, PyAny>>,
        max_read_keys: Option<&Bound<'_, PyAny>>,
        max_write_keys: Option<&Bound<'_, PyAny>>,
        max_key_bytes: Option<&Bound<'_, PyAny>>,
        retained_decisions: Option<&Bound<'_, PyAny>>,
        segment_size: Option<&Bound<'_, PyAny>>,
        retain_segments: Option<&Bound<'_, PyAny>>,
        preallocate: bool,
        max_batch_bytes: Option<&Bound<'_, PyAny>>,
        first_batch_seq: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let durability = durability_arg(durability)?;
        let path = match path.filter(|p| !p.is_none()) {
            Some(path) => Some(path_arg(path, "path")?),
            None => None,
        };
        let clock = cast_arg::<PyClock>(clock, "clock")?.clone().unbind();
        let mut config = EngineConfig::new(durability, path.clone());
        config.isolation = match isolation {
            "snapshot" => Isolation::Snapshot,
            "serializable" => Isolation::Serializable,
            other => {
                return Err(PyValueError::new_err(format!(
                    "isolation must be \"snapshot\" or \"serializable\", got {other:?}"
                )))
            }
        };
        let defaults = Limits::default();
        config.max_keys = usize_arg(max_keys, "max_keys", config.max_keys)?;
        config.limits = Limits {
            max_read_keys: usize_arg(max_read_keys, "max_read_keys", defaults.max_read_keys)?,
            max_write_keys: usize_arg(max_write_keys, "max_write_keys", defaults.max_write_keys)?,
            max_key_bytes: usize_arg(max_key_bytes, "max_key_bytes", defaults.max_key_bytes)?,
        };
        config.retained_decisions = usize_arg(
            retained_decisions,
            "retained_decisions",
            config.retained_decisions,
        )?;
        config.retain_segments =
            usize_arg(retain_segments, "retain_segments", config.retain_segments)?;
        config.log_options = log_options(segment_size, preallocate)?;
        config.max_batch_bytes =
            usize_arg(max_batch_bytes, "max_batch_bytes", config.max_batch_bytes)?;
        if let Some(first) = first_batch_seq.filter(|v| !v.is_none()) {
            config.first_batch_seq = u64_arg(first, "first_batch_seq")?;
            if config.first_batch_seq == 0 {
                return Err(PyValueError::new_err(
                    "first_batch_seq must be at least 1, got 0",
                ));
            }
        }
        let clock_ref = clock.clone_ref(py);
        let (engine, recovery) =
            py.detach(|| CommitEngine::open(config, clock_ref.get().core()))?;
        let log_recovery = match (&recovery.log, engine.log()) {
            (Some(recovered), Some(log)) => Some(Py::new(
                py,
                PyLogRecovery::new(py, recovered, PyList::empty(py), log.next_seq()),
            )?),
            _ => None,
        };
        Ok(Self {
            engine: Mutex::new(PartsEngine::new(engine)),
            clock,
            recovery: log_recovery,
            recovered_commits: recovery.commits,
            recovered_aborts: recovery.aborts,
            floor: recovery.floor.map(PyTimestamp),
            path,
            streams: Mutex::new(StreamPool::default()),
            lock_waiters: AtomicUsize::new(0),
            sync_wake: OnceLock::new(),
        })
    }

    /// Decides one batch. Each request is a `Transaction` (commit it) or an `int` (abort that id).
    /// Returns one answer per request, in order: `Committed`, `Aborted`, or the exception that
    /// refused it (not raised: a bad request does not fail the others).
    fn process<'py>(
        &self,
        py: Python<'py>,
        requests: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let items = items_arg(requests)?;
        let (txn_ids, answers) = py.detach(|| {
            let requests = item_requests(&items);
            let txn_ids: Vec<u64> = requests.iter().map(Request::txn_id).collect();
            let answers = self
                .lock()?
                .engine_mut()
                .process(self.clock.get().core(), &requests);
            Ok::<_, PyErr>((txn_ids, answers))
        })?;
        answer_list(py, &txn_ids, &answers)
    }

    /// Decides one batch of parts (see `commit::batch`): each part a list of requests or one
    /// serialized `CommitStreamRequest`. Returns per part, in order: the list of answers, or
    /// `(response bytes, committed, aborted, refused, ceiling)` for a message (a `ValueError`, not
    /// raised, when the message is malformed). Local log or memory only, like `process`.
    fn process_parts<'py>(
        &self,
        py: Python<'py>,
        parts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let inputs = parts_arg(parts)?;
        let data = part_data(&inputs);
        let (batch, split) = py.detach(|| {
            let decoded = self.decode_parts(&data);
            let batch = self
                .lock()?
                .process_parts(self.clock.get().core(), &decoded);
            self.recycle_parts(decoded);
            let split = batch.split().unwrap_or_default();
            Ok::<_, PyErr>((batch.released, split))
        })?;
        part_results(py, split, &batch.txn_ids, &batch.answers)
    }

    /// `decide` for a batch of parts (see `process_parts`): `(ticket, pieces, released)`, where
    /// each released batch's answers are per-part results when it was decided by this method.
    fn decide_parts<'py>(
        &self,
        py: Python<'py>,
        parts: &Bound<'py, PyAny>,
    ) -> PyResult<(u64, Bound<'py, PyList>, Bound<'py, PyList>)> {
        let inputs = parts_arg(parts)?;
        let data = part_data(&inputs);
        let handout = py.detach(|| {
            let decoded = self.decode_parts(&data);
            let handout = self.lock()?.decide_parts(self.clock.get().core(), &decoded);
            self.recycle_parts(decoded);
            Ok::<_, PyErr>(handout)
        })?;
        handout_tuple(py, &handout)
    }

    /// Decides one batch like `process`, for any durable step: returns `(ticket, pieces,
    /// released)`. `pieces` are `(batch_seq, bytes)` to make durable (durability "external"
    /// only; empty otherwise); `released` are `(ticket, answers)` that can go out now, this
    /// batch's or (external) earlier ones', in decision order.
    fn decide<'py>(
        &self,
        py: Python<'py>,
        requests: &Bound<'py, PyAny>,
    ) -> PyResult<(u64, Bound<'py, PyList>, Bound<'py, PyList>)> {
        let items = items_arg(requests)?;
        let handout = py.detach(|| {
            let requests = item_requests(&items);
            Ok::<_, PyErr>(self.lock()?.decide(self.clock.get().core(), &requests))
        })?;
        handout_tuple(py, &handout)
    }

    /// Durability "external": piece `batch_seq` is durable. Returns the `(ticket, answers)` this
    /// releases, in decision order. `ValueError` for a batch that is not pending;
    /// `CommitLogError` once the engine has stopped.
    fn confirm<'py>(&self, py: Python<'py>, batch_seq: u64) -> PyResult<Bound<'py, PyList>> {
        let released = py
            .detach(|| Ok::<_, PyErr>(self.lock()?.confirm(batch_seq)))?
            .map_err(|err| match err {
                ConfirmError::UnknownBatch { .. } => PyValueError::new_err(err.to_string()),
                ConfirmError::Stopped(_) => CommitLogError::new_err(err.to_string()),
            })?;
        released_list(py, &released)
    }

    /// Durability "external": a piece's write failed or its outcome is unknown (`reason` says
    /// which). Returns every pending batch's `(ticket, answers)`, each answer a
    /// `CommitOutcomeUnknownError`; every later batch is refused until the engine is reopened.
    fn fail<'py>(&self, py: Python<'py>, reason: &str) -> PyResult<Bound<'py, PyList>> {
        let released = py.detach(|| Ok::<_, PyErr>(self.lock()?.fail(reason)))?;
        released_list(py, &released)
    }

    /// Recovery on promotion (durability "external"): replays one stored piece's decisions (in
    /// batch order) into the decisions index and conflict history, and moves the clock past its
    /// newest commit. Returns `(commits, aborts)` replayed; `CommitLogCorruptError` naming
    /// `batch_seq` when the piece does not decode (it is never skipped).
    fn replay_piece(
        &self,
        py: Python<'_>,
        batch_seq: u64,
        data: &Bound<'_, PyBytes>,
    ) -> PyResult<(u64, u64)> {
        let data = data.as_bytes().to_vec();
        let recovery = py.detach(|| {
            let mut parts = self.lock()?;
            Ok::<_, PyErr>(parts.engine_mut().replay_piece(
                self.clock.get().core(),
                batch_seq,
                &data,
            )?)
        })?;
        Ok((recovery.commits, recovery.aborts))
    }

    /// [`Self::replay_piece`] of each of `pieces` (`(batch_seq, data)` pairs, replayed in the
    /// order given) under one lock, the GIL released once: a new leader's history in pages,
    /// without a lock and a thread hop per piece. Returns `(commits, aborts, bad)`: `bad` is
    /// None, or the index of the first piece that does not decode and why (the pieces before
    /// it are replayed, it and those after it are not: a piece is never skipped).
    #[allow(clippy::type_complexity)]
    fn replay_pieces(
        &self,
        py: Python<'_>,
        pieces: Vec<(u64, Bound<'_, PyBytes>)>,
    ) -> PyResult<(u64, u64, Option<(usize, String)>)> {
        let owned: Vec<(u64, Vec<u8>)> = pieces
            .iter()
            .map(|(seq, data)| (*seq, data.as_bytes().to_vec()))
            .collect();
        py.detach(|| {
            let clock = self.clock.get().core();
            let (mut commits, mut aborts) = (0, 0);
            let mut parts = self.lock()?;
            let mut held_bytes = 0;
            for (index, (seq, data)) in owned.iter().enumerate() {
                if held_bytes >= REPLAY_LOCK_BYTES {
                    held_bytes = 0;
                    if self.lock_waiters.load(Ordering::Relaxed) > 0 {
                        // The writer thread decides this term's requests: let it in first.
                        drop(parts);
                        let until = Instant::now() + REPLAY_HANDOFF;
                        while self.lock_waiters.load(Ordering::Relaxed) > 0
                            && Instant::now() < until
                        {
                            std::thread::yield_now();
                        }
                        parts = self.lock()?;
                    }
                }
                match parts.engine_mut().replay_piece(clock, *seq, data) {
                    Ok(recovery) => {
                        commits += recovery.commits;
                        aborts += recovery.aborts;
                    }
                    Err(err) => return Ok((commits, aborts, Some((index, err.to_string())))),
                }
                held_bytes += data.len();
            }
            Ok::<_, PyErr>((commits, aborts, None))
        })
    }

    /// A new clustered leader serves while its decision history loads: until
    /// `end_history_load`, only requests no stored decision can be about are decided (see
    /// `rust/src/commit/history.rs`). `low_watermark`: the previous leader's window limit (raised
    /// in the conflict detector too), or None; `aborted_ids`: the ids earlier leaders aborted by
    /// id.
    #[pyo3(signature = (low_watermark, aborted_ids))]
    fn begin_history_load(
        &self,
        low_watermark: Option<PyRef<'_, PyTimestamp>>,
        aborted_ids: Vec<u64>,
    ) -> PyResult<()> {
        self.lock()?
            .engine_mut()
            .begin_history_load(low_watermark.map(|ts| ts.0), aborted_ids);
        Ok(())
    }

    /// The history is replayed: every request is decided again.
    fn end_history_load(&self) -> PyResult<()> {
        self.lock()?.engine_mut().end_history_load();
        Ok(())
    }

    /// Whether the decision history is still loading.
    #[getter]
    fn history_loading(&self) -> PyResult<bool> {
        Ok(self.lock()?.engine().history_loading())
    }

    /// Whether a queued request must wait for the decision history: a `Transaction`, an `int`
    /// (an abort by id), a list of them (any one), or a serialized `CommitStreamRequest` (any of
    /// its transactions). False once the history is loaded.
    fn needs_history(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(message) = request.cast::<PyBytes>() {
            let Ok(starts) = wire::request_ids_and_starts(message.as_bytes()) else {
                return Ok(false); // malformed: refused whole, nothing decided
            };
            return py.detach(|| {
                let parts = self.lock()?;
                let engine = parts.engine();
                Ok(starts
                    .iter()
                    .any(|&(txn_id, start)| engine.needs_history_of(txn_id, start)))
            });
        }
        let items = if request.is_instance_of::<PyList>() {
            items_arg(request)?
        } else {
            items_arg(&PyList::new(py, [request])?.into_any())?
        };
        let parts = self.lock()?;
        let engine = parts.engine();
        Ok(items
            .iter()
            .any(|item| engine.needs_history(&item.request())))
    }

    /// Aborts as too old (a recorded decision), from now on, every undecided transaction that
    /// started at or below `ts` (a new leader passes the previous leader's window limit).
    fn raise_low_watermark(&self, ts: &Bound<'_, PyTimestamp>) -> PyResult<()> {
        self.lock()?.engine_mut().raise_low_watermark(ts.get().0);
        Ok(())
    }

    /// Decisions of transactions that started at or below `ts` may have been forgotten (a new
    /// leader passes the newest decision retention trimmed from etcd): such starts are refused
    /// (`StartTimestampError`, OUT_OF_RANGE) from now on, never decided, so a forgotten commit
    /// cannot flip to aborted.
    fn raise_forgotten_through(&self, ts: &Bound<'_, PyTimestamp>) -> PyResult<()> {
        self.lock()?
            .engine_mut()
            .forget_decisions_through(ts.get().0);
        Ok(())
    }

    /// Batches decided and not yet answered (durability "external"; 0 otherwise).
    #[getter]
    fn pending_batches(&self) -> PyResult<usize> {
        Ok(self.lock()?.engine().pending_batches())
    }

    /// A standby engine (durability "external", built before its leader knew where the stored
    /// pieces end) numbers its pieces from `first_batch_seq`. `ValueError` once a piece was
    /// handed out, or for another durability.
    fn start_batches_at(&self, py: Python<'_>, first_batch_seq: u64) -> PyResult<()> {
        if first_batch_seq == 0 {
            return Err(PyValueError::new_err(
                "first_batch_seq must be at least 1, got 0",
            ));
        }
        let started = py.detach(|| {
            Ok::<_, PyErr>(self.lock()?.engine_mut().start_batches_at(first_batch_seq))
        })?;
        if started {
            return Ok(());
        }
        Err(PyValueError::new_err(format!(
            "cannot number pieces from {first_batch_seq}: the engine already handed one out, or \
             its durability is not \"external\""
        )))
    }

    /// Faults the conflict table and the decisions index in now (the GIL released meanwhile):
    /// an engine built ahead of need then spends nothing on fresh pages in its first calls.
    fn prefault(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            self.lock()?.engine_mut().prefault();
            Ok::<_, PyErr>(())
        })
    }

    /// The sequence number the next piece will get (None unless durability is "external").
    #[getter]
    fn next_batch_seq(&self) -> PyResult<Option<u64>> {
        Ok(self.lock()?.engine().next_batch_seq())
    }

    /// The decision for `txn_id` (`Committed` or `Aborted`), or None when unknown (never decided,
    /// or older than the retained decisions).
    fn status<'py>(
        &self,
        py: Python<'py>,
        txn_id: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let txn_id = u64_arg(txn_id, "txn_id")?;
        let outcome = py.detach(|| Ok::<_, PyErr>(self.lock()?.engine().status(txn_id)))?;
        outcome
            .map(|outcome| outcome_object(py, txn_id, &outcome))
            .transpose()
    }

    /// Durability "sync": pipelined syncs from now on (`decide_parts` writes a batch and parks
    /// its answers; `sync_parked`, on another thread, syncs and releases them). False for
    /// another durability.
    fn pipeline_syncs(&self) -> PyResult<bool> {
        let mut parts = self.lock()?;
        let engine = parts.engine_mut();
        let pipelined = engine.pipeline_syncs();
        if let Some(wake) = engine.sync_wake() {
            // Set once: an engine's log pipelines from its first batch or never.
            let _ = self.sync_wake.set(wake);
        }
        Ok(pipelined)
    }

    /// Pipelined syncs, the sync thread's loop body: waits (the GIL and the engine's lock
    /// released) until a batch is written and unsynced, `fdatasync`s at once every batch written
    /// so far, and returns the `(ticket, answers)` this releases, in decision order (empty when
    /// a close had released them already). None once `stop_sync_waits` or `close` ended the
    /// waits and nothing written is left unsynced, or without pipelined syncs. A failed
    /// `fdatasync` aborts the process.
    fn sync_parked<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(wake) = self.sync_wake.get() else {
            return Ok(None);
        };
        let released = py.detach(|| {
            let Some(point) = wake.wait() else {
                return Ok::<_, PyErr>(None);
            };
            let took = point.sync();
            Ok(Some(self.lock()?.synced(&point, took)))
        })?;
        released
            .map(|released| released_list(py, &released))
            .transpose()
    }

    /// Pipelined syncs: `sync_parked` returns None once every batch written so far is synced
    /// (a drain's last step; `close` ends the waits too).
    fn stop_sync_waits(&self) {
        if let Some(wake) = self.sync_wake.get() {
            wake.stop(false);
        }
    }

    /// fdatasync of batches processed in "async" durability.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            self.lock()?.engine_mut().sync();
            Ok(())
        })
    }

    /// Syncs and closes the log, releasing the directory; later batches are refused. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            // Pending external batches were answered by the scheduler's drain before this.
            let _unanswered = self.lock()?.close();
            Ok(())
        })
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.lock()?.engine().is_closed())
    }

    #[getter]
    fn durability(&self) -> PyResult<&'static str> {
        Ok(durability_name(self.lock()?.engine().durability()))
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Py<PyClock> {
        self.clock.clone_ref(py)
    }

    #[getter]
    fn path(&self) -> Option<String> {
        self.path.as_ref().map(|p| p.display().to_string())
    }

    /// What the log replay found (None in "memory" durability).
    #[getter]
    fn recovery(&self, py: Python<'_>) -> Option<Py<PyLogRecovery>> {
        self.recovery.as_ref().map(|r| r.clone_ref(py))
    }

    /// Figures: committed, aborted, batches (since start), recovered_commits, recovered_aborts,
    /// retained_decisions, remembered_keys, next_seq (None without a log).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let parts = self.lock()?;
        let engine = parts.engine();
        let (committed, aborted, batches) = engine.totals();
        let stats = PyDict::new(py);
        stats.set_item("committed", committed)?;
        stats.set_item("aborted", aborted)?;
        stats.set_item("batches", batches)?;
        stats.set_item("recovered_commits", self.recovered_commits)?;
        stats.set_item("recovered_aborts", self.recovered_aborts)?;
        stats.set_item("retained_decisions", engine.retained_decisions())?;
        stats.set_item("remembered_keys", engine.detector().len())?;
        stats.set_item("next_seq", engine.log().map(|log| log.next_seq()))?;
        Ok(stats)
    }

    /// How long the log's `fdatasync`s took since it was opened: the count per bucket (upper
    /// bounds in µs: `SYNC_BUCKET_BOUNDS_US`, then one unbounded bucket) and the sum of the
    /// durations in nanoseconds; None without a log (durability "memory", clustered).
    fn sync_timings(&self) -> PyResult<Option<(Vec<u64>, u64)>> {
        let parts = self.lock()?;
        let engine = parts.engine();
        Ok(engine.log().map(|log| {
            let timings = log.sync_timings();
            (timings.counts.to_vec(), timings.total_ns)
        }))
    }

    /// The newest commit timestamp found on recovery (the clock runs above it), or None.
    #[getter]
    fn floor(&self) -> Option<PyTimestamp> {
        self.floor
    }

    /// Transactions that started at or below this are too old: aborted (and recorded) when
    /// undecided, refused when their decision may be forgotten (None: nothing forgotten yet).
    #[getter]
    fn low_watermark(&self) -> PyResult<Option<PyTimestamp>> {
        Ok(self
            .lock()?
            .engine()
            .detector()
            .low_watermark()
            .map(PyTimestamp))
    }

    /// `(max_read_keys, max_write_keys, max_key_bytes)`.
    #[getter]
    fn limits(&self) -> PyResult<(usize, usize, usize)> {
        let limits = self.lock()?.engine().limits();
        Ok((
            limits.max_read_keys,
            limits.max_write_keys,
            limits.max_key_bytes,
        ))
    }

    fn __repr__(&self) -> PyResult<String> {
        let path = self
            .path()
            .map_or_else(|| "None".to_string(), |p| format!("{p:?}"));
        Ok(format!(
            "CommitEngine(path={path}, durability={:?})",
            self.durability()?
        ))
    }
}
