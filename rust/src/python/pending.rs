//! The group-commit scheduler's queue of submissions, kept in Rust so that the per-caller work of
//! the event loop's side runs no bytecode: `PendingQueue.submit` makes a caller's future and
//! queues its transaction (no Python tuple per entry), and a `PendingBatch` hands a batch to the
//! engine as its parts and resolves its waiters (one wake-up per event loop, whose futures are
//! then resolved by one call of a `FutureResolution`, with no bytecode per future).
//!
//! Every method runs holding the GIL and never calls Python while holding the queue's lock. The
//! policy (batch sizes, the batch delay, the clock ceiling, a new leader's history) stays in
//! `hlc_oracle.scheduler`; on its slow paths an entry is the tuple
//! `(kind, payload, size, waiter, attempts)`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::{PyBaseException, PyException, PyStopIteration, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::python::args::cast_arg;
use crate::python::conflict::PyTransaction;
use crate::python::errors::{HlcError, SchedulerClosedError, SchedulerOverloadedError};

/// What an entry holds: one request (answered with its answer), a group of requests (answered
/// with a list), or one serialized `CommitStreamRequest` (answered with a `StreamResult`).
const SINGLE: u8 = 0;
const GROUP: u8 = 1;
const STREAM: u8 = 2;

/// One queued submission.
struct Entry {
    kind: u8,
    payload: Py<PyAny>,
    size: usize,
    /// An event loop's future, or a `concurrent.futures.Future` (a blocking caller).
    waiter: Py<PyAny>,
    /// The waiter's event loop; None for a blocking caller's.
    event_loop: Option<Py<PyAny>>,
    attempts: u32,
}

impl Entry {
    /// An entry from its tuple `(kind, payload, size, waiter, attempts)`.
    fn from_tuple(item: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (kind, payload, size, waiter, attempts): (u8, Bound<'_, PyAny>, usize, _, u32) =
            item.extract().map_err(|_| {
                PyTypeError::new_err(
                    "an entry must be a tuple (kind, payload, size, waiter, attempts)",
                )
            })?;
        if kind > STREAM {
            return Err(PyValueError::new_err(format!(
                "an entry's kind must be 0, 1 or 2, got {kind}"
            )));
        }
        let event_loop = waiter_loop(&waiter)?;
        Ok(Self {
            kind,
            payload: payload.unbind(),
            size,
            waiter: waiter.unbind(),
            event_loop,
            attempts,
        })
    }

    fn to_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (
            self.kind,
            self.payload.clone_ref(py),
            self.size,
            self.waiter.clone_ref(py),
            self.attempts,
        )
            .into_pyobject(py)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.payload)?;
        visit.call(&self.waiter)?;
        if let Some(event_loop) = &self.event_loop {
            visit.call(event_loop)?;
        }
        Ok(())
    }
}

/// The event loop of an asyncio future (`get_loop()`), None for a `concurrent.futures.Future`.
fn waiter_loop(waiter: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let py = waiter.py();
    if waiter.is_instance(concurrent_future_type(py)?)? {
        return Ok(None);
    }
    Ok(Some(waiter.call_method0(intern!(py, "get_loop"))?.unbind()))
}

fn concurrent_future_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.import(py, "concurrent.futures", "Future")
}

fn get_running_loop(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static FUNCTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    FUNCTION.import(py, "asyncio", "get_running_loop")
}

fn invalid_state_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.import(py, "asyncio", "InvalidStateError")
}

struct QueueState {
    entries: VecDeque<Entry>,
    /// Requests queued (a group counts its members).
    queued: usize,
    /// Requests held outside the queue (a new leader's history, the clock's ceiling): they count
    /// against `max_queue` too.
    parked: usize,
    closed: bool,
    /// The writer waits on the scheduler's condition: the next submission notifies it.
    writer_idle: bool,
}

