/* greenpool._speedups_gevent: put()/get() of greenpool's cross-hub gevent queues in C.
 *
 * Why C: greenpool.monkey.patch_all() replaces gevent.queue's classes with
 * cross-hub ones (greenpool/monkey/gevent_primitives/queue.py), and libraries
 * with a gevent driver (python-engineio) put and get on their hot paths.
 * gevent's own queues are Cython; the same steps as Python methods (a frame
 * each, attribute lookups) cost 1.3-1.8x as much. Here put() and get() are
 * method descriptors of the Python classes, reading their __slots__ at their
 * offsets; everything but the uncontended steps (a wait, a wake-up, a
 * timeout, a shut-down queue) calls back into the Python methods, which stay
 * the one description of the behaviour (and the pure-Python twin).
 *
 * Why it is safe: as in Python, each container step (a deque's append or
 * popleft, a list's append or pop) is one C call made holding the GIL, so it
 * is atomic; the order of the steps is the Python methods' own.
 *
 * Heap is a priority queue's heap and its lock in one object: the
 * comparisons of heappush/heappop may run Python code (a thread switch), so
 * they run under the lock, taken here without a Python call or a system call.
 */
#include "_speedups_common.h"

static PyObject *str_append, *str_pop, *str_wake_one, *str_parked;
static PyTypeObject *deque_type;
static PyObject *str_before_put, *str_wait_room, *str_wait_item;
static PyObject *heappush_fn, *heappop_fn;

/* The __slots__ a queue class's put()/get() read (offsets; tasks: -1 if none). */
typedef struct {
    Py_ssize_t plain, shutdown, push, pop, parked_getters, getters, slots, putters, tasks;
} Layout;

static Layout simple_layout, joinable_layout;

/* A get's wait for an item, in C where it applies (defined with Lot below). */
static PyObject *queue_wait_fast(const Layout *L, PyObject *self, PyObject *pop,
                                 PyObject *block, PyObject *timeout, int *applies);

static PyObject *
deleted(void)
{
    PyErr_SetString(PyExc_AttributeError,
                    "greenpool gevent queue: an internal attribute was deleted; "
                    "the queue is unusable");
    return NULL;
}

/* ``obj.name(arg)`` without a bound method; the result is dropped. 0, or -1 raised. */
static int
call_method1(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *call[2] = {obj, arg};
    PyObject *r = PyObject_VectorcallMethod(name, call, arg == NULL ? 1 : 2, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* _QueueCore._gp_before_put, its common case in C: a bounded queue, not shut
 * down, no timeout, takes a free place or waits for one (Python). */
static int
before_put(const Layout *L, PyObject *self, PyObject *block, PyObject *timeout)
{
    PyObject *slots = slot(self, L->slots);
    if (slot(self, L->shutdown) != Py_False || timeout != Py_None || slots == NULL
        || slots == Py_None) {
        PyObject *call[3] = {self, block, timeout};
        PyObject *r = PyObject_VectorcallMethod(str_before_put, call, 3, NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    PyObject *call[1] = {slots};
    PyObject *r = PyObject_VectorcallMethod(str_pop, call, 1, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_IndexError))
        return -1;
    PyErr_Clear();
    Py_INCREF(slots);  /* the slot may change while we wait */
    PyObject *wait[4] = {self, slots, block, timeout};
    r = PyObject_VectorcallMethod(str_wait_room, wait, 4, NULL);
    Py_DECREF(slots);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* _QueueCore.put / _JoinableCore.put */
static PyObject *
queue_put(const Layout *L, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const names[] = {"item", "block", "timeout"};
    PyObject *a[3] = {NULL, Py_True, Py_None};
    if (unpack("put", names, 3, 1, args, nargs, kwnames, a) < 0)
        return NULL;
    if (slot(self, L->plain) != Py_True || a[2] != Py_None) {
        if (before_put(L, self, a[1], a[2]) < 0)
            return NULL;
    }
    if (L->tasks >= 0) {  /* counted before the item can be got */
        PyObject *tasks = slot(self, L->tasks);
        if (tasks == NULL)
            return deleted();
        if (call_method1(tasks, str_append, Py_None) < 0)
            return NULL;
    }
    PyObject *push = slot(self, L->push);
    if (push == NULL)
        return deleted();
    PyObject *r = PyObject_CallOneArg(push, a[0]);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    PyObject *parked = slot(self, L->parked_getters);
    if (parked == NULL)
        return deleted();
    int any = PyObject_IsTrue(parked);
    if (any < 0)
        return NULL;
    if (any) {
        PyObject *getters = slot(self, L->getters);
        if (getters == NULL)
            return deleted();
        if (call_method1(getters, str_wake_one, NULL) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* _QueueCore.get */
static PyObject *
queue_get(const Layout *L, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2] = {Py_True, Py_None};
    if (unpack("get", names, 2, 0, args, nargs, kwnames, a) < 0)
        return NULL;
    PyObject *pop = slot(self, L->pop);
    if (pop == NULL)
        return deleted();
    PyObject *item = PyObject_CallNoArgs(pop);
    if (item == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_IndexError))
            return NULL;
        PyErr_Clear();
        Py_INCREF(pop);
        int applies;
        item = queue_wait_fast(L, self, pop, a[0], a[1], &applies);
        if (!applies) {  /* anything unusual: the Python method */
            PyObject *call[4] = {self, pop, a[0], a[1]};
            item = PyObject_VectorcallMethod(str_wait_item, call, 4, NULL);
        }
        Py_DECREF(pop);
        if (item == NULL)
            return NULL;
    }
    PyObject *slots = slot(self, L->slots);
    if (slots != NULL && slots != Py_None) {
        /* bounded: give the place back, wake a putter waiting for it */
        if (call_method1(slots, str_append, Py_None) < 0)
            goto error;
        PyObject *putters = slot(self, L->putters);
        if (putters == NULL) {
            deleted();
            goto error;
        }
        PyObject *parked = PyObject_GetAttr(putters, str_parked);
        if (parked == NULL)
            goto error;
        int any = PyObject_IsTrue(parked);
        Py_DECREF(parked);
        if (any < 0 || (any && call_method1(putters, str_wake_one, NULL) < 0))
            goto error;
    }
    return item;
error:
    Py_DECREF(item);
    return NULL;
}

#define QUEUE_METHODS(prefix, layout)                                                          \
    static PyObject *prefix##_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs,    \
                                  PyObject *kwnames)                                          \
    {                                                                                         \
        return queue_put(&layout, self, args, nargs, kwnames);                                \
    }                                                                                         \
    static PyObject *prefix##_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs,    \
                                  PyObject *kwnames)                                          \
    {                                                                                         \
        return queue_get(&layout, self, args, nargs, kwnames);                                \
    }                                                                                         \
    static PyMethodDef prefix##_defs[] = {                                                    \
        {"put", (PyCFunction)(void (*)(void))prefix##_put, METH_FASTCALL | METH_KEYWORDS,     \
         "put(item, block=True, timeout=None): as gevent.queue's (see greenpool.monkey)."},   \
        {"get", (PyCFunction)(void (*)(void))prefix##_get, METH_FASTCALL | METH_KEYWORDS,     \
         "get(block=True, timeout=None): as gevent.queue's (see greenpool.monkey)."},         \
    };

QUEUE_METHODS(simple, simple_layout)
QUEUE_METHODS(joinable, joinable_layout)

static int
read_layout(PyObject *cls, int joinable, Layout *L)
{
    static const char *const names[] = {
        "_gp_plain", "_gp_shutdown", "_gp_push", "_gp_pop", "_gp_parked_getters",
        "_gp_getters", "_gp_slots", "_gp_putters", "_gp_tasks",
    };
    Py_ssize_t *out[] = {&L->plain, &L->shutdown, &L->push, &L->pop, &L->parked_getters,
                         &L->getters, &L->slots, &L->putters, &L->tasks};
    L->tasks = -1;
    for (int i = 0; i < (joinable ? 9 : 8); i++) {
        Py_ssize_t offset = member_offset(cls, names[i]);
        if (offset < 0)
            return -1;
        *out[i] = offset;
    }
    return 0;
}

/* queue_methods(cls, joinable) -> (put, get): method descriptors for ``cls``
 * (SimpleQueue's layout, or with joinable=True Queue's, which counts tasks). */
static PyObject *
queue_methods(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyBool_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "queue_methods(cls, joinable: bool)");
        return NULL;
    }
    int joinable = args[1] == Py_True;
    Layout layout;
    if (read_layout(args[0], joinable, &layout) < 0)
        return NULL;
    PyMethodDef *defs = joinable ? joinable_defs : simple_defs;
    /* One layout per kind: a second class of the same kind must match it. */
    Layout *kept = joinable ? &joinable_layout : &simple_layout;
    if (kept->push != 0 && memcmp(kept, &layout, sizeof layout) != 0) {
        PyErr_SetString(PyExc_TypeError, "queue_methods: a different layout is already in use");
        return NULL;
    }
    *kept = layout;
    PyObject *put = PyDescr_NewMethod((PyTypeObject *)args[0], &defs[0]);
    PyObject *get = PyDescr_NewMethod((PyTypeObject *)args[0], &defs[1]);
    PyObject *pair = (put && get) ? PyTuple_Pack(2, put, get) : NULL;
    Py_XDECREF(put);
    Py_XDECREF(get);
    return pair;
}

