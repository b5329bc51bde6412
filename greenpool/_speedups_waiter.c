/* greenpool._speedups_waiter: Entry and PoolHubWaiter of greenpool._waiter in C.
 *
 * Why C: every park of every cross-hub primitive (greenpool.sync's locks,
 * conditions and queues, the patched threading.Event, gevent's queues and
 * events after greenpool.monkey.patch_all()) makes an Entry, and on a pool hub
 * its waiter is a PoolHubWaiter. In Python that is four frames and a dozen
 * attribute lookups (~470 ns an entry) where gevent makes one Cython Waiter
 * (~35 ns); one park a WebSocket message is what kept a greenpool hub's echo
 * below gevent's. Here the pool-hub case is C; every other context (a plain
 * thread, a hub greenpool does not own, a loop callback, a greenlet being torn
 * down) calls the Python function that chooses its waiter, which stays the one
 * description of those rules (and the pure-Python twin, with
 * GREENPOOL_PURE_PYTHON=1).
 */
#include "_speedups_common.h"
#include <pythread.h>

static PyObject *get_hub_if_exists, *getcurrent, *hub_type, *gevent_waiter_type;
static PyObject *slow_waiter, *timed_get;
static PyObject *str_greenpool_hub, *str_wakeup, *str_gevent_hub, *str_thread_ident;
static PyObject *str_get, *str_switch, *str_loop, *str_run_callback, *str_call_soon;
static PyObject *str_hub_attr;

/* ---- PoolHubWaiter ---- */

typedef struct {
    PyObject_HEAD
    PyObject *hub;      /* the greenpool hub (greenpool.hub.PoolHub) */
    PyObject *waiter;   /* a gevent.hub.Waiter of its gevent hub */
    unsigned long ident;  /* the hub's thread */
    char woken;
} HubWaiter;

static PyTypeObject HubWaiterType;

static int
configured(void)
{
    if (get_hub_if_exists == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "greenpool._speedups_waiter: configure() first");
        return 0;
    }
    return 1;
}

/* A waiter for ``hub`` (a PoolHub) whose gevent hub is ``gevent_hub``,
 * running in the thread ``tid``. */
static PyObject *
hub_waiter_make(PyObject *hub, PyObject *gevent_hub, unsigned long tid)
{
    PyObject *waiter = PyObject_CallOneArg(gevent_waiter_type, gevent_hub);
    if (waiter == NULL)
        return NULL;
    HubWaiter *self = PyObject_GC_New(HubWaiter, &HubWaiterType);
    if (self == NULL) {
        Py_DECREF(waiter);
        return NULL;
    }
    self->hub = Py_NewRef(hub);
    self->waiter = waiter;
    self->ident = tid;
    self->woken = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
hub_waiter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *hub;
    static char *kwlist[] = {"hub", NULL};
    if (!configured() || !PyArg_ParseTupleAndKeywords(args, kwargs, "O:PoolHubWaiter", kwlist, &hub))
        return NULL;
    PyObject *ident = PyObject_GetAttr(hub, str_thread_ident);
    if (ident == NULL)
        return NULL;
    unsigned long tid = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (tid == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *gevent_hub = PyObject_GetAttr(hub, str_gevent_hub);
    if (gevent_hub == NULL)
        return NULL;
    PyObject *self = hub_waiter_make(hub, gevent_hub, tid);
    Py_DECREF(gevent_hub);
    return self;
}

static int
hub_waiter_traverse(HubWaiter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->hub);
    Py_VISIT(self->waiter);
    return 0;
}

static int
hub_waiter_clear(HubWaiter *self)
{
    Py_CLEAR(self->hub);
    Py_CLEAR(self->waiter);
    return 0;
}

static void
hub_waiter_dealloc(HubWaiter *self)
{
    PyObject_GC_UnTrack(self);
    hub_waiter_clear(self);
    PyObject_GC_Del(self);
}

/* wait(timeout): also what other extensions call through the capsule (a
 * C frame less between a parked greenlet and its switch: its saved stack). */
static PyObject *
hub_waiter_park(PyObject *waiter_obj, PyObject *timeout)
{
    HubWaiter *self = (HubWaiter *)waiter_obj;
    PyObject *a[1] = {timeout};
    if (self->woken)
        Py_RETURN_TRUE;
    if (self->waiter == NULL)
        return PyErr_Format(PyExc_ValueError, "PoolHubWaiter: cleared");
    PyObject *waiter = Py_NewRef(self->waiter);
    PyObject *r;
    if (a[0] == Py_None) {
        /* park until the wake-up's switch (no Timeout to make, enter and close) */
        r = PyObject_VectorcallMethod(str_get, &waiter, 1, NULL);
    } else {
        PyObject *call[2] = {waiter, a[0]};
        r = PyObject_Vectorcall(timed_get, call, 2, NULL);
    }
    Py_DECREF(waiter);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    return PyBool_FromLong(self->woken);
}