/// The scheduler's queue: see the module docstring. `wakeup` is the scheduler's
/// `threading.Condition`, notified (once) when a submission finds the writer waiting.
#[pyclass(name = "PendingQueue", module = "hlc_oracle", frozen)]
pub struct PyPendingQueue {
    state: Mutex<QueueState>,
    max_queue: usize,
    wakeup: Py<PyAny>,
}

impl PyPendingQueue {
    fn lock(&self) -> PyResult<MutexGuard<'_, QueueState>> {
        self.state
            .lock()
            .map_err(|_| HlcError::new_err("the commit queue's lock is poisoned"))
    }

    /// Queues `entry` unless closed or full; notifies a waiting writer.
    fn push(&self, py: Python<'_>, entry: Entry) -> PyResult<()> {
        let notify = {
            let mut state = self.lock()?;
            if state.closed {
                drop(state);
                drop(entry);
                return Err(SchedulerClosedError::new_err(
                    "the group-commit scheduler is closed",
                ));
            }
            let waiting = state.queued + state.parked;
            if waiting + entry.size > self.max_queue {
                drop(state);
                drop(entry);
                return Err(SchedulerOverloadedError::new_err(format!(
                    "the commit queue is full ({waiting} of {} requests waiting); retry later",
                    self.max_queue
                )));
            }
            state.queued += entry.size;
            state.entries.push_back(entry);
            std::mem::take(&mut state.writer_idle)
        };
        if notify {
            self.notify_writer(py)?;
        }
        Ok(())
    }

    fn notify_writer(&self, py: Python<'_>) -> PyResult<()> {
        let wakeup = self.wakeup.bind(py);
        wakeup.call_method0(intern!(py, "acquire"))?;
        let notified = wakeup.call_method0(intern!(py, "notify"));
        wakeup.call_method0(intern!(py, "release"))?;
        notified.map(drop)
    }
}

#[pymethods]
impl PyPendingQueue {
    #[new]
    fn py_new(max_queue: usize, wakeup: Bound<'_, PyAny>) -> Self {
        Self {
            state: Mutex::new(QueueState {
                entries: VecDeque::new(),
                queued: 0,
                parked: 0,
                closed: false,
                writer_idle: false,
            }),
            max_queue,
            wakeup: wakeup.unbind(),
        }
    }