/* ---- Heap: a priority queue's list and its lock ---- */

typedef struct {
    PyObject_HEAD
    PyObject *items;  /* the list heapq keeps as a heap */
    char busy;        /* the lock: read and set holding the GIL, so atomic */
} Heap;

/* Held by another thread only while it runs a comparison's Python code. Not
 * reentrant: a comparison that pushes onto its own queue would corrupt the
 * heap, so it waits forever instead (on the twin's native lock it deadlocks). */
static void
heap_lock(Heap *self)
{
    gil_lock(&self->busy);
}

static PyObject *
heap_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *items;
    if (!PyArg_ParseTuple(args, "O!:Heap", &PyList_Type, &items))
        return NULL;
    Heap *self = (Heap *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->items = Py_NewRef(items);
    return (PyObject *)self;
}

static int
heap_traverse(Heap *self, visitproc visit, void *arg)
{
    Py_VISIT(self->items);
    return 0;
}

static int
heap_clear(Heap *self)
{
    Py_CLEAR(self->items);
    return 0;
}

static void
heap_dealloc(Heap *self)
{
    PyObject_GC_UnTrack(self);
    heap_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
heap_call(Heap *self, PyObject *fn, PyObject *item)
{
    if (self->items == NULL) {
        PyErr_SetString(PyExc_ValueError, "Heap: cleared");
        return NULL;
    }
    PyObject *call[2] = {self->items, item};
    heap_lock(self);
    PyObject *r = PyObject_Vectorcall(fn, call, item == NULL ? 1 : 2, NULL);
    gil_unlock(&self->busy);
    return r;
}

static PyObject *
heap_push(Heap *self, PyObject *item)
{
    return heap_call(self, heappush_fn, item);
}

static PyObject *
heap_pop(Heap *self, PyObject *unused)
{
    return heap_call(self, heappop_fn, NULL);  /* IndexError when empty */
}

static PyObject *
heap_enter(Heap *self, PyObject *unused)
{
    heap_lock(self);
    Py_RETURN_TRUE;
}

static PyObject *
heap_exit(Heap *self, PyObject *const *args, Py_ssize_t nargs)
{
    gil_unlock(&self->busy);
    Py_RETURN_FALSE;
}

static PyMethodDef heap_methods[] = {
    {"push", (PyCFunction)heap_push, METH_O, "heappush(items, item) under the lock."},
    {"pop", (PyCFunction)heap_pop, METH_NOARGS, "heappop(items) under the lock (IndexError)."},
    {"__enter__", (PyCFunction)heap_enter, METH_NOARGS, "Take the lock (for a peek)."},
    {"__exit__", (PyCFunction)(void (*)(void))heap_exit, METH_FASTCALL, "Release it."},
    {NULL}
};

static PyTypeObject HeapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpool._speedups_gevent.Heap",
    .tp_doc = "Heap(items: list): a priority queue's heap and its lock (push, pop, with).",
    .tp_basicsize = sizeof(Heap),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = heap_new,
    .tp_dealloc = (destructor)heap_dealloc,
    .tp_traverse = (traverseproc)heap_traverse,
    .tp_clear = (inquiry)heap_clear,
    .tp_methods = heap_methods,
};


/* ---- Flag: the waiters of a one-way condition (_parking._Flag), and Event ----
 *
 * Why: one park per WebSocket message (simple-websocket's receive() waits on
 * a threading.Event, which greenpool makes gevent's Event, made cross-hub).
 * The critical sections run no Python code but ``ready()`` (none at all for
 * an Event: its flag is read at its slot) and what a GC run there calls, so a
 * reentrant GilRLock, not a native lock, orders them: a waiter appends itself and then checks, the setter sets and
 * then takes the list, so one of them always sees the other. */

static PyObject *str_waiter, *str_wait, *str_wake, *str_yield, *str_notify, *str_links;
static PyObject *entry_type;        /* greenpool._waiter.Entry */
static PyObject *flag_cls;          /* _parking._Flag: this type, or its Python subclass */
static GreenpoolWaiterAPI *waiter_api;  /* greenpool._speedups_waiter's, or NULL */

/* ``waiter.wait(timeout)``: straight to a PoolHubWaiter's park when it is one */
static PyObject *
park(PyObject *waiter, PyObject *timeout)
{
    if (waiter_api != NULL && Py_TYPE(waiter) == waiter_api->hub_waiter_type)
        return waiter_api->park(waiter, timeout);
    PyObject *call[2] = {waiter, timeout};
    return PyObject_VectorcallMethod(str_wait, call, 2, NULL);
}
static PyObject *flag_timeout_wait; /* _parking._Flag's wait with a gevent.Timeout */
static PyObject *str_gp_wait;

