/* greenpool._speedups: the lock-free put()/get() of greenpool.monkey.queue.Queue in C.
 *
 * Why C: a patched app's queue.Queue put+get must cost about what gevent's
 * Cython queue does. In Python, two method frames plus a counter cost ~1.5x
 * that; here each call is one C function.
 *
 * Why it is safe without a lock: everything below between the checks and the
 * container call runs while holding the GIL and calls no Python code (the
 * container is a deque or a list, whose append/pop are C), so no other thread
 * or greenlet can run in between. A bounded queue's fast path does what its
 * locked path does when the mutex is free and nobody waits (take the mutex,
 * append or pop, release), in one such atomic step: it reads the state of
 * greenpool.sync.Lock (its native lock, waiters and mode: __slots__ read at
 * their offsets) and of the two conditions' waiter deques, and takes the
 * locked path otherwise. Anything that may run Python code (waking
 * or parking a getter, the locked paths) is a call back into the Python class,
 * made after the atomic part. greenpool/monkey/queue.py's _PyQueueCore is the
 * pure-Python twin of this type (GREENPOOL_PURE_PYTHON=1 selects it).
 */
#include "_speedups_common.h"

typedef struct {
    PyObject_HEAD
    PyObject *items;    /* the container: a deque (FIFO) or a list (LIFO) */
    PyObject *push;     /* its bound append */
    PyObject *pop;      /* its bound popleft / pop */
    PyObject *parked;   /* the deque of parked getters (_Getters._parked) */
    PyObject *getters;  /* the _Getters object: wake_one(), wait_pop() */
    /* A bounded queue's fast path (bound > 0): its greenpool.sync.Lock and the
     * _waiters deques of its not_empty and not_full conditions. */
    PyObject *mutex;
    PyObject *not_empty_waiters;
    PyObject *not_full_waiters;
    Py_ssize_t bound;
    Py_ssize_t puts;    /* put() calls: unfinished_tasks = puts - task_done() calls */
    char lock_free;
} QueueCore;

static PyObject *Empty;         /* queue.Empty */
static PyObject *str_put_locked, *str_get_locked, *str_wake_one, *str_wait_get;
static PyObject *str_notify_not_empty;
static PyObject *str_locked;
static PyObject *zero;

static int
core_traverse(QueueCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->items);
    Py_VISIT(self->push);
    Py_VISIT(self->pop);
    Py_VISIT(self->parked);
    Py_VISIT(self->getters);
    Py_VISIT(self->mutex);
    Py_VISIT(self->not_empty_waiters);
    Py_VISIT(self->not_full_waiters);
    return 0;
}

static int
core_clear(QueueCore *self)
{
    Py_CLEAR(self->items);
    Py_CLEAR(self->push);
    Py_CLEAR(self->pop);
    Py_CLEAR(self->parked);
    Py_CLEAR(self->getters);
    Py_CLEAR(self->mutex);
    Py_CLEAR(self->not_empty_waiters);
    Py_CLEAR(self->not_full_waiters);
    return 0;
}