    /// Queues one transaction for the next batch and returns a `CommitFuture` of its answer on
    /// the running event loop (what `GroupCommitScheduler.submit` does, with no bytecode).
    fn submit<'py>(&self, txn: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = txn.py();
        cast_arg::<PyTransaction>(txn, "txn")?;
        let event_loop = get_running_loop(py)?.call0()?.unbind();
        let future = Bound::new(py, PyCommitFuture::new(event_loop.clone_ref(py)))?.into_any();
        self.push(
            py,
            Entry {
                kind: SINGLE,
                payload: txn.clone().unbind(),
                size: 1,
                waiter: future.clone().unbind(),
                event_loop: Some(event_loop),
                attempts: 0,
            },
        )?;
        Ok(future)
    }

    /// Queues the entry `(kind, payload, size, waiter, attempts)` unless closed or full.
    fn put(&self, entry: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push(entry.py(), Entry::from_tuple(entry)?)
    }

    /// Puts the entries (tuples) back at the front of the queue, in their order, whether or not
    /// it is closed or full: they were accepted before. The caller notifies the writer (it
    /// holds the condition's lock, which is not reentrant).
    fn put_front(&self, entries: &Bound<'_, PyAny>) -> PyResult<()> {
        let entries = entries
            .try_iter()?
            .map(|item| Entry::from_tuple(&item?))
            .collect::<PyResult<Vec<_>>>()?;
        let mut state = self.lock()?;
        for entry in entries.into_iter().rev() {
            state.queued += entry.size;
            state.entries.push_front(entry);
        }
        Ok(())
    }

    /// Takes the next batch: everything queued when it fits in `max_size` requests, else the
    /// first entry and those after it that still fit.
    fn take(&self, max_size: usize) -> PyResult<PyPendingBatch> {
        let mut state = self.lock()?;
        let entries: Vec<Entry> = if state.queued <= max_size {
            state.queued = 0;
            state.entries.drain(..).collect()
        } else {
            let mut taken = Vec::new();
            let mut size = 0;
            while let Some(entry) = state.entries.pop_front() {
                if !taken.is_empty() && size + entry.size > max_size {
                    state.entries.push_front(entry);
                    break;
                }
                size += entry.size;
                taken.push(entry);
            }
            state.queued -= size;
            taken
        };
        Ok(PyPendingBatch::new(entries))
    }

    /// The writer is about to wait on the condition (holding it): the next submission notifies.
    /// Returns whether the queue is empty, decided in the same step, so that no submission
    /// between the two goes unnoticed.
    fn writer_waits(&self) -> PyResult<bool> {
        let mut state = self.lock()?;
        state.writer_idle = true;
        Ok(state.entries.is_empty())
    }

    /// The writer is awake again.
    fn writer_woke(&self) -> PyResult<()> {
        self.lock()?.writer_idle = false;
        Ok(())
    }

    /// Refuses every later submission (those queued are still taken).
    fn close(&self) -> PyResult<()> {
        self.lock()?.closed = true;
        Ok(())
    }

    /// Counts `change` more (or, negative, fewer) requests held outside the queue.
    fn park(&self, change: isize) -> PyResult<()> {
        let mut state = self.lock()?;
        state.parked = state.parked.saturating_add_signed(change);
        Ok(())
    }

    /// Requests queued (a group counts its members), not counting the parked ones.
    #[getter]
    fn queued(&self) -> PyResult<usize> {
        Ok(self.lock()?.queued)
    }

    /// Requests waiting: queued and parked.
    #[getter]
    fn waiting(&self) -> PyResult<usize> {
        let state = self.lock()?;
        Ok(state.queued + state.parked)
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.lock()?.entries.len())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.wakeup)?;
        // Every holder of the lock holds the GIL, so the collector never finds it taken.
        if let Ok(state) = self.state.try_lock() {
            for entry in &state.entries {
                entry.traverse(&visit)?;
            }
        }
        Ok(())
    }
}

/// A batch taken from a `PendingQueue` (or made of entry tuples): its parts for the engine and
/// the delivery of its answers.
#[pyclass(name = "PendingBatch", module = "hlc_oracle", frozen)]
pub struct PyPendingBatch {
    entries: Mutex<Vec<Entry>>,
    /// Requests in the batch (a group counts its members).
    #[pyo3(get)]
    size: usize,
}

impl PyPendingBatch {
    fn new(entries: Vec<Entry>) -> Self {
        let size = entries.iter().map(|entry| entry.size).sum();
        Self {
            entries: Mutex::new(entries),
            size,
        }
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, Vec<Entry>>> {
        self.entries
            .lock()
            .map_err(|_| HlcError::new_err("a commit batch's lock is poisoned"))
    }
}

#[pymethods]
impl PyPendingBatch {
    /// A batch of the entries (tuples `(kind, payload, size, waiter, attempts)`).
    #[new]
    fn py_new(entries: &Bound<'_, PyAny>) -> PyResult<Self> {
        let entries = entries
            .try_iter()?
            .map(|item| Entry::from_tuple(&item?))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self::new(entries))
    }