typedef struct {
    PyObject_HEAD
    PyObject *waiters;  /* list of Entry */
    PyObject *pending;  /* one None per waiter woken and not yet resumed */
    GilRLock lock;
} Flag;

static PyTypeObject FlagType;

static PyObject *
flag_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Flag *self = (Flag *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->waiters = PyList_New(0);
    self->pending = PyList_New(0);
    if (self->waiters == NULL || self->pending == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
flag_traverse(Flag *self, visitproc visit, void *arg)
{
    Py_VISIT(self->waiters);
    Py_VISIT(self->pending);
    return 0;
}

static int
flag_clear(Flag *self)
{
    Py_CLEAR(self->waiters);
    Py_CLEAR(self->pending);
    return 0;
}

static void
flag_dealloc(Flag *self)
{
    PyObject_GC_UnTrack(self);
    flag_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Remove ``entry`` (by identity) if still listed: 1 removed, 0 not there (a waker took it). */
static int
flag_remove(Flag *self, PyObject *entry)
{
    PyObject *list = self->waiters;
    for (Py_ssize_t i = PyList_GET_SIZE(list) - 1; i >= 0; i--)
        if (PyList_GET_ITEM(list, i) == entry)
            return PyList_SetSlice(list, i, i + 1, NULL) < 0 ? -1 : 1;
    return 0;
}

/* This waiter resumed: its token (if a wake-up left one) goes. 0, or -1 raised. */
static int
flag_drop_pending(Flag *self)
{
    Py_ssize_t n = PyList_GET_SIZE(self->pending);
    return n > 0 ? PyList_SetSlice(self->pending, n - 1, n, NULL) : 0;
}

/* Park until woken (True) or timeout (False). Readiness: ``ready()``, or when
 * ``ready`` is NULL the slot at ``offset`` of ``owner`` being True. */
static PyObject *
flag_wait_impl(Flag *self, PyObject *ready, PyObject *owner, Py_ssize_t offset,
               PyObject *timeout)
{
    if (self->waiters == NULL || self->pending == NULL)
        return PyErr_Format(PyExc_ValueError, "Flag: cleared");
    if (timeout != Py_None && !PyFloat_Check(timeout) && !PyLong_Check(timeout)) {
        /* a gevent.Timeout (or something the Python method explains) */
        PyObject *r = ready ? Py_NewRef(ready) : PyObject_GetAttrString(owner, "ready");
        if (r == NULL)
            return NULL;
        PyObject *call[3] = {(PyObject *)self, r, timeout};
        PyObject *result = PyObject_Vectorcall(flag_timeout_wait, call, 3, NULL);
        Py_DECREF(r);
        return result;
    }
    PyObject *entry = PyObject_CallNoArgs(entry_type);
    if (entry == NULL)
        return NULL;
    gil_rlock(&self->lock);
    if (PyList_Append(self->waiters, entry) < 0) {
        gil_runlock(&self->lock);
        Py_DECREF(entry);
        return NULL;
    }
    int is_ready;
    if (ready == NULL) {
        is_ready = slot(owner, offset) == Py_True;
    } else {
        PyObject *r = PyObject_CallNoArgs(ready);
        is_ready = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
    }
    if (is_ready != 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        int removed = flag_remove(self, entry);
        gil_runlock(&self->lock);
        Py_DECREF(entry);
        /* removed == 0: woken meanwhile (re-entered); its token goes, as after a park */
        if (removed < 0 || (removed == 0 && flag_drop_pending(self) < 0)) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return NULL;
        }
        PyErr_Restore(type, value, tb);
        return is_ready < 0 ? NULL : Py_NewRef(Py_True);
    }
    gil_runlock(&self->lock);
    PyObject *waiter = PyObject_GetAttr(entry, str_waiter);
    PyObject *result = waiter == NULL ? NULL : park(waiter, timeout);
    Py_XDECREF(waiter);
    int woken = result == NULL ? 0 : PyObject_IsTrue(result);
    Py_XDECREF(result);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);  /* a wait ended by an exception still tidies up */
    int failed = woken < 0;
    if (woken <= 0) {
        gil_rlock(&self->lock);
        int removed = flag_remove(self, entry);
        gil_runlock(&self->lock);
        failed |= removed < 0;
        woken = removed == 0;  /* not listed: a waker took it, so it was woken */
    }
    if (woken == 1)
        failed |= flag_drop_pending(self) < 0;
    Py_DECREF(entry);
    if (type != NULL) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (failed)
        return NULL;
    return PyBool_FromLong(woken == 1);
}

static PyObject *
flag_wait(Flag *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"ready", "timeout"};
    PyObject *a[2] = {NULL, Py_None};
    if (unpack("wait", names, 2, 1, args, nargs, kwnames, a) < 0)
        return NULL;
    return flag_wait_impl(self, a[0], NULL, 0, a[1]);
}

static int
flag_wake_all_impl(Flag *self)
{
    if (self->waiters == NULL || self->pending == NULL)
        return 0;
    gil_rlock(&self->lock);
    Py_ssize_t n = PyList_GET_SIZE(self->waiters);
    if (n == 0) {
        gil_runlock(&self->lock);
        return 0;
    }
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL) {
        gil_runlock(&self->lock);
        return -1;
    }
    PyObject *waiters = self->waiters;
    self->waiters = fresh;
    int failed = 0;
    for (Py_ssize_t i = 0; i < n && !failed; i++)
        failed = PyList_Append(self->pending, Py_None) < 0;
    gil_runlock(&self->lock);
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        PyObject *waiter = PyObject_GetAttr(PyList_GET_ITEM(waiters, i), str_waiter);
        failed = waiter == NULL || call_method1(waiter, str_wake, NULL) < 0;
        Py_XDECREF(waiter);
    }
    Py_DECREF(waiters);
    return failed ? -1 : 0;
}

static PyObject *
flag_wake_all(Flag *self, PyObject *unused)
{
    if (flag_wake_all_impl(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef flag_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))flag_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(ready, timeout) -> bool: park until woken, or False once timeout expires."},
    {"wake_all", (PyCFunction)flag_wake_all, METH_NOARGS, "Wake every waiter."},
    {NULL}
};

static PyMemberDef flag_members[] = {
    {"waiters", T_OBJECT, offsetof(Flag, waiters), READONLY, "the parked entries"},
    {"pending", T_OBJECT, offsetof(Flag, pending), READONLY, "woken, not yet resumed"},
    {NULL}
};

static PyTypeObject FlagType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpool._speedups_gevent.Flag",
    .tp_doc = "The waiters of a one-way condition (see greenpool.monkey.gevent_primitives"
              "._parking._Flag, its pure-Python twin).",
    .tp_basicsize = sizeof(Flag),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = flag_new,
    .tp_dealloc = (destructor)flag_dealloc,
    .tp_traverse = (traverseproc)flag_traverse,
    .tp_clear = (inquiry)flag_clear,
    .tp_methods = flag_methods,
    .tp_members = flag_members,
};

/* ``obj._gp_waiters``, made on first use: a _Flag. Atomic under the GIL
 * (the slot is read and set by its member descriptor, the flag made by C
 * code), so two first waiters on different threads share one flag. */