static PyObject *
hub_waiter_wait(HubWaiter *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1] = {Py_None};
    if (unpack("wait", names, 1, 0, args, nargs, kwnames, a) < 0)
        return NULL;
    return hub_waiter_park((PyObject *)self, a[0]);
}

static PyObject *
hub_waiter_wake(HubWaiter *self, PyObject *unused)
{
    if (self->woken)  /* idempotent: the flag is tested and set holding the GIL */
        Py_RETURN_NONE;
    self->woken = 1;
    if (self->waiter == NULL || self->hub == NULL)
        Py_RETURN_NONE;
    PyObject *hub = Py_NewRef(self->hub);
    PyObject *sw = PyObject_GetAttr(self->waiter, str_switch);
    PyObject *r = NULL;
    if (sw == NULL)
        goto done;
    if (PyThread_get_thread_ident() == self->ident) {
        /* from the hub's own thread: a loop callback, as gevent's own wake-ups */
        PyObject *loop = PyObject_GetAttr(hub, str_loop);
        if (loop == NULL)
            goto done;
        PyObject *call[3] = {loop, sw, Py_None};
        r = PyObject_VectorcallMethod(str_run_callback, call, 3, NULL);
        Py_DECREF(loop);
    } else {
        PyObject *call[3] = {hub, sw, Py_None};
        r = PyObject_VectorcallMethod(str_call_soon, call, 3, NULL);
    }
done:
    Py_XDECREF(sw);
    Py_DECREF(hub);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef hub_waiter_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))hub_waiter_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None) -> bool: park this greenlet until woken (True) or timeout (False)."},
    {"wake", (PyCFunction)hub_waiter_wake, METH_NOARGS,
     "wake(): idempotent, from any thread."},
    {NULL}
};

static PyMemberDef hub_waiter_members[] = {
    {"_hub", T_OBJECT, offsetof(HubWaiter, hub), READONLY, "the greenpool hub"},
    {"_waiter", T_OBJECT, offsetof(HubWaiter, waiter), READONLY, "its gevent Waiter"},
    {"_woken", T_BOOL, offsetof(HubWaiter, woken), 0, "woken (wake() was called)"},
    {NULL}
};

static PyTypeObject HubWaiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpool._speedups_waiter.PoolHubWaiter",
    .tp_doc = "Parks a greenlet on its greenpool hub; woken through the hub's mailbox "
              "(see greenpool._waiter.PoolHubWaiter, its pure-Python twin).",
    .tp_basicsize = sizeof(HubWaiter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = hub_waiter_new,
    .tp_dealloc = (destructor)hub_waiter_dealloc,
    .tp_traverse = (traverseproc)hub_waiter_traverse,
    .tp_clear = (inquiry)hub_waiter_clear,
    .tp_methods = hub_waiter_methods,
    .tp_members = hub_waiter_members,
};

/* ---- Entry ---- */

typedef struct {
    PyObject_HEAD
    PyObject *waiter;
    PyObject *value;
    PyObject *place;
} Entry;

/* The calling greenlet's PoolHubWaiter when it runs on a pool hub (not in
 * the hub's own greenlet); NULL without an error for any other context. */
static PyObject *
pool_hub_waiter(void)
{
    PyObject *gevent_hub = PyObject_CallNoArgs(get_hub_if_exists);
    if (gevent_hub == NULL || gevent_hub == Py_None) {
        Py_XDECREF(gevent_hub);
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *current = PyObject_CallNoArgs(getcurrent);
    if (current == NULL || current == gevent_hub
        || PyObject_TypeCheck(current, (PyTypeObject *)hub_type))
        goto done;
    PyObject *hub = PyObject_GetAttr(gevent_hub, str_greenpool_hub);
    if (hub == NULL || hub == Py_None) {
        Py_XDECREF(hub);
        goto done;
    }
    /* a hub whose wake-up is gone (a child after os.fork()): Python decides */
    PyObject *wakeup = PyObject_GetAttr(hub, str_wakeup);
    if (wakeup != NULL && wakeup != Py_None)
        /* the calling thread's gevent hub: the pool hub runs in this thread */
        result = hub_waiter_make(hub, gevent_hub, PyThread_get_thread_ident());
    Py_XDECREF(wakeup);
    Py_DECREF(hub);
done:
    Py_XDECREF(current);
    Py_DECREF(gevent_hub);
    if (result == NULL)
        PyErr_Clear();  /* whatever went wrong, the Python rules decide (and raise) */
    return result;
}

static PyObject *
entry_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    static const char *const names[] = {"value"};
    PyObject *a[1] = {Py_None};
    if (!configured()
        || unpack("Entry", names, 1, 0, args, PyVectorcall_NARGS(nargsf), kwnames, a) < 0)
        return NULL;
    PyObject *waiter = pool_hub_waiter();
    PyObject *place;
    if (waiter != NULL) {
        place = Py_NewRef(((HubWaiter *)waiter)->hub);
    } else {
        waiter = PyObject_CallNoArgs(slow_waiter);
        if (waiter == NULL)
            return NULL;
        /* where it runs: its hub (one thread runs all its greenlets), or itself */
        place = PyObject_GetAttr(waiter, str_hub_attr);
        if (place == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                Py_DECREF(waiter);
                return NULL;
            }
            PyErr_Clear();
            place = Py_NewRef(waiter);
        }
    }
    Entry *self = PyObject_GC_New(Entry, (PyTypeObject *)type);
    if (self == NULL) {
        Py_DECREF(waiter);
        Py_DECREF(place);
        return NULL;
    }
    self->waiter = waiter;
    self->value = Py_NewRef(a[0]);
    self->place = place;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