    /// The entries as tuples `(kind, payload, size, waiter, attempts)`.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let entries = self.lock()?;
        let tuples = entries
            .iter()
            .map(|entry| entry.to_tuple(py))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, tuples)
    }

    /// The batch as the engine's parts (consecutive single and group entries share one list,
    /// each message is a part of its own), and whether every entry is a single request.
    fn parts<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, bool)> {
        let entries = self.lock()?;
        let all_single = entries.iter().all(|entry| entry.kind == SINGLE);
        let parts = PyList::empty(py);
        let mut objects: Option<Bound<'py, PyList>> = None;
        for entry in entries.iter() {
            if entry.kind == STREAM {
                parts.append(entry.payload.bind(py))?;
                objects = None;
                continue;
            }
            let list = match &objects {
                Some(list) => list,
                None => {
                    let list = PyList::empty(py);
                    parts.append(&list)?;
                    objects.insert(list)
                }
            };
            if entry.kind == GROUP {
                for request in entry.payload.bind(py).try_iter()? {
                    list.append(request?)?;
                }
            } else {
                list.append(entry.payload.bind(py))?;
            }
        }
        Ok((parts, all_single))
    }

    /// Hands each waiter its answer (`answers` in the batch's order; an exception instance is
    /// set as the waiter's exception): a blocking caller's at once, an event loop's futures in
    /// one `call_soon_threadsafe` per loop. A closed loop is skipped (nobody waits there).
    fn deliver(&self, py: Python<'_>, answers: &Bound<'_, PyAny>) -> PyResult<()> {
        let entries = std::mem::take(&mut *self.lock()?);
        let count = answers.len()?;
        if count != entries.len() {
            return Err(PyValueError::new_err(format!(
                "a batch of {} entries got {count} answers",
                entries.len()
            )));
        }
        // (loop, its futures and their answers): nearly always one loop.
        let mut by_loop: Vec<(Py<PyAny>, Vec<FutureAnswer>)> = Vec::new();
        for (entry, answer) in entries.into_iter().zip(answers.try_iter()?) {
            let answer = answer?;
            let Some(event_loop) = entry.event_loop else {
                set_answer(entry.waiter.bind(py), &answer)?;
                continue;
            };
            let pair = (entry.waiter, answer.unbind());
            match by_loop
                .iter_mut()
                .find(|(known, _)| known.as_ptr() == event_loop.as_ptr())
            {
                Some((_, pairs)) => pairs.push(pair),
                None => by_loop.push((event_loop, vec![pair])),
            }
        }
        for (event_loop, pairs) in by_loop {
            let resolution = Bound::new(
                py,
                PyFutureResolution {
                    pairs: Mutex::new(pairs),
                },
            )?;
            let scheduled = event_loop
                .bind(py)
                .call_method1(intern!(py, "call_soon_threadsafe"), (resolution,));
            match scheduled {
                Ok(_) => {}
                // A closed loop raises RuntimeError: nobody is waiting there any more.
                Err(err) if err.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.lock()?.len())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(entries) = self.entries.try_lock() {
            for entry in entries.iter() {
                entry.traverse(&visit)?;
            }
        }
        Ok(())
    }
}

/// `waiter.set_exception(answer)` for an exception instance, else `waiter.set_result(answer)`.
fn set_answer(waiter: &Bound<'_, PyAny>, answer: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = waiter.py();
    let method = if answer.is_instance_of::<PyBaseException>() {
        intern!(py, "set_exception")
    } else {
        intern!(py, "set_result")
    };
    waiter.call_method1(method, (answer,)).map(drop)
}

/// A future and its answer.
type FutureAnswer = (Py<PyAny>, Py<PyAny>);

/// One event loop's futures and their answers, resolved by calling it (on that loop).
#[pyclass(name = "FutureResolution", module = "hlc_oracle", frozen)]
pub struct PyFutureResolution {
    pairs: Mutex<Vec<FutureAnswer>>,
}