static PyObject *str_gp_waiters;

static PyObject *
make_flag(PyObject *module, PyObject *obj)
{
    PyObject *flag = PyObject_GetAttr(obj, str_gp_waiters);
    if (flag == NULL || flag != Py_None)
        return flag;
    Py_DECREF(flag);
    if (flag_cls == NULL)
        return PyErr_Format(PyExc_RuntimeError, "configure_flag() first");
    flag = PyObject_CallNoArgs(flag_cls);
    if (flag == NULL)
        return NULL;
    if (PyObject_SetAttr(obj, str_gp_waiters, flag) < 0) {
        Py_DECREF(flag);
        return NULL;
    }
    return flag;
}

/* Event.set() and Event.wait() over the slots of the Python class */
static Py_ssize_t ev_flag = -1, ev_waiters, ev_links;

static PyObject *
event_set(PyObject *self, PyObject *unused)
{
    PyObject *old = slot(self, ev_flag);
    *(PyObject **)((char *)self + ev_flag) = Py_NewRef(Py_True);
    Py_XDECREF(old);
    PyObject *waiters = slot(self, ev_waiters);
    PyObject *links = slot(self, ev_links);
    if (waiters != NULL && waiters != Py_None) {
        if (!PyObject_TypeCheck(waiters, &FlagType))
            return PyObject_CallMethodNoArgs(self, str_notify);
        Py_INCREF(waiters);
        int failed = flag_wake_all_impl((Flag *)waiters);
        Py_DECREF(waiters);
        if (failed)
            return NULL;
        links = slot(self, ev_links);
    }
    if (links != NULL && links != Py_None) {
        PyObject *pending = PyObject_GetAttr(links, str_links);
        int any = pending == NULL ? -1 : PyObject_IsTrue(pending);
        Py_XDECREF(pending);
        if (any < 0)
            return NULL;
        if (any)
            return PyObject_CallMethodNoArgs(links, str_notify);
    }
    Py_RETURN_NONE;
}

static PyObject *
event_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1] = {Py_None};
    if (unpack("wait", names, 1, 0, args, nargs, kwnames, a) < 0)
        return NULL;
    PyObject *waiters = slot(self, ev_waiters);
    if (slot(self, ev_flag) == Py_True) {
        /* let the waiters a set() woke run first (gevent issue #1520's order) */
        if (waiters != NULL && PyObject_TypeCheck(waiters, &FlagType)
            && ((Flag *)waiters)->pending != NULL
            && PyList_GET_SIZE(((Flag *)waiters)->pending) > 0) {
            PyObject *r = PyObject_CallMethodNoArgs(waiters, str_yield);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
        }
        Py_RETURN_TRUE;
    }
    /* The first wait makes the flag, here: a call into Python would leave an
     * interpreter frame on the C stack of every greenlet parked in its first
     * wait (~0.5 KiB each, an idle WebSocket connection's). */
    waiters = (waiters == NULL || waiters == Py_None) ? make_flag(NULL, self) : Py_NewRef(waiters);
    if (waiters == NULL)
        return NULL;
    if (!PyObject_TypeCheck(waiters, &FlagType)) {  /* not ours: Python */
        Py_DECREF(waiters);
        PyObject *call[2] = {self, a[0]};
        return PyObject_VectorcallMethod(str_gp_wait, call, 2, NULL);
    }
    PyObject *r = flag_wait_impl((Flag *)waiters, NULL, self, ev_flag, a[0]);
    Py_DECREF(waiters);
    return r;
}

static PyMethodDef event_defs[] = {
    {"set", (PyCFunction)event_set, METH_NOARGS,
     "Set the flag; wake every waiter and run the links."},
    {"wait", (PyCFunction)(void (*)(void))event_wait, METH_FASTCALL | METH_KEYWORDS,
     "Wait until the flag is set; True if it was, False if timeout expired first."},
};

/* event_methods(cls) -> (set, wait) for the cross-hub Event class */
static PyObject *
event_methods(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "event_methods(cls)");
        return NULL;
    }
    Py_ssize_t flag = member_offset(cls, "_gp_flag");
    Py_ssize_t waiters = flag < 0 ? -1 : member_offset(cls, "_gp_waiters");
    Py_ssize_t links = waiters < 0 ? -1 : member_offset(cls, "_gp_links");
    if (links < 0)
        return NULL;
    if (ev_flag >= 0 && (ev_flag != flag || ev_waiters != waiters || ev_links != links)) {
        PyErr_SetString(PyExc_TypeError, "event_methods: a different layout is already in use");
        return NULL;
    }
    ev_flag = flag;
    ev_waiters = waiters;
    ev_links = links;
    PyObject *set = PyDescr_NewMethod((PyTypeObject *)cls, &event_defs[0]);
    PyObject *wait = PyDescr_NewMethod((PyTypeObject *)cls, &event_defs[1]);
    PyObject *pair = (set && wait) ? PyTuple_Pack(2, set, wait) : NULL;
    Py_XDECREF(set);
    Py_XDECREF(wait);
    return pair;
}

/* configure_flag(Entry, timeout_wait, flag_cls, waiter_capsule): what Flag.wait
 * makes and calls, what make_flag() makes, and greenpool._speedups_waiter's
 * _C_API (or None) */
