//! Classes whose instances the cyclic collector never sees.
//!
//! pyo3 makes every `#[pyclass]` a GC type, so each instance is tracked: it counts toward the
//! young generation's survivors and every full collection traverses it while it lives (a client
//! holding a million transactions pays for a million traversals per full collection). An object
//! that holds no Python object cannot be part of a reference cycle, so the collector has nothing
//! to find through it: such a class allocates its instances untracked, and, where CPython's
//! layout is known, without counting them toward the next collection.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyClass;

/// The `tp_alloc` of an untracked class: the default allocation, then untracked at once. Every
/// construction path goes through it (Python calling the class, and pyo3 making an instance in
/// Rust: both allocate through the type's `tp_alloc`). Used where `alloc_uncounted`'s layout is
/// not known.
///
/// # Safety
/// Called by CPython as a `tp_alloc`, with a valid type and the thread attached.
unsafe extern "C" fn alloc_untracked(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: the caller's contract is `PyType_GenericAlloc`'s.
    let obj = unsafe { ffi::PyType_GenericAlloc(subtype, nitems) };
    if !obj.is_null() {
        // SAFETY: `obj` is a live object of a GC type, just tracked by `PyType_GenericAlloc`.
        unsafe { ffi::PyObject_GC_UnTrack(obj.cast()) };
    }
    obj
}

/// The collector's header in front of each object of a GC type (`PyGC_Head`: two words, both
/// zero while the object is untracked), in the CPython versions `uncounted_layout` accepts.
const GC_HEADER: usize = 2 * std::mem::size_of::<usize>();

/// The `tp_alloc` of an untracked class whose layout `uncounted_layout` accepted: what
/// `PyType_GenericAlloc` does, without linking the object to the collector. The collector's
/// header is left zero (untracked), and the allocation is not counted toward the young
/// generation's threshold: `PyType_GenericAlloc` counts every GC-type allocation, tracked or
/// not, so a million answers or timestamps made in a burst triggered collections of everything
/// else young (a fifth of the group-commit writer's instructions a transaction). Freed as any
/// object of a GC type (`PyObject_GC_Del`, which takes the header off and uncounts it, floored at
/// zero).
///
/// # Safety
/// Called by CPython as a `tp_alloc`, with a valid type accepted by `uncounted_layout` and the
/// thread attached.
unsafe extern "C" fn alloc_uncounted(
    subtype: *mut ffi::PyTypeObject,
    _nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: `subtype` is a live type (the caller's contract) with `tp_itemsize` 0, so an
    // instance is `tp_basicsize` bytes (already aligned by CPython) behind the header.
    let size = unsafe { (*subtype).tp_basicsize } as usize;
    // SAFETY: a plain allocation with the GIL held.
    let memory = unsafe { ffi::PyObject_Malloc(GC_HEADER + size) }.cast::<u8>();
    if memory.is_null() {
        // SAFETY: the thread is attached.
        return unsafe { ffi::PyErr_NoMemory() };
    }
    // SAFETY: `memory` holds `GC_HEADER + size` bytes: a zero header (untracked) and a zero
    // object, which `PyObject_Init` gives its type (a new reference to a heap type) and its
    // reference count, as `PyType_GenericAlloc` does.
    unsafe {
        std::ptr::write_bytes(memory, 0, GC_HEADER + size);
        ffi::PyObject_Init(memory.add(GC_HEADER).cast(), subtype)
    }
}

/// Whether `alloc_uncounted` knows the layout of `type_ptr`'s instances: CPython 3.11 to 3.13
/// with the GIL (the collector's header is two words in front of the object), a type with no
/// items and no managed dict or weak references (no other words in front).
///
/// # Safety
/// `type_ptr` is a live type object.
unsafe fn uncounted_layout(type_ptr: *mut ffi::PyTypeObject) -> bool {
    // A free-threaded build's object header is larger (and its objects have no `PyGC_Head`).
    if std::mem::size_of::<ffi::PyObject>() != 2 * std::mem::size_of::<usize>() {
        return false;
    }
    // SAFETY: a static of the running interpreter.
    let version = unsafe { ffi::Py_Version } >> 16;
    // SAFETY: `type_ptr` is live (the caller's contract).
    let (flags, itemsize) = unsafe { (ffi::PyType_GetFlags(type_ptr), (*type_ptr).tp_itemsize) };
    // `Py_TPFLAGS_MANAGED_DICT` and, from 3.12, `Py_TPFLAGS_MANAGED_WEAKREF` (1 << 3).
    let preheader = ffi::Py_TPFLAGS_MANAGED_DICT | 1 << 3;
    (0x030B..=0x030D).contains(&version)
        && itemsize == 0
        && flags & preheader == 0
        && flags & ffi::Py_TPFLAGS_HAVE_GC != 0
}

/// Adds the class `T` to `module` with its instances allocated untracked.
///
/// Only for a class that holds no Python object (no `Py<...>`, no `PyObject`, not even inside a
/// Rust container): the collector could not see a cycle through its instances. The class must
/// not be subclassable either (a Python subclass would inherit the allocator and could hold a
/// `__dict__`): that is checked here.
pub(crate) fn add_untracked_class<T: PyClass>(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let class = module.py().get_type::<T>();
    let type_ptr = class.as_type_ptr();
    // SAFETY: `type_ptr` is the live type object held by `class`.
    if unsafe { ffi::PyType_GetFlags(type_ptr) } & ffi::Py_TPFLAGS_BASETYPE != 0 {
        return Err(PyTypeError::new_err(format!(
            "{} is subclassable: its instances cannot be allocated untracked",
            class.name()?
        )));
    }
    // SAFETY: the type object is live and ours (a heap type pyo3 made for `T`); its instances
    // hold no Python object (the caller's contract), so they need no tracking, and no subclass
    // inherits the allocator (checked above). Instances made before this line stay tracked,
    // which is harmless.
    unsafe {
        (*type_ptr).tp_alloc = Some(if uncounted_layout(type_ptr) {
            alloc_uncounted
        } else {
            alloc_untracked
        });
    }
    module.add_class::<T>()
}