static void
core_dealloc(QueueCore *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A member the Python class sets was deleted (del q._getters...): an error, not a crash. */
static PyObject *
missing_member(void)
{
    PyErr_SetString(PyExc_AttributeError,
                    "greenpool queue: an internal attribute was deleted; the queue is unusable");
    return NULL;
}

/* greenpool.sync.Lock and the offsets of its _starving, _waiters and _inner
 * slots (configure_lock()): read directly, as its member descriptors would. */
static PyTypeObject *lock_type;
static Py_ssize_t off_starving = -1, off_waiters = -1, off_inner = -1;

/* 1 if the bounded queue's Lock is free, in normal mode, with nobody waiting.
 * Reads slots of greenpool.sync.Lock and calls the native lock's locked():
 * no Python code runs. Anything but a configured Lock: 0 (the locked path). */
static int
mutex_idle(QueueCore *self)
{
    PyObject *mutex = self->mutex;
    if (lock_type == NULL || Py_TYPE(mutex) != lock_type)
        return 0;
    PyObject *starving = slot(mutex, off_starving);
    PyObject *waiters = slot(mutex, off_waiters);
    PyObject *inner = slot(mutex, off_inner);
    if (starving != Py_False || waiters == NULL || inner == NULL)
        return 0;
    int waiting = PyObject_IsTrue(waiters);
    if (waiting)
        return waiting < 0 ? -1 : 0;
    PyObject *v = PyObject_CallMethodNoArgs(inner, str_locked);
    if (v == NULL)
        return -1;
    int locked = (v == Py_True);
    Py_DECREF(v);
    return !locked;
}

static PyObject *
configure_lock(PyObject *module, PyObject *type)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "configure_lock(greenpool.sync.Lock)");
        return NULL;
    }
    Py_ssize_t starving = member_offset(type, "_starving");
    Py_ssize_t waiters = starving < 0 ? -1 : member_offset(type, "_waiters");
    Py_ssize_t inner = waiters < 0 ? -1 : member_offset(type, "_inner");
    if (inner < 0)
        return NULL;
    off_starving = starving;
    off_waiters = waiters;
    off_inner = inner;
    Py_XSETREF(lock_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

/* The fast path of a bounded queue applies: no timeout to check, all set up. */
static int
bounded_fast(QueueCore *self, PyObject *block, PyObject *timeout)
{
    return self->bound > 0 && self->mutex != NULL && self->push != NULL && self->pop != NULL
           && self->not_empty_waiters != NULL && self->not_full_waiters != NULL
           && (timeout == Py_None || block == Py_False);
}

static PyObject *
core_put(QueueCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"item", "block", "timeout"};
    PyObject *a[3] = {NULL, Py_True, Py_None};
    if (unpack("put", names, 3, 1, args, nargs, kwnames, a) < 0)
        return NULL;
    if (bounded_fast(self, a[1], a[2])) {
        /* atomic: as taking the free mutex, appending, releasing it */
        int idle = mutex_idle(self);
        if (idle < 0)
            return NULL;
        Py_ssize_t size = idle ? PyObject_Size(self->items) : -1;
        if (idle && size < 0)
            return NULL;
        if (idle && size < self->bound) {
            int waiting = PyObject_IsTrue(self->not_empty_waiters);
            if (waiting < 0)
                return NULL;
            if (!waiting) {
                PyObject *r = PyObject_CallOneArg(self->push, a[0]);
                if (r == NULL)
                    return NULL;
                Py_DECREF(r);
                self->puts++;
                Py_RETURN_NONE;
            }
        }
    }
    if (!self->lock_free)
        return PyObject_CallMethodObjArgs((PyObject *)self, str_put_locked, a[0], a[1], a[2], NULL);
    if (self->push == NULL || self->parked == NULL || self->getters == NULL
        || self->not_empty_waiters == NULL)
        return missing_member();
    PyObject *r = PyObject_CallOneArg(self->push, a[0]);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    self->puts++;  /* in the same atomic step as the append: task_done() can't get ahead */
    /* after the atomic step, Python code may run */
    int parked = PyObject_IsTrue(self->parked);
    if (parked < 0)
        return NULL;
    if (parked) {
        r = PyObject_CallMethodNoArgs(self->getters, str_wake_one);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    int peeking = PyObject_IsTrue(self->not_empty_waiters);  /* code waiting on q.not_empty itself */
    if (peeking < 0)
        return NULL;
    if (peeking) {
        r = PyObject_CallMethodNoArgs((PyObject *)self, str_notify_not_empty);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

static PyObject *
core_get(QueueCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2] = {Py_True, Py_None};
    if (unpack("get", names, 2, 0, args, nargs, kwnames, a) < 0)
        return NULL;
    if (bounded_fast(self, a[0], a[1])) {
        /* atomic: as taking the free mutex, popping, releasing it */
        int idle = mutex_idle(self);
        if (idle < 0)
            return NULL;
        if (idle) {
            int any = PyObject_IsTrue(self->items);
            int waiting = any > 0 ? PyObject_IsTrue(self->not_full_waiters) : 0;
            if (any < 0 || waiting < 0)
                return NULL;
            if (any && !waiting)
                return PyObject_CallNoArgs(self->pop);
        }
    }
    if (!self->lock_free)
        return PyObject_CallMethodObjArgs((PyObject *)self, str_get_locked, a[0], a[1], NULL);
    if (self->pop == NULL)
        return missing_member();
    int block = PyObject_IsTrue(a[0]);
    if (block < 0)
        return NULL;
    if (block && a[1] != Py_None) {
        int negative = PyObject_RichCompareBool(a[1], zero, Py_LT);
        if (negative < 0)
            return NULL;
        if (negative) {
            PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
            return NULL;
        }
    }
    PyObject *item = PyObject_CallNoArgs(self->pop);
    if (item != NULL || !PyErr_ExceptionMatches(PyExc_IndexError))
        return item;
    PyErr_Clear();
    if (!block) {
        PyErr_SetNone(Empty);
        return NULL;
    }
    return PyObject_CallMethodOneArg((PyObject *)self, str_wait_get, a[1]);
}

static PyMethodDef core_methods[] = {
    {"put", (PyCFunction)(void (*)(void))core_put, METH_FASTCALL | METH_KEYWORDS,
     "put(item, block=True, timeout=None): as queue.Queue.put."},
    {"get", (PyCFunction)(void (*)(void))core_get, METH_FASTCALL | METH_KEYWORDS,
     "get(block=True, timeout=None): as queue.Queue.get."},
    {NULL}
};

static PyMemberDef core_members[] = {
    {"_items", T_OBJECT, offsetof(QueueCore, items), 0, "the container"},
    {"_push", T_OBJECT, offsetof(QueueCore, push), 0, "the container's append"},
    {"_pop", T_OBJECT, offsetof(QueueCore, pop), 0, "the container's popleft or pop"},
    {"_parked", T_OBJECT, offsetof(QueueCore, parked), 0, "parked getters"},
    {"_getters", T_OBJECT, offsetof(QueueCore, getters), 0, "the _Getters object"},
    {"_fast_mutex", T_OBJECT, offsetof(QueueCore, mutex), 0, "a bounded queue's Lock"},
    {"_not_empty_waiters", T_OBJECT, offsetof(QueueCore, not_empty_waiters), 0, ""},
    {"_not_full_waiters", T_OBJECT, offsetof(QueueCore, not_full_waiters), 0, ""},
    {"_bound", T_PYSSIZET, offsetof(QueueCore, bound), 0, "maxsize, for the fast path"},
    {"_puts", T_PYSSIZET, offsetof(QueueCore, puts), 0, "put() calls so far"},
    {"_lock_free", T_BOOL, offsetof(QueueCore, lock_free), 0, "put/get take no lock"},
    {NULL}
};

static PyTypeObject QueueCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpool._speedups.QueueCore",
    .tp_doc = "The lock-free put()/get() of greenpool's queue.Queue (see greenpool.monkey.queue).",
    .tp_basicsize = sizeof(QueueCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

/* ---- greenpool.monkey.sockets: SocketMixin._wait on the socket's own hub ----
 *
 * Why C: gevent's own _wait is compiled (Cython); a Python replacement adds a
 * frame to every wait of every socket, and the issue asks that the same-hub
 * path not get slower. Only the same-hub case (both directions of the socket
 * on the caller's hub) is here: moving a direction to another hub, and what a
 * ValueError from a retired watcher means, stay in Python. */

static PyObject *fw_get_hub, *fw_wait, *fw_move, *fw_failed, *str_hub;
static PyObject *follow_wait_descr;  /* the descriptor make_follow_wait() made (borrowed from its class) */

static PyObject *
follow_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"watcher", "timeout_exc"};
    PyObject *a[2] = {NULL, Py_None};
    if (unpack("_wait", names, 2, 1, args, nargs, kwnames, a) < 0)
        return NULL;
    PyObject *owner = PyObject_GetAttr(self, str_hub);
    if (owner == NULL)
        return NULL;
    Py_DECREF(owner);  /* the socket keeps it */
    /* The calling thread's hub, from gevent's own (Cython) thread-local lookup:
     * cheaper than telling it from the current greenlet's parent, and right
     * for a destroyed hub too (the thread's new hub differs: the socket moves). */
    PyObject *hub = PyObject_CallNoArgs(fw_get_hub);
    if (hub == NULL)
        return NULL;
    Py_DECREF(hub);  /* the thread's hub stays referenced by the thread */
    PyObject *call[3] = {self, a[0], a[1]};
    if (owner != hub)  /* another hub's socket: move it first (Python) */
        return PyObject_Vectorcall(fw_move, call, 3, NULL);
    PyObject *r = PyObject_Vectorcall(fw_wait, call, 3, NULL);
    if (r != NULL || !PyErr_ExceptionMatches(PyExc_ValueError))
        return r;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    /* A retired (stale) watcher: Python waits again on the direction's
     * current one, or raises what the failure means. */
    PyObject *fargs[4] = {self, a[0], a[1], value};
    r = PyObject_Vectorcall(fw_failed, fargs, 4, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return r;
}

static PyMethodDef follow_wait_def = {
    "_wait", (PyCFunction)(void (*)(void))follow_wait, METH_FASTCALL | METH_KEYWORDS,
    "SocketMixin._wait after greenpool.monkey.sockets.install(): see that module.",
};

static PyObject *
make_follow_wait(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "make_follow_wait(mixin_class, get_hub, gevent_wait, move, failed)");
        return NULL;
    }
    Py_XSETREF(fw_get_hub, Py_NewRef(args[1]));
    Py_XSETREF(fw_wait, Py_NewRef(args[2]));
    Py_XSETREF(fw_move, Py_NewRef(args[3]));
    Py_XSETREF(fw_failed, Py_NewRef(args[4]));
    /* A method descriptor: called unbound by LOAD_METHOD, with a type check. */
    PyObject *descr = PyDescr_NewMethod((PyTypeObject *)args[0], &follow_wait_def);
    Py_XSETREF(follow_wait_descr, Py_XNewRef(descr));
    return descr;
}