static PyObject *
configure_flag(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyType_Check(args[2])
        || !PyType_IsSubtype((PyTypeObject *)args[2], &FlagType)) {
        PyErr_SetString(PyExc_TypeError,
                        "configure_flag(Entry, timeout_wait, flag_cls, waiter_capsule)");
        return NULL;
    }
    if (args[3] != Py_None) {
        waiter_api = PyCapsule_GetPointer(args[3], GREENPOOL_WAITER_CAPSULE);
        if (waiter_api == NULL)
            return NULL;
    } else {
        waiter_api = NULL;
    }
    Py_XSETREF(entry_type, Py_NewRef(args[0]));
    Py_XSETREF(flag_timeout_wait, Py_NewRef(args[1]));
    Py_XSETREF(flag_cls, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

/* ---- Lot: callers parked until take() succeeds (_parking._Lot and _lot_wait) ----
 *
 * The same protocol as the Python twin (see _parking._Lot): the waker
 * changes the state and then looks for parked callers; a caller parks and
 * then tries take() again. The critical sections call take() (Python code
 * for a semaphore or a putter) and may be re-entered by their own thread (a
 * __del__ that puts, in a GC run inside one), so the lock is a reentrant
 * flag under the GIL: owner thread and depth. */

static PyObject *empty_sentinel, *monotonic_fn;
static PyObject *str_appendleft, *str_popleft, *str_remove, *str_clear;

typedef struct {
    PyObject_HEAD
    PyObject *parked;     /* deque of Entry */
    GilRLock lock;
} Lot;

static PyTypeObject LotType;

static void
lot_lock(Lot *self)
{
    gil_rlock(&self->lock);
}

static void
lot_unlock(Lot *self)
{
    gil_runlock(&self->lock);
}

static PyObject *
lot_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Lot *self = (Lot *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->parked = PyObject_CallNoArgs((PyObject *)deque_type);
    if (self->parked == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
lot_traverse(Lot *self, visitproc visit, void *arg)
{
    Py_VISIT(self->parked);
    return 0;
}

static int
lot_clear(Lot *self)
{
    Py_CLEAR(self->parked);
    return 0;
}

static void
lot_dealloc(Lot *self)
{
    PyObject_GC_UnTrack(self);
    lot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ``parked.remove(entry)`` under the lock: 1 removed, 0 not there (a waker popped it), -1 raised. */
static int
lot_remove(Lot *self, PyObject *entry)
{
    PyObject *call[2] = {self->parked, entry};
    lot_lock(self);
    PyObject *r = PyObject_VectorcallMethod(str_remove, call, 2, NULL);
    lot_unlock(self);
    if (r != NULL) {
        Py_DECREF(r);
        return 1;
    }
    if (!PyErr_ExceptionMatches(PyExc_ValueError))
        return -1;
    PyErr_Clear();
    return 0;
}

static int
lot_wake_one_impl(Lot *self)
{
    if (self->parked == NULL)
        return 0;
    lot_lock(self);
    if (PyObject_Size(self->parked) <= 0) {
        lot_unlock(self);
        return 0;
    }
    PyObject *call[1] = {self->parked};
    PyObject *entry = PyObject_VectorcallMethod(str_popleft, call, 1, NULL);
    lot_unlock(self);
    if (entry == NULL)
        return -1;
    PyObject *waiter = PyObject_GetAttr(entry, str_waiter);
    Py_DECREF(entry);
    int failed = waiter == NULL || call_method1(waiter, str_wake, NULL) < 0;
    Py_XDECREF(waiter);
    return failed ? -1 : 0;
}

static PyObject *
lot_wake_one(Lot *self, PyObject *unused)
{
    if (lot_wake_one_impl(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
lot_wake_all(Lot *self, PyObject *unused)
{
    if (self->parked == NULL)
        Py_RETURN_NONE;
    lot_lock(self);
    PyObject *entries = PySequence_List(self->parked);
    PyObject *r = entries == NULL ? NULL : PyObject_CallMethodNoArgs(self->parked, str_clear);
    lot_unlock(self);
    if (r == NULL) {
        Py_XDECREF(entries);
        return NULL;
    }
    Py_DECREF(r);
    int failed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries) && !failed; i++) {
        PyObject *waiter = PyObject_GetAttr(PyList_GET_ITEM(entries, i), str_waiter);
        failed = waiter == NULL || call_method1(waiter, str_wake, NULL) < 0;
        Py_XDECREF(waiter);
    }
    Py_DECREF(entries);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* What a wait tries: a new reference, empty_sentinel (new reference) for "not yet", or NULL raised. */
typedef PyObject *(*take_fn)(void *ctx);

static PyObject *
take_by_call(void *ctx)
{
    return PyObject_CallNoArgs((PyObject *)ctx);
}

static double
now(int *failed)
{
    PyObject *t = PyObject_CallNoArgs(monotonic_fn);
    double v = t == NULL ? -1.0 : PyFloat_AsDouble(t);
    Py_XDECREF(t);
    *failed = t == NULL || (v == -1.0 && PyErr_Occurred());
    return v;
}

/* Park in ``lot`` until ``take`` succeeds: its result, or empty_sentinel once
 * ``timeout`` (None or a non-negative number of seconds) expires. */
static PyObject *
lot_wait_impl(Lot *lot, take_fn take, void *ctx, PyObject *timeout)
{
    if (lot->parked == NULL)
        return PyErr_Format(PyExc_ValueError, "Lot: cleared");
    int failed = 0;
    double deadline = 0.0;
    if (timeout != Py_None) {
        double seconds = PyFloat_AsDouble(timeout);
        if (seconds == -1.0 && PyErr_Occurred())
            return NULL;
        deadline = now(&failed) + seconds;
        if (failed)
            return NULL;
    }
    int woken = 0;
    for (;;) {
        PyObject *entry = PyObject_CallNoArgs(entry_type);
        if (entry == NULL)
            return NULL;
        PyObject *call[2] = {lot->parked, entry};
        lot_lock(lot);
        PyObject *r = PyObject_VectorcallMethod(woken ? str_appendleft : str_append, call, 2, NULL);
        if (r == NULL) {
            lot_unlock(lot);
            Py_DECREF(entry);
            return NULL;
        }
        Py_DECREF(r);
        PyObject *got = take(ctx);
        if (got != empty_sentinel) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            int removed = lot_remove(lot, entry);  /* re-entered: same thread */
            lot_unlock(lot);
            Py_DECREF(entry);
            if (removed < 0) {
                Py_XDECREF(got);
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
                return NULL;
            }
            PyErr_Restore(type, value, tb);
            return got;
        }
        Py_DECREF(got);
        lot_unlock(lot);
        PyObject *left;
        if (timeout == Py_None) {
            left = Py_NewRef(Py_None);
        } else {
            double t = now(&failed);
            left = failed ? NULL : PyFloat_FromDouble(deadline - t > 0.0 ? deadline - t : 0.0);
            if (left == NULL) {
                lot_remove(lot, entry);
                Py_DECREF(entry);
                return NULL;
            }
        }
        PyObject *waiter = PyObject_GetAttr(entry, str_waiter);
        PyObject *res = waiter == NULL ? NULL : park(waiter, left);
        Py_XDECREF(waiter);
        Py_DECREF(left);
        int woke = res == NULL ? -1 : PyObject_IsTrue(res);
        Py_XDECREF(res);
        if (woke < 0) {  /* killed while parked (or a broken waiter) */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            int queued = lot_remove(lot, entry);
            Py_DECREF(entry);
            if (queued == 0 && PyObject_Size(lot->parked) > 0)
                lot_wake_one_impl(lot);  /* woken while being killed: pass it on */
            if (PyErr_Occurred())
                PyErr_Clear();  /* the kill's exception is the one to raise */
            PyErr_Restore(type, value, tb);
            return NULL;
        }
        if (!woke) {
            int queued = lot_remove(lot, entry);
            Py_DECREF(entry);
            if (queued < 0)
                return NULL;
            got = take(ctx);  /* woken just as the timeout expired, or raced */
            if (got == empty_sentinel && queued == 0 && PyObject_Size(lot->parked) > 0
                && lot_wake_one_impl(lot) < 0) {
                Py_DECREF(got);
                return NULL;
            }
            return got;
        }
        Py_DECREF(entry);
        got = take(ctx);
        if (got != empty_sentinel)
            return got;
        Py_DECREF(got);
        woken = 1;  /* a newcomer took it first: park again at the head */
    }
}

/* lot_wait(lot, take, timeout): _parking._lot_wait in C */
static PyObject *
lot_wait(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &LotType)) {
        PyErr_SetString(PyExc_TypeError, "lot_wait(lot: Lot, take, timeout)");
        return NULL;
    }
    if (empty_sentinel == NULL)
        return PyErr_Format(PyExc_RuntimeError, "configure_lot() first");
    return lot_wait_impl((Lot *)args[0], take_by_call, args[1], args[2]);
}

static PyMethodDef lot_methods[] = {
    {"wake_one", (PyCFunction)lot_wake_one, METH_NOARGS, "Wake the longest-parked caller."},
    {"wake_all", (PyCFunction)lot_wake_all, METH_NOARGS, "Wake every parked caller."},
    {NULL}
};

static PyMemberDef lot_members[] = {
    {"parked", T_OBJECT, offsetof(Lot, parked), READONLY, "the parked entries (a deque)"},
    {NULL}
};

static PyTypeObject LotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpool._speedups_gevent.Lot",
    .tp_doc = "Callers parked until take() succeeds (see greenpool.monkey.gevent_primitives"
              "._parking._PyLot, its pure-Python twin).",
    .tp_basicsize = sizeof(Lot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = lot_new,
    .tp_dealloc = (destructor)lot_dealloc,
    .tp_traverse = (traverseproc)lot_traverse,
    .tp_clear = (inquiry)lot_clear,
    .tp_methods = lot_methods,
    .tp_members = lot_members,
};

/* configure_lot(EMPTY, time.monotonic) */
static PyObject *
configure_lot(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure_lot(EMPTY, monotonic)");
        return NULL;
    }
    Py_XSETREF(empty_sentinel, Py_NewRef(args[0]));
    Py_XSETREF(monotonic_fn, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* ---- a queue get's wait in C: _QueueCore._gp_wait_item's common case ---- */

static PyObject *empty_exc, *shutdown_exc, *getcurrent_fn, *gevent_hub_type;

typedef struct {
    const Layout *layout;
    PyObject *self;
    PyObject *pop;
} QueueTake;

/* _gp_wait_item's checked(): an item, or ShutDown once shut down and empty, or EMPTY */
static PyObject *
queue_take(void *ctx)
{
    QueueTake *q = ctx;
    PyObject *item = PyObject_CallNoArgs(q->pop);
    if (item != NULL || !PyErr_ExceptionMatches(PyExc_IndexError))
        return item;
    PyErr_Clear();
    if (slot(q->self, q->layout->shutdown) == Py_True) {
        PyErr_SetNone(shutdown_exc);
        return NULL;
    }
    return Py_NewRef(empty_sentinel);
}

/* Applies (*applies = 1) to a blocking get with no timeout or a non-negative
 * number, of a queue whose pop is a C method (a deque's, a list's, a Heap's),
 * not shut down, outside a hub's own greenlet; else *applies = 0 and the
 * Python method decides (and raises what it must). */
static PyObject *
queue_wait_fast(const Layout *L, PyObject *self, PyObject *pop, PyObject *block,
                PyObject *timeout, int *applies)
{
    *applies = 0;
    PyObject *getters = slot(self, L->getters);
    if (block != Py_True || slot(self, L->shutdown) != Py_False || !PyCFunction_Check(pop)
        || getcurrent_fn == NULL || empty_sentinel == NULL || getters == NULL
        || !PyObject_TypeCheck(getters, &LotType))
        return NULL;
    if (timeout != Py_None) {
        if (!PyFloat_Check(timeout) && !PyLong_Check(timeout))
            return NULL;
        double seconds = PyFloat_AsDouble(timeout);
        if (seconds < 0.0) {  /* ValueError, or an int too large for a double */
            PyErr_Clear();
            return NULL;
        }
    }
    PyObject *current = PyObject_CallNoArgs(getcurrent_fn);
    if (current == NULL) {
        PyErr_Clear();
        return NULL;
    }
    int in_hub = PyObject_TypeCheck(current, (PyTypeObject *)gevent_hub_type);
    Py_DECREF(current);
    if (in_hub)  /* a loop callback never blocks: Empty, from Python */
        return NULL;
    *applies = 1;
    QueueTake ctx = {L, self, pop};
    Py_INCREF(getters);
    PyObject *item = lot_wait_impl((Lot *)getters, queue_take, &ctx, timeout);
    Py_DECREF(getters);
    if (item == empty_sentinel) {
        Py_DECREF(item);
        PyErr_SetNone(empty_exc);
        return NULL;
    }
    return item;
}

/* configure_queue(Empty, ShutDown, getcurrent, gevent_hub_type) */
static PyObject *
configure_queue(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyType_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "configure_queue(Empty, ShutDown, getcurrent, Hub)");
        return NULL;
    }
    Py_XSETREF(empty_exc, Py_NewRef(args[0]));
    Py_XSETREF(shutdown_exc, Py_NewRef(args[1]));
    Py_XSETREF(getcurrent_fn, Py_NewRef(args[2]));
    Py_XSETREF(gevent_hub_type, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

/* ---- gevent.Greenlet's rawlink/join/get on the greenlet's own hub ----
 *
 * The cross-hub Greenlet (gevent_primitives/greenlet.py) overrides these to
 * work from other hubs; on the greenlet's own hub they are gevent's. gevent's
 * join() calls self.rawlink(), so a Python override costs every join two
 * frames: here the own-hub test is C and gevent's (Cython) method is called
 * directly; from another hub, the Python method does the rest. */

static PyObject *gl_get_hub, *str_parent;

/* 1: the greenlet's hub is the calling thread's (or it has none), 0: another's, -1 raised */
static int
own_hub(PyObject *self)
{
    PyObject *parent = PyObject_GetAttr(self, str_parent);
    if (parent == NULL)
        return -1;
    if (parent == Py_None) {
        Py_DECREF(parent);
        return 1;
    }
    PyObject *hub = PyObject_CallNoArgs(gl_get_hub);
    int own = hub == NULL ? -1 : parent == hub;
    Py_XDECREF(hub);
    Py_DECREF(parent);
    return own;
}

#define OWN_HUB_METHOD(name, doc)                                                              \
    static PyObject *gevent_##name, *elsewhere_##name;                                        \
    static PyObject *greenlet_##name(PyObject *self, PyObject *const *args, Py_ssize_t nargs, \
                                     PyObject *kwnames)                                       \
    {                                                                                         \
        int own = own_hub(self);                                                              \
        if (own < 0)                                                                          \
            return NULL;                                                                      \
        return call_with_self(own ? gevent_##name : elsewhere_##name, self, args, nargs,      \
                              kwnames);                                                       \
    }                                                                                         \
    static PyMethodDef greenlet_##name##_def = {                                              \
        #name, (PyCFunction)(void (*)(void))greenlet_##name, METH_FASTCALL | METH_KEYWORDS,   \
        doc};

OWN_HUB_METHOD(rawlink, "rawlink(callback): gevent's on the greenlet's own hub, else Python's.")
OWN_HUB_METHOD(join, "join(timeout=None): gevent's on the greenlet's own hub, else Python's.")
OWN_HUB_METHOD(get, "get(block=True, timeout=None): gevent's on its own hub, else Python's.")

/* Greenlet.spawn: a classmethod, as gevent's (Cython) one; no function is a TypeError */
static PyObject *str_start, *str_run, *greenlet_cls;

static PyObject *
greenlet_spawn(PyObject *cls, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (cls == greenlet_cls && nargs == 0) {
        int has_run = 0;
        for (Py_ssize_t i = 0; kwnames != NULL && i < PyTuple_GET_SIZE(kwnames); i++)
            has_run |= PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, i), str_run) == 0;
        if (!has_run) {
            PyErr_SetString(PyExc_TypeError, "");
            return NULL;
        }
    }
    PyObject *g = PyObject_Vectorcall(cls, args, nargs, kwnames);
    if (g == NULL)
        return NULL;
    if (call_method1(g, str_start, NULL) < 0) {
        Py_DECREF(g);
        return NULL;
    }
    return g;
}