#[pymethods]
impl PyFutureResolution {
    /// Sets each future's answer; a future cancelled by its caller meanwhile is skipped. Any
    /// other error is raised after the rest were resolved.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let pairs = match self.pairs.lock() {
            Ok(mut pairs) => std::mem::take(&mut *pairs),
            Err(_) => return Err(HlcError::new_err("a resolution's lock is poisoned")),
        };
        let mut first_error = None;
        for (future, answer) in pairs {
            let future = future.bind(py);
            if let Ok(future) = future.cast::<PyCommitFuture>() {
                if let Err(err) = PyCommitFuture::resolve_now(future, answer.into_bound(py)) {
                    first_error.get_or_insert(err);
                }
                continue;
            }
            if let Err(err) = set_answer(future, answer.bind(py)) {
                if !err.is_instance(py, invalid_state_error(py)?) && first_error.is_none() {
                    first_error = Some(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(pairs) = self.pairs.try_lock() {
            for (future, answer) in pairs.iter() {
                visit.call(future)?;
                visit.call(answer)?;
            }
        }
        Ok(())
    }
}

fn cancelled_error(py: Python<'_>, message: Option<&Py<PyAny>>) -> PyErr {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let error = TYPE
        .import(py, "asyncio", "CancelledError")
        .and_then(|error_type| match message {
            Some(message) => error_type.call1((message.clone_ref(py),)),
            None => error_type.call0(),
        });
    match error {
        Ok(error) => PyErr::from_value(error),
        Err(err) => err,
    }
}

fn copy_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static FUNCTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    FUNCTION.import(py, "contextvars", "copy_context")?.call0()
}

/// Hands a done callback's `Exception` to the loop's exception handler, as asyncio's handles do;
/// the error when even that fails (the caller goes on with the other callbacks).
fn report_callback_error(future: &Bound<'_, PyCommitFuture>, err: PyErr) -> PyResult<()> {
    let py = future.py();
    let report = PyDict::new(py);
    report.set_item("message", "Exception in a commit future's done callback")?;
    report.set_item("exception", err.value(py))?;
    report.set_item("future", future)?;
    future
        .get()
        .event_loop
        .bind(py)
        .call_method1(intern!(py, "call_exception_handler"), (report,))
        .map(drop)
}

/// Where a `CommitFuture` stands.
enum FutureState {
    Pending,
    Result(Py<PyAny>),
    Exception(Py<PyAny>),
    /// Cancelled, with the message given to `cancel`.
    Cancelled(Option<Py<PyAny>>),
}

/// A done callback and the `contextvars.Context` it runs in.
type DoneCallback = (Py<PyAny>, Py<PyAny>);

/// A future's done callbacks in the order added; the first one inline (nearly always the only
/// one: the awaiting task's wake-up), so that a future allocates nothing more for it.
#[derive(Default)]
struct Callbacks {
    first: Option<DoneCallback>,
    /// Empty while `first` is None.
    rest: Vec<DoneCallback>,
}

impl Callbacks {
    fn push(&mut self, callback: DoneCallback) {
        if self.first.is_none() {
            self.first = Some(callback);
        } else {
            self.rest.push(callback);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &DoneCallback> {
        self.first.iter().chain(&self.rest)
    }
}

impl IntoIterator for Callbacks {
    type Item = DoneCallback;
    type IntoIter =
        std::iter::Chain<std::option::IntoIter<DoneCallback>, std::vec::IntoIter<DoneCallback>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

struct FutureInner {
    state: FutureState,
    callbacks: Callbacks,
    /// asyncio's `_asyncio_future_blocking`: set while a task awaits the future.
    blocking: bool,
    /// asyncio's `_log_traceback`: an exception was set and nobody has retrieved it yet
    /// (`result()`, `exception()`, an await). Dropped so, the future reports it.
    log_traceback: bool,
}

/// The answer of one `submit`: an asyncio-compatible future (`asyncio.isfuture` is true: it can
/// be awaited, given to `wait_for`, `ensure_future`, `gather`, `shield`, cancelled). Unlike
/// `asyncio.Future`, its answer runs its done callbacks (an awaiting task's wake-up) at once,
/// inside the one call of its loop that resolves the whole batch (`FutureResolution`), instead
/// of one `call_soon` handle each; a cancellation, or a callback added once it is done, is
/// scheduled with `call_soon` as asyncio does. Like `asyncio.Future`, a future dropped with an
/// exception nobody retrieved reports it to its loop's exception handler (see its `Drop`).
#[pyclass(name = "CommitFuture", module = "hlc_oracle", frozen)]
pub struct PyCommitFuture {
    event_loop: Py<PyAny>,
    inner: Mutex<FutureInner>,
}

impl PyCommitFuture {
    fn new(event_loop: Py<PyAny>) -> Self {
        Self::in_state(event_loop, FutureState::Pending)
    }

    fn in_state(event_loop: Py<PyAny>, state: FutureState) -> Self {
        Self {
            event_loop,
            inner: Mutex::new(FutureInner {
                state,
                callbacks: Callbacks::default(),
                blocking: false,
                log_traceback: false,
            }),
        }
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, FutureInner>> {
        self.inner
            .lock()
            .map_err(|_| HlcError::new_err("a commit future's lock is poisoned"))
    }

    /// Moves a pending future to `state`; returns its callbacks, or None when it was done.
    fn complete(&self, state: FutureState) -> PyResult<Option<Callbacks>> {
        let mut inner = self.lock()?;
        if !matches!(inner.state, FutureState::Pending) {
            return Ok(None);
        }
        inner.log_traceback = matches!(state, FutureState::Exception(_));
        inner.state = state;
        Ok(Some(std::mem::take(&mut inner.callbacks)))
    }

    /// Gives a pending future its answer (an exception instance is set as its exception) and
    /// runs its callbacks now: called on its loop, by that loop. A future cancelled meanwhile
    /// is left as it is. A callback's `Exception` goes to the loop's exception handler (as
    /// asyncio's handles do); any other error is raised after the rest ran.
    fn resolve_now(future: &Bound<'_, Self>, answer: Bound<'_, PyAny>) -> PyResult<()> {
        let state = if answer.is_instance_of::<PyBaseException>() {
            FutureState::Exception(answer.unbind())
        } else {
            FutureState::Result(answer.unbind())
        };
        let Some(callbacks) = future.get().complete(state)? else {
            return Ok(());
        };
        let py = future.py();
        let mut first_error = None;
        for (callback, context) in callbacks {
            let ran = context
                .bind(py)
                .call_method1(intern!(py, "run"), (callback.bind(py), future));
            let Err(err) = ran else { continue };
            let unreported = if err.is_instance_of::<PyException>(py) {
                report_callback_error(future, err).err()
            } else {
                Some(err)
            };
            if let Some(err) = unreported {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Schedules `callbacks` on the future's loop, as asyncio schedules a done future's.
    fn schedule(future: &Bound<'_, Self>, callbacks: Callbacks) -> PyResult<()> {
        let py = future.py();
        let event_loop = future.get().event_loop.bind(py);
        for (callback, context) in callbacks {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "context"), context)?;
            event_loop.call_method(intern!(py, "call_soon"), (callback, future), Some(&kwargs))?;
        }
        Ok(())
    }
}

#[pymethods]
impl PyCommitFuture {
    /// The event loop the future belongs to.
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    fn done(&self) -> PyResult<bool> {
        Ok(!matches!(self.lock()?.state, FutureState::Pending))
    }

    fn cancelled(&self) -> PyResult<bool> {
        Ok(matches!(self.lock()?.state, FutureState::Cancelled(_)))
    }

    /// The answer; raises the exception set, `CancelledError` when cancelled, and
    /// `asyncio.InvalidStateError` while pending.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut inner = self.lock()?;
        inner.log_traceback = false;
        match &inner.state {
            FutureState::Pending => Err(PyErr::from_type(
                invalid_state_error(py)?.clone(),
                "Result is not set.",
            )),
            FutureState::Result(value) => Ok(value.clone_ref(py)),
            FutureState::Exception(error) => Err(PyErr::from_value(error.bind(py).clone())),
            FutureState::Cancelled(message) => Err(cancelled_error(py, message.as_ref())),
        }
    }

    /// The exception set, or None; `CancelledError` when cancelled, `InvalidStateError` while
    /// pending.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut inner = self.lock()?;
        inner.log_traceback = false;
        match &inner.state {
            FutureState::Pending => Err(PyErr::from_type(
                invalid_state_error(py)?.clone(),
                "Exception is not set.",
            )),
            FutureState::Result(_) => Ok(None),
            FutureState::Exception(error) => Ok(Some(error.clone_ref(py))),
            FutureState::Cancelled(message) => Err(cancelled_error(py, message.as_ref())),
        }
    }

    /// Runs `callback(future)` in `context` (a copy of the current one by default) once the
    /// future is done: scheduled at once when it is done already.
    #[pyo3(signature = (callback, *, context = None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let context = match context {
            Some(context) if !context.is_none() => context,
            _ => copy_context(py)?,
        };
        let pair = (callback.unbind(), context.unbind());
        {
            let mut inner = slf.get().lock()?;
            if matches!(inner.state, FutureState::Pending) {
                inner.callbacks.push(pair);
                return Ok(());
            }
        }
        let mut callbacks = Callbacks::default();
        callbacks.push(pair);
        Self::schedule(slf, callbacks)
    }

    /// Removes every instance of `callback` from the done callbacks; returns how many.
    fn remove_done_callback(&self, callback: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = callback.py();
        // Compared outside the lock: `==` may run Python code.
        let callbacks = std::mem::take(&mut self.lock()?.callbacks);
        let mut kept = Callbacks::default();
        let mut removed = 0;
        let mut failed = None;
        for (known, context) in callbacks {
            // After a failed comparison, the rest are kept as they were.
            match failed.is_none().then(|| known.bind(py).eq(callback)) {
                Some(Ok(true)) => removed += 1,
                Some(Err(err)) => {
                    failed = Some(err);
                    kept.push((known, context));
                }
                Some(Ok(false)) | None => kept.push((known, context)),
            }
        }
        let mut inner = self.lock()?;
        for added_meanwhile in std::mem::take(&mut inner.callbacks) {
            kept.push(added_meanwhile);
        }
        inner.callbacks = kept;
        failed.map_or(Ok(removed), Err)
    }

    /// Cancels a pending future (its callbacks are scheduled); False when it was done.
    #[pyo3(signature = (msg = None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Bound<'_, PyAny>>) -> PyResult<bool> {
        let message = msg.filter(|msg| !msg.is_none()).map(Bound::unbind);
        match slf.get().complete(FutureState::Cancelled(message))? {
            Some(callbacks) => {
                Self::schedule(slf, callbacks)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    #[getter(_asyncio_future_blocking)]
    fn get_blocking(&self) -> PyResult<bool> {
        Ok(self.lock()?.blocking)
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(&self, value: bool) -> PyResult<()> {
        self.lock()?.blocking = value;
        Ok(())
    }

    /// asyncio's `_log_traceback`: whether the future reports its exception when it is dropped;
    /// it can only be set to False (as asyncio's).
    #[getter(_log_traceback)]
    fn get_log_traceback(&self) -> PyResult<bool> {
        Ok(self.lock()?.log_traceback)
    }

    #[setter(_log_traceback)]
    fn set_log_traceback(&self, value: bool) -> PyResult<()> {
        if value {
            return Err(PyValueError::new_err(
                "_log_traceback can only be set to False",
            ));
        }
        self.lock()?.log_traceback = false;
        Ok(())
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Awaiting: yields the future itself to the task while pending (as asyncio's futures do),
    /// then returns the answer (raises `StopIteration(answer)`) or raises its exception.
    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, Self>>> {
        let py = slf.py();
        let value = {
            let mut inner = slf.get().lock()?;
            match &inner.state {
                FutureState::Pending => {
                    inner.blocking = true;
                    return Ok(Some(slf.clone()));
                }
                FutureState::Result(value) => value.clone_ref(py).into_bound(py),
                FutureState::Exception(error) => {
                    let error = PyErr::from_value(error.bind(py).clone());
                    inner.log_traceback = false;
                    return Err(error);
                }
                FutureState::Cancelled(message) => {
                    return Err(cancelled_error(py, message.as_ref()))
                }
            }
        };
        if value.is_instance_of::<PyTuple>() || value.is_instance_of::<PyBaseException>() {
            return Err(PyStopIteration::new_err((value.unbind(),)));
        }
        // As CPython's own futures return their result (`_PyGen_SetStopIterationValue`): the
        // value is the pending `StopIteration`'s, which the awaiting frame takes without ever
        // making the exception (no instance per answer); a `tp_iternext` returning NULL with
        // the error set (what `None` here returns) is the end of the iteration with that value.
        // SAFETY: the thread is attached; `value` is a live object, neither a tuple nor an
        // exception (so it is taken as the value itself), borrowed for the call.
        unsafe { ffi::PyErr_SetObject(ffi::PyExc_StopIteration, value.as_ptr()) };
        Ok(None)
    }

    fn __repr__(&self) -> PyResult<&'static str> {
        Ok(match self.lock()?.state {
            FutureState::Pending => "<CommitFuture pending>",
            FutureState::Result(_) => "<CommitFuture finished>",
            FutureState::Exception(_) => "<CommitFuture finished with an exception>",
            FutureState::Cancelled(_) => "<CommitFuture cancelled>",
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        if let Ok(inner) = self.inner.try_lock() {
            match &inner.state {
                FutureState::Result(object) | FutureState::Exception(object) => {
                    visit.call(object)?;
                }
                FutureState::Cancelled(Some(message)) => visit.call(message)?,
                FutureState::Pending | FutureState::Cancelled(None) => {}
            }
            for (callback, context) in inner.callbacks.iter() {
                visit.call(callback)?;
                visit.call(context)?;
            }
        }
        Ok(())
    }
}

impl Drop for PyCommitFuture {
    /// What `asyncio.Future.__del__` does: a future dropped with an exception that nobody
    /// retrieved (`result()`, `exception()`, an await) hands it to its loop's exception handler,
    /// with the keys "message", "exception" and "future", so that a refusal no caller awaited
    /// does not vanish. The future itself is being destroyed (a Rust `Drop` cannot resurrect it,
    /// as Python's `__del__` may), so "future" is a stand-in: a finished `CommitFuture` of the
    /// same loop with the same exception. Nothing is reported while the interpreter shuts down,
    /// or when the thread cannot take the GIL; an error of the report itself goes to
    /// `sys.unraisablehook`, as an error in a `__del__` does. Never panics.
    fn drop(&mut self) {
        let Ok(inner) = self.inner.get_mut() else {
            return;
        };
        if !inner.log_traceback {
            return;
        }
        let FutureState::Exception(error) = &inner.state else {
            return;
        };
        let event_loop = &self.event_loop;
        Python::try_attach(|py| {
            // The report runs Python code: an exception being raised meanwhile waits for it.
            let raised = PyErr::take(py);
            if let Err(err) = report_never_retrieved(py, event_loop, error) {
                err.write_unraisable(py, None);
            }
            if let Some(raised) = raised {
                raised.restore(py);
            }
        });
    }
}

/// Reports a dropped future's exception that was never retrieved (see `PyCommitFuture`'s `Drop`).
fn report_never_retrieved(
    py: Python<'_>,
    event_loop: &Py<PyAny>,
    error: &Py<PyAny>,
) -> PyResult<()> {
    if interpreter_finalizing(py) {
        return Ok(());
    }
    let stand_in = PyCommitFuture::in_state(
        event_loop.clone_ref(py),
        FutureState::Exception(error.clone_ref(py)),
    );
    let report = PyDict::new(py);
    report.set_item("message", "CommitFuture exception was never retrieved")?;
    report.set_item("exception", error.bind(py))?;
    report.set_item("future", Bound::new(py, stand_in)?)?;
    event_loop
        .bind(py)
        .call_method1(intern!(py, "call_exception_handler"), (report,))
        .map(drop)
}

/// `sys.is_finalizing()`: the interpreter is shutting down (the loop and logging may be gone).
/// A check that fails counts as yes: late in the shutdown even importing `sys` fails.
fn interpreter_finalizing(py: Python<'_>) -> bool {
    static FUNCTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    FUNCTION
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("sys")?.getattr("is_finalizing")?.unbind())
        })
        .and_then(|function| function.bind(py).call0()?.is_truthy())
        .unwrap_or(true)
}
