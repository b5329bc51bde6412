/* Helpers shared by greenpool's C extensions (greenpool/_speedups*.c).
 *
 * Why a header: each extension is its own module (one per concept, each
 * optional), and these small pieces are the same in all of them: argument
 * unpacking for METH_FASTCALL | METH_KEYWORDS functions, and reading a Python
 * class's __slots__ at their offsets (as their member descriptors would).
 */
#ifndef GREENPOOL_SPEEDUPS_COMMON_H
#define GREENPOOL_SPEEDUPS_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Unpack (names[0], names[1], ...) from vectorcall arguments; defaults stay. */
static inline int
unpack(const char *fname, const char *const *names, Py_ssize_t nnames, Py_ssize_t required,
       PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)",
                     fname, nnames, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            Py_ssize_t i = 0;
            for (; i < nnames; i++)
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                    break;
            if (i == nnames) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (i < nargs) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[i]);
                return -1;
            }
            out[i] = args[nargs + k];
        }
    }
    for (Py_ssize_t i = 0; i < required; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    return 0;
}

/* ``method(self, *args, **kwargs)`` for a METH_FASTCALL | METH_KEYWORDS call's arguments. */
static inline PyObject *
call_with_self(PyObject *method, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    PyObject *small[8];
    PyObject **call = total < 8 ? small : PyMem_New(PyObject *, total + 1);
    if (call == NULL)
        return PyErr_NoMemory();
    call[0] = self;
    for (Py_ssize_t i = 0; i < total; i++)
        call[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(method, call, nargs + 1, kwnames);
    if (call != small)
        PyMem_Free(call);
    return r;
}

/* The object in the slot at ``offset`` of ``obj``: borrowed; NULL if unset. */
static inline PyObject *
slot(PyObject *obj, Py_ssize_t offset)
{
    return *(PyObject **)((char *)obj + offset);
}

/* The offset of ``type``'s __slots__ member ``name`` (found along its MRO), or -1 raised. */
static inline Py_ssize_t
member_offset(PyObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL)
        return -1;
    int ok = PyObject_TypeCheck(descr, &PyMemberDescr_Type);
    PyMemberDef *member = ok ? ((PyMemberDescrObject *)descr)->d_member : NULL;
    Py_DECREF(descr);  /* the type keeps it */
    if (member == NULL) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member",
                     ((PyTypeObject *)type)->tp_name, name);
        return -1;
    }
    if (member->type != T_OBJECT_EX && member->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot",
                     ((PyTypeObject *)type)->tp_name, name);
        return -1;
    }
    return member->offset;
}

/* What greenpool._speedups_waiter offers the other extensions (its _C_API
 * capsule): parking on a PoolHubWaiter without a method call in between. */
#define GREENPOOL_WAITER_CAPSULE "greenpool._speedups_waiter._C_API"
typedef struct {
    PyTypeObject *hub_waiter_type;
    PyObject *(*park)(PyObject *waiter, PyObject *timeout);  /* waiter.wait(timeout) */
} GreenpoolWaiterAPI;

/* A lock for critical sections that run no Python code, or almost none: a
 * flag tested and set holding the GIL (so atomic). Held by another thread
 * only while that thread runs Python code inside one (which needs the GIL),
 * so a taker waits yielding the GIL and the CPU. */
#include <sched.h>
#include <pythread.h>

static inline void
gil_lock(char *busy)
{
    while (*busy) {
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
    *busy = 1;
}

static inline void
gil_unlock(char *busy)
{
    *busy = 0;
}

/* The same, reentrant by the thread inside (a GC run there may call a
 * __del__ or weakref callback that comes back: a put(), an Event's set()). */
typedef struct {
    unsigned long owner;  /* the thread inside */
    int depth;            /* 0: free */
} GilRLock;

static inline void
gil_rlock(GilRLock *lock)
{
    unsigned long me = PyThread_get_thread_ident();
    if (lock->depth > 0 && lock->owner == me) {
        lock->depth++;
        return;
    }
    while (lock->depth > 0) {
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
    lock->owner = me;
    lock->depth = 1;
}

static inline void
gil_runlock(GilRLock *lock)
{
    lock->depth--;
}

#endif