static PyMethodDef greenlet_spawn_def = {
    "spawn", (PyCFunction)(void (*)(void))greenlet_spawn, METH_FASTCALL | METH_KEYWORDS | METH_CLASS,
    "spawn(function, *args, **kwargs) -> Greenlet: create and start one (gevent.spawn).",
};

/* greenlet_methods(cls, get_hub_if_exists, gevent_rawlink, rawlink_elsewhere, gevent_join,
 *                  join_elsewhere, gevent_get, get_elsewhere) -> (rawlink, join, get, spawn) */
static PyObject *
greenlet_methods(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "greenlet_methods(cls, get_hub_if_exists, gevent_rawlink, "
                        "rawlink_elsewhere, gevent_join, join_elsewhere, gevent_get, "
                        "get_elsewhere)");
        return NULL;
    }
    Py_XSETREF(gl_get_hub, Py_NewRef(args[1]));
    Py_XSETREF(gevent_rawlink, Py_NewRef(args[2]));
    Py_XSETREF(elsewhere_rawlink, Py_NewRef(args[3]));
    Py_XSETREF(gevent_join, Py_NewRef(args[4]));
    Py_XSETREF(elsewhere_join, Py_NewRef(args[5]));
    Py_XSETREF(gevent_get, Py_NewRef(args[6]));
    Py_XSETREF(elsewhere_get, Py_NewRef(args[7]));
    PyTypeObject *cls = (PyTypeObject *)args[0];
    PyObject *rawlink = PyDescr_NewMethod(cls, &greenlet_rawlink_def);
    PyObject *join = PyDescr_NewMethod(cls, &greenlet_join_def);
    PyObject *get = PyDescr_NewMethod(cls, &greenlet_get_def);
    Py_XSETREF(greenlet_cls, Py_NewRef(args[0]));
    PyObject *spawn = PyDescr_NewClassMethod(cls, &greenlet_spawn_def);
    PyObject *four = (rawlink && join && get && spawn)
                         ? PyTuple_Pack(4, rawlink, join, get, spawn) : NULL;
    Py_XDECREF(rawlink);
    Py_XDECREF(join);
    Py_XDECREF(get);
    Py_XDECREF(spawn);
    return four;
}