/* ---- gevent's SocketMixin.recv / recv_into, without raising EAGAIN first ----
 *
 * Why: gevent's recv tries the socket, catches the BlockingIOError CPython
 * raises when nothing is there (an exception object, its message and a
 * Python-level except: ~0.6 us), then waits and tries again. Every recv that
 * has to wait pays that. Here the non-blocking recv(2) is made directly
 * (MSG_DONTWAIT, holding the GIL: it cannot block), EAGAIN is just a return
 * code, and the wait is gevent's own, through ``self._wait(self._read_event)``
 * as in gevent (so a socket timeout, a closed socket and a move to another hub
 * behave as they do there). Any call these fast paths do not cover exactly
 * (keywords, non-int sizes, an unusual buffer) goes to gevent's method. */

#include <errno.h>
#include <sys/socket.h>

static PyObject *gr_recv, *gr_recv_into;  /* gevent's methods: the fallbacks */
static PyObject *str_sock, *str_fileno, *str_timeout, *str_read_event, *str_wait_name;
static PyObject *zero_float, *socket_type;  /* 0.0; _socket.socket */

/* Reads this large or larger release the GIL around the copy, as CPython's do. */
#define BIG_READ 65536

/* The descriptor of the socket's _socket.socket (-1 once closed); 0 when the
 * socket holds something else (gevent's method then does the call), -1 raised. */
