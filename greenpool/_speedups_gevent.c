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
#include <sched.h>

static PyObject *str_append, *str_pop, *str_wake_one, *str_parked;
static PyObject *str_before_put, *str_wait_room, *str_wait_item;
static PyObject *heappush_fn, *heappop_fn;

/* The __slots__ a queue class's put()/get() read (offsets; tasks: -1 if none). */
typedef struct {
    Py_ssize_t plain, shutdown, push, pop, parked_getters, getters, slots, putters, tasks;
} Layout;

static Layout simple_layout, joinable_layout;

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
        PyObject *call[4] = {self, pop, a[0], a[1]};
        item = PyObject_VectorcallMethod(str_wait_item, call, 4, NULL);
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

/* Take the lock. Free (the common case): one test and set under the GIL.
 * Held: only while another thread runs a comparison's Python code, which
 * needs the GIL, so wait yielding the GIL and the CPU until it is free. */
static void
heap_lock(Heap *self)
{
    while (self->busy) {
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
    self->busy = 1;
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
    self->busy = 0;
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
    self->busy = 0;
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

static PyMethodDef module_methods[] = {
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
    if (!str_append || !str_pop || !str_wake_one || !str_parked || !str_before_put
        || !str_wait_room || !str_wait_item)
        return NULL;
    PyObject *heapq = PyImport_ImportModule("_heapq");
    if (heapq == NULL)
        return NULL;
    heappush_fn = PyObject_GetAttrString(heapq, "heappush");
    heappop_fn = PyObject_GetAttrString(heapq, "heappop");
    Py_DECREF(heapq);
    if (heappush_fn == NULL || heappop_fn == NULL)
        return NULL;
    if (PyType_Ready(&HeapType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Heap", (PyObject *)&HeapType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