/* ---- gevent.lock's Semaphore and BoundedSemaphore: release, with ----
 *
 * The permits are a deque's entries (see gevent_primitives/lock.py); here
 * release() and the with statement are C over the classes' slots, the
 * wait for a permit stays Python (acquire()). */

static PyObject *str_acquire, *str_gp_notify, *str_over_release;

typedef struct {
    Py_ssize_t permits, take, acquirers, parked, waiters, links, initial;  /* initial: -1 none */
} SemLayout;

static SemLayout sem_layout, bounded_layout;

/* release(); the new number of permits, or -1 raised */
static Py_ssize_t
sem_release_impl(const SemLayout *L, PyObject *self)
{
    PyObject *permits = slot(self, L->permits);
    PyObject *parked = slot(self, L->parked);
    PyObject *acquirers = slot(self, L->acquirers);
    if (permits == NULL || parked == NULL || acquirers == NULL) {
        deleted();
        return -1;
    }
    if (L->initial >= 0) {
        PyObject *initial = slot(self, L->initial);
        if (initial == NULL) {
            deleted();
            return -1;
        }
        PyObject *count = PyLong_FromSsize_t(PyObject_Size(permits));
        int over = count == NULL ? -1 : PyObject_RichCompareBool(count, initial, Py_GE);
        Py_XDECREF(count);
        if (over < 0)
            return -1;
        if (over) {  /* the class's _OVER_RELEASE_ERROR, as the Python method raises */
            PyObject *error = PyObject_GetAttr(self, str_over_release);
            if (error != NULL) {
                PyErr_SetString(error, "Semaphore released too many times");
                Py_DECREF(error);
            }
            return -1;
        }
    }
    if (call_method1(permits, str_append, Py_None) < 0)
        return -1;
    int any = PyObject_IsTrue(parked);
    if (any < 0)
        return -1;
    if (any) {
        int failed = PyObject_TypeCheck(acquirers, &LotType)
                         ? lot_wake_one_impl((Lot *)acquirers)
                         : call_method1(acquirers, str_wake_one, NULL);
        if (failed < 0)
            return -1;
    }
    PyObject *waiters = slot(self, L->waiters), *links = slot(self, L->links);
    if ((waiters != NULL && waiters != Py_None) || (links != NULL && links != Py_None)) {
        if (call_method1(self, str_gp_notify, NULL) < 0)
            return -1;
    }
    return PyObject_Size(permits);
}