static int
socket_fd(PyObject *self, long *fd)
{
    PyObject *sock = PyObject_GetAttr(self, str_sock);
    if (sock == NULL)
        return -1;
    if (!PyObject_TypeCheck(sock, (PyTypeObject *)socket_type)) {
        Py_DECREF(sock);
        return 0;
    }
    PyObject *no = PyObject_CallMethodNoArgs(sock, str_fileno);
    Py_DECREF(sock);
    if (no == NULL)
        return -1;
    *fd = PyLong_AsLong(no);
    Py_DECREF(no);
    return (*fd == -1 && PyErr_Occurred()) ? -1 : 1;
}

static ssize_t
recv_now(long fd, void *buf, size_t len, long flags)
{
    ssize_t n;
    if (len < BIG_READ)
        return recv((int)fd, buf, len, (int)flags | MSG_DONTWAIT);
    Py_BEGIN_ALLOW_THREADS
    n = recv((int)fd, buf, len, (int)flags | MSG_DONTWAIT);
    Py_END_ALLOW_THREADS
    return n;
}

/* recv(2) said ``err``: 0 to try again (after waiting when it would block), -1 raised. */
static int
after_error(PyObject *self, int err)
{
    if (err == EINTR)
        return PyErr_CheckSignals();
    if (err != EAGAIN && err != EWOULDBLOCK) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* gevent: ``if self.timeout == 0.0: raise`` (a non-blocking socket). */
    PyObject *timeout = PyObject_GetAttr(self, str_timeout);
    if (timeout == NULL)
        return -1;
    int nonblocking = timeout == Py_None ? 0 : PyObject_RichCompareBool(timeout, zero_float, Py_EQ);
    Py_DECREF(timeout);
    if (nonblocking != 0) {
        if (nonblocking > 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return -1;
    }
    PyObject *event = PyObject_GetAttr(self, str_read_event);
    if (event == NULL)
        return -1;
    PyObject *call[2] = {self, event};
    /* The socket's _wait: follow_wait, called directly when it is the class's
     * (each dispatch layer is C stack a parked greenlet keeps: ~0.3 KiB a
     * connection waiting to read), else by name. */
    PyObject *r = (follow_wait_descr != NULL
                   && _PyType_Lookup(Py_TYPE(self), str_wait_name) == follow_wait_descr)
                      ? follow_wait(self, call + 1, 1, NULL)
                      : PyObject_VectorcallMethod(str_wait_name, call, 2, NULL);
    Py_DECREF(event);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* An int argument (bool and IntFlag included, as CPython's "i" takes them) that fits. */
static int
int_arg(PyObject *arg, long *out)
{
    if (!PyLong_Check(arg))
        return 0;
    int overflow;
    *out = PyLong_AsLongAndOverflow(arg, &overflow);
    return !overflow && *out >= INT_MIN && *out <= INT_MAX;
}

static PyObject *
fast_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    long size, flags = 0;
    /* recv(0) never touches the socket in CPython: gevent's method returns b"". */
    if (kwnames != NULL || nargs < 1 || nargs > 2 || !int_arg(args[0], &size) || size <= 0
        || (nargs == 2 && !int_arg(args[1], &flags)))
        return call_with_self(gr_recv, self, args, nargs, kwnames);
    for (;;) {
        long fd;
        int got = socket_fd(self, &fd);
        if (got <= 0)
            return got < 0 ? NULL : call_with_self(gr_recv, self, args, nargs, kwnames);
        PyObject *bytes = PyBytes_FromStringAndSize(NULL, size);
        if (bytes == NULL)
            return NULL;
        ssize_t n = recv_now(fd, PyBytes_AS_STRING(bytes), (size_t)size, flags);
        if (n >= 0) {
            /* (With MSG_TRUNC n may exceed size: CPython resizes to n all the same.) */
            if (n != size && _PyBytes_Resize(&bytes, n) < 0)
                return NULL;
            return bytes;
        }
        int err = errno;
        Py_DECREF(bytes);
        if (after_error(self, err) < 0)
            return NULL;
    }
}

static PyObject *
fast_recv_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    long nbytes = 0, flags = 0;
    if (kwnames != NULL || nargs < 1 || nargs > 3
        || (nargs >= 2 && !int_arg(args[1], &nbytes)) || nbytes < 0
        || (nargs == 3 && !int_arg(args[2], &flags)))
        return call_with_self(gr_recv_into, self, args, nargs, kwnames);
    /* As gevent's: the buffer is taken for each try and released before a wait
     * (another greenlet may resize or close it meanwhile). Whatever these tries
     * do not cover exactly goes to gevent's method, which raises the stdlib's
     * errors: a buffer that cannot be written, nbytes over its length, and a
     * zero-length read (CPython returns 0 without touching the socket). */
    for (;;) {
        Py_buffer view;
        if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) {
            PyErr_Clear();
            return call_with_self(gr_recv_into, self, args, nargs, kwnames);
        }
        size_t want = nbytes == 0 ? (size_t)view.len : (size_t)nbytes;
        long fd;
        int got = (nbytes > view.len || want == 0) ? 0 : socket_fd(self, &fd);
        if (got <= 0) {
            PyBuffer_Release(&view);
            return got < 0 ? NULL : call_with_self(gr_recv_into, self, args, nargs, kwnames);
        }
        ssize_t n = recv_now(fd, view.buf, want, flags);
        int err = errno;
        PyBuffer_Release(&view);
        if (n >= 0)  /* with MSG_TRUNC, the datagram's length, as CPython returns */
            return PyLong_FromSsize_t(n);
        if (after_error(self, err) < 0)
            return NULL;
    }
}