entry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    /* Entry.__new__(Entry): an empty entry the caller fills in (an offer nobody waits for) */
    Entry *self = PyObject_GC_New(Entry, type);
    if (self == NULL)
        return NULL;
    self->waiter = Py_NewRef(Py_None);
    self->value = Py_NewRef(Py_None);
    self->place = Py_NewRef(Py_None);
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
entry_traverse(Entry *self, visitproc visit, void *arg)
{
    Py_VISIT(self->waiter);
    Py_VISIT(self->value);
    Py_VISIT(self->place);
    return 0;
}

static int
entry_clear(Entry *self)
{
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->value);
    Py_CLEAR(self->place);
    return 0;
}

static void
entry_dealloc(Entry *self)
{
    PyObject_GC_UnTrack(self);
    entry_clear(self);
    PyObject_GC_Del(self);
}

static PyMemberDef entry_members[] = {
    {"waiter", T_OBJECT, offsetof(Entry, waiter), 0, "the waiter, fit for the caller's context"},
    {"value", T_OBJECT, offsetof(Entry, value), 0, "what a hand-off gives it"},
    {"place", T_OBJECT, offsetof(Entry, place), 0, "where it runs: its hub, or its waiter"},
    {NULL}
};

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpool._speedups_waiter.Entry",
    .tp_doc = "Entry(value=None): one parked caller (see greenpool._waiter.Entry, its "
              "pure-Python twin).",
    .tp_basicsize = sizeof(Entry),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = entry_new,
    .tp_vectorcall = entry_vectorcall,
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_traverse = (traverseproc)entry_traverse,
    .tp_clear = (inquiry)entry_clear,
    .tp_members = entry_members,
};

/* configure(get_hub_if_exists, getcurrent, gevent_hub_type, gevent_waiter_type,
 *           slow_waiter, timed_get) */
static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(get_hub_if_exists, getcurrent, gevent_hub_type, "
                        "gevent_waiter_type, slow_waiter, timed_get)");
        return NULL;
    }
    Py_XSETREF(get_hub_if_exists, Py_NewRef(args[0]));
    Py_XSETREF(getcurrent, Py_NewRef(args[1]));
    Py_XSETREF(hub_type, Py_NewRef(args[2]));
    Py_XSETREF(gevent_waiter_type, Py_NewRef(args[3]));
    Py_XSETREF(slow_waiter, Py_NewRef(args[4]));
    Py_XSETREF(timed_get, Py_NewRef(args[5]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(get_hub_if_exists, getcurrent, gevent_hub_type, gevent_waiter_type, "
     "slow_waiter, timed_get): what Entry and PoolHubWaiter call (see greenpool._waiter)."},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "greenpool._speedups_waiter",
    "C Entry and PoolHubWaiter of greenpool._waiter (optional: see that module).",
    -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups_waiter(void)
{
    struct { PyObject **var; const char *s; } strings[] = {
        {&str_greenpool_hub, "greenpool_hub"}, {&str_wakeup, "_wakeup"},
        {&str_gevent_hub, "gevent_hub"}, {&str_thread_ident, "thread_ident"},
        {&str_get, "get"}, {&str_switch, "switch"}, {&str_loop, "loop"},
        {&str_run_callback, "run_callback"}, {&str_call_soon, "call_soon_threadsafe"},
        {&str_hub_attr, "_hub"},
    };
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if ((*strings[i].var = PyUnicode_InternFromString(strings[i].s)) == NULL)
            return NULL;
    if (PyType_Ready(&HubWaiterType) < 0 || PyType_Ready(&EntryType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    static GreenpoolWaiterAPI api;
    api.hub_waiter_type = &HubWaiterType;
    api.park = hub_waiter_park;
    PyObject *capsule = PyCapsule_New(&api, GREENPOOL_WAITER_CAPSULE, NULL);
    if (capsule == NULL || PyModule_AddObject(m, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "PoolHubWaiter", (PyObject *)&HubWaiterType) < 0
        || PyModule_AddObjectRef(m, "Entry", (PyObject *)&EntryType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