static PyObject *
sem_enter_impl(const SemLayout *L, PyObject *self)
{
    PyObject *take = slot(self, L->take);
    if (take == NULL)
        return deleted();
    PyObject *r = PyObject_CallNoArgs(take);
    if (r != NULL) {
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    if (!PyErr_ExceptionMatches(PyExc_IndexError))
        return NULL;
    PyErr_Clear();
    r = PyObject_CallMethodNoArgs(self, str_acquire);  /* wait for a permit (Python) */
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

#define SEM_METHODS(prefix, layout)                                                            \
    static PyObject *prefix##_release(PyObject *self, PyObject *unused)                       \
    {                                                                                         \
        Py_ssize_t n = sem_release_impl(&layout, self);                                       \
        return n < 0 ? NULL : PyLong_FromSsize_t(n);                                          \
    }                                                                                         \
    static PyObject *prefix##_enter(PyObject *self, PyObject *unused)                         \
    {                                                                                         \
        return sem_enter_impl(&layout, self);                                                 \
    }                                                                                         \
    static PyObject *prefix##_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)   \
    {                                                                                         \
        if (sem_release_impl(&layout, self) < 0)                                              \
            return NULL;                                                                      \
        Py_RETURN_NONE;                                                                       \
    }                                                                                         \
    static PyMethodDef prefix##_defs[] = {                                                    \
        {"release", (PyCFunction)prefix##_release, METH_NOARGS,                               \
         "Return a permit, waking a waiter; the new counter."},                               \
        {"__enter__", (PyCFunction)prefix##_enter, METH_NOARGS, "acquire()"},                 \
        {"__exit__", (PyCFunction)(void (*)(void))prefix##_exit, METH_FASTCALL, "release()"}, \
    };

SEM_METHODS(sem, sem_layout)
SEM_METHODS(bounded, bounded_layout)

/* semaphore_methods(cls, bounded: bool) -> (release, __enter__, __exit__) */
static PyObject *
semaphore_methods(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyBool_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "semaphore_methods(cls, bounded: bool)");
        return NULL;
    }
    int bounded = args[1] == Py_True;
    static const char *const names[] = {
        "_gp_permits", "_gp_take", "_gp_acquirers", "_gp_parked", "_gp_waiters", "_gp_links",
        "_gp_initial",
    };
    SemLayout L;
    Py_ssize_t *out[] = {&L.permits, &L.take, &L.acquirers, &L.parked, &L.waiters, &L.links,
                         &L.initial};
    L.initial = -1;
    for (int i = 0; i < (bounded ? 7 : 6); i++)
        if ((*out[i] = member_offset(args[0], names[i])) < 0)
            return NULL;
    SemLayout *kept = bounded ? &bounded_layout : &sem_layout;
    if (kept->permits != 0 && memcmp(kept, &L, sizeof L) != 0) {
        PyErr_SetString(PyExc_TypeError, "semaphore_methods: a different layout is already in use");
        return NULL;
    }
    *kept = L;
    PyMethodDef *defs = bounded ? bounded_defs : sem_defs;
    PyObject *methods[3];
    for (int i = 0; i < 3; i++) {
        methods[i] = PyDescr_NewMethod((PyTypeObject *)args[0], &defs[i]);
        if (methods[i] == NULL) {
            for (int j = 0; j < i; j++)
                Py_DECREF(methods[j]);
            return NULL;
        }
    }
    PyObject *triple = PyTuple_Pack(3, methods[0], methods[1], methods[2]);
    for (int i = 0; i < 3; i++)
        Py_DECREF(methods[i]);
    return triple;
}

static PyMethodDef module_methods[] = {
    {"semaphore_methods", (PyCFunction)(void (*)(void))semaphore_methods, METH_FASTCALL,
     "semaphore_methods(cls, bounded) -> (release, __enter__, __exit__) method descriptors."},
    {"greenlet_methods", (PyCFunction)(void (*)(void))greenlet_methods, METH_FASTCALL,
     "greenlet_methods(cls, get_hub_if_exists, ...) -> (rawlink, join, get, spawn) descriptors."},
    {"configure_queue", (PyCFunction)(void (*)(void))configure_queue, METH_FASTCALL,
     "configure_queue(Empty, ShutDown, getcurrent, Hub): what a get's wait in C raises and reads."},
    {"configure_lot", (PyCFunction)(void (*)(void))configure_lot, METH_FASTCALL,
     "configure_lot(EMPTY, monotonic): what Lot waits return for 'not yet', and its clock."},
    {"lot_wait", (PyCFunction)(void (*)(void))lot_wait, METH_FASTCALL,
     "lot_wait(lot, take, timeout): park until take() succeeds (its result) or timeout (EMPTY)."},
    {"configure_flag", (PyCFunction)(void (*)(void))configure_flag, METH_FASTCALL,
     "configure_flag(Entry, timeout_wait, flag_cls, waiter_capsule): what Flag.wait makes "
     "and calls."},
    {"make_flag", (PyCFunction)make_flag, METH_O,
     "make_flag(obj) -> obj._gp_waiters, made (a _Flag) on first use; atomic."},
    {"event_methods", (PyCFunction)event_methods, METH_O,
     "event_methods(cls) -> (set, wait) method descriptors for the cross-hub Event class."},
    {"queue_methods", (PyCFunction)(void (*)(void))queue_methods, METH_FASTCALL,
     "queue_methods(cls, joinable) -> (put, get) method descriptors for a gevent queue class."},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "greenpool._speedups_gevent",
    "C put()/get() of greenpool's cross-hub gevent queues (optional: see "
    "greenpool.monkey.gevent_primitives.queue).",
    -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups_gevent(void)
{
    str_append = PyUnicode_InternFromString("append");
    str_pop = PyUnicode_InternFromString("pop");
    str_wake_one = PyUnicode_InternFromString("wake_one");
    str_parked = PyUnicode_InternFromString("parked");
    str_before_put = PyUnicode_InternFromString("_gp_before_put");
    str_wait_room = PyUnicode_InternFromString("_gp_wait_room");
    str_wait_item = PyUnicode_InternFromString("_gp_wait_item");
    str_waiter = PyUnicode_InternFromString("waiter");
    str_wait = PyUnicode_InternFromString("wait");
    str_wake = PyUnicode_InternFromString("wake");
    str_yield = PyUnicode_InternFromString("yield_to_woken");
    str_notify = PyUnicode_InternFromString("notify");
    str_links = PyUnicode_InternFromString("links");
    str_gp_wait = PyUnicode_InternFromString("_gp_wait");
    str_gp_waiters = PyUnicode_InternFromString("_gp_waiters");
    if (str_gp_waiters == NULL)
        return NULL;
    str_parent = PyUnicode_InternFromString("parent");
    str_acquire = PyUnicode_InternFromString("acquire");
    str_start = PyUnicode_InternFromString("start");
    str_run = PyUnicode_InternFromString("run");
    if (str_start == NULL || str_run == NULL)
        return NULL;
    str_gp_notify = PyUnicode_InternFromString("_gp_notify");
    str_over_release = PyUnicode_InternFromString("_OVER_RELEASE_ERROR");
    if (str_parent == NULL || str_acquire == NULL || str_gp_notify == NULL
        || str_over_release == NULL)
        return NULL;
    str_appendleft = PyUnicode_InternFromString("appendleft");
    str_popleft = PyUnicode_InternFromString("popleft");
    str_remove = PyUnicode_InternFromString("remove");
    str_clear = PyUnicode_InternFromString("clear");
    if (!str_appendleft || !str_popleft || !str_remove || !str_clear)
        return NULL;
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL)
        return NULL;
    deque_type = (PyTypeObject *)PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (deque_type == NULL)
        return NULL;
    if (!str_append || !str_pop || !str_wake_one || !str_parked || !str_before_put
        || !str_wait_room || !str_wait_item || !str_waiter || !str_wait || !str_wake
        || !str_yield || !str_notify || !str_links || !str_gp_wait)
        return NULL;
    PyObject *heapq = PyImport_ImportModule("_heapq");
    if (heapq == NULL)
        return NULL;
    heappush_fn = PyObject_GetAttrString(heapq, "heappush");
    heappop_fn = PyObject_GetAttrString(heapq, "heappop");
    Py_DECREF(heapq);
    if (heappush_fn == NULL || heappop_fn == NULL)
        return NULL;
    if (PyType_Ready(&HeapType) < 0 || PyType_Ready(&FlagType) < 0 || PyType_Ready(&LotType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Heap", (PyObject *)&HeapType) < 0
        || PyModule_AddObjectRef(m, "Flag", (PyObject *)&FlagType) < 0
        || PyModule_AddObjectRef(m, "Lot", (PyObject *)&LotType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