static PyMethodDef fast_recv_def = {
    "recv", (PyCFunction)(void (*)(void))fast_recv, METH_FASTCALL | METH_KEYWORDS,
    "gevent's SocketMixin.recv without raising EAGAIN first: see greenpool.monkey.sockets.",
};
static PyMethodDef fast_recv_into_def = {
    "recv_into", (PyCFunction)(void (*)(void))fast_recv_into, METH_FASTCALL | METH_KEYWORDS,
    "gevent's SocketMixin.recv_into without raising EAGAIN first: see greenpool.monkey.sockets.",
};

static PyObject *
make_fast_recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "make_fast_recv(mixin_class, gevent_recv, gevent_recv_into)");
        return NULL;
    }
    Py_XSETREF(gr_recv, Py_NewRef(args[1]));
    Py_XSETREF(gr_recv_into, Py_NewRef(args[2]));
    PyObject *recv_ = PyDescr_NewMethod((PyTypeObject *)args[0], &fast_recv_def);
    PyObject *recv_into_ = PyDescr_NewMethod((PyTypeObject *)args[0], &fast_recv_into_def);
    if (recv_ == NULL || recv_into_ == NULL) {
        Py_XDECREF(recv_);
        Py_XDECREF(recv_into_);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, recv_, recv_into_);
    Py_DECREF(recv_);
    Py_DECREF(recv_into_);
    return pair;
}

static PyMethodDef module_methods[] = {
    {"configure_lock", (PyCFunction)configure_lock, METH_O,
     "configure_lock(greenpool.sync.Lock): the lock type bounded queues' fast path reads."},
    {"make_follow_wait", (PyCFunction)(void (*)(void))make_follow_wait, METH_FASTCALL,
     "make_follow_wait(mixin_class, get_hub, gevent_wait, move, failed) -> the _wait method."},
    {"make_fast_recv", (PyCFunction)(void (*)(void))make_fast_recv, METH_FASTCALL,
     "make_fast_recv(mixin_class, gevent_recv, gevent_recv_into) -> (recv, recv_into)."},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "greenpool._speedups",
    "C versions of greenpool's hottest pure-Python paths (optional: see greenpool.monkey.queue).",
    -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *queue = PyImport_ImportModule("queue");
    if (queue == NULL)
        return NULL;
    Empty = PyObject_GetAttrString(queue, "Empty");
    Py_DECREF(queue);
    if (Empty == NULL)
        return NULL;
    str_put_locked = PyUnicode_InternFromString("_put_locked");
    str_get_locked = PyUnicode_InternFromString("_get_locked");
    str_wake_one = PyUnicode_InternFromString("wake_one");
    str_wait_get = PyUnicode_InternFromString("_wait_get");
    str_notify_not_empty = PyUnicode_InternFromString("_notify_not_empty");
    str_locked = PyUnicode_InternFromString("locked");
    str_hub = PyUnicode_InternFromString("hub");
    str_sock = PyUnicode_InternFromString("_sock");
    str_fileno = PyUnicode_InternFromString("fileno");
    str_timeout = PyUnicode_InternFromString("timeout");
    str_read_event = PyUnicode_InternFromString("_read_event");
    str_wait_name = PyUnicode_InternFromString("_wait");
    zero_float = PyFloat_FromDouble(0.0);
    PyObject *socket_module = PyImport_ImportModule("_socket");
    if (socket_module == NULL)
        return NULL;
    socket_type = PyObject_GetAttrString(socket_module, "socket");
    Py_DECREF(socket_module);
    if (!str_sock || !str_fileno || !str_timeout || !str_read_event || !str_wait_name
        || !zero_float || socket_type == NULL || !PyType_Check(socket_type))
        return NULL;
    zero = PyLong_FromLong(0);
    if (!str_put_locked || !str_get_locked || !str_wake_one || !str_wait_get || !zero
        || !str_notify_not_empty
        || !str_locked || !str_hub)
        return NULL;
    if (PyType_Ready(&QueueCoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&QueueCoreType);
    if (PyModule_AddObject(m, "QueueCore", (PyObject *)&QueueCoreType) < 0) {
        Py_DECREF(&QueueCoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
