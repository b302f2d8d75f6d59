/* BookTracker.message compiled: the same Python dicts, heaps and attributes, no bytecode.
 *
 * book.py keeps each side of the book as a dict {float(price): (price, size)} plus a heap of
 * the side's prices (negated for bids), cleaned lazily. Interpreting the per-level loop costs
 * more than the dict and heap work itself; `message` does exactly what BookTracker.message and
 * Side.add do, with the same objects (dict, list, tuples, floats), the same attribute reads and
 * writes and the same Python calls for the rare cases (first frame, snapshot, heap rebuild,
 * stale heap top, crossing change), in the same order, so the book, its heap and the stats
 * come out identical
 * (tests/export/test_native_book.py checks that against the pure loop with hypothesis).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject *side;   /* the Side object (for _rebuild) */
    PyObject *levels; /* dict */
    PyObject *heap;   /* list */
    int bid;
} side_t;

static PyObject *s_levels, *s_heap, *s_bid, *s_rebuild, *s_best_key;

static int side_init(side_t *s, PyObject *side) {
    s->side = side;
    s->levels = PyObject_GetAttr(side, s_levels);
    s->heap = PyObject_GetAttr(side, s_heap);
    PyObject *b = PyObject_GetAttr(side, s_bid);
    if (s->levels == NULL || s->heap == NULL || b == NULL) {
        Py_XDECREF(b);
        return -1;
    }
    s->bid = PyObject_IsTrue(b);
    Py_DECREF(b);
    if (s->bid < 0) return -1;
    if (!PyDict_CheckExact(s->levels) || !PyList_CheckExact(s->heap)) {
        PyErr_SetString(PyExc_TypeError, "Side.levels must be a dict and Side._heap a list");
        return -1;
    }
    return 0;
}

static void side_clear(side_t *s) {
    Py_CLEAR(s->levels);
    Py_CLEAR(s->heap);
}

static int less(PyObject *a, PyObject *b) {
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_AS_DOUBLE(a) < PyFloat_AS_DOUBLE(b);
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* heapq.heappush: append, then heapq's _siftdown(heap, 0, len - 1) */
static int heappush(PyObject *heap, PyObject *item) {
    if (PyList_Append(heap, item) < 0) return -1;
    Py_ssize_t pos = PyList_GET_SIZE(heap) - 1;
    PyObject **arr = ((PyListObject *)heap)->ob_item;
    PyObject *newitem = arr[pos];
    while (pos > 0) {
        Py_ssize_t parentpos = (pos - 1) >> 1;
        PyObject *parent = arr[parentpos];
        int cmp = less(newitem, parent);
        if (cmp < 0) return -1;
        if (cmp == 0) break;
        arr[pos] = parent;
        arr[parentpos] = newitem;
        pos = parentpos;
    }
    return 0;
}

/* Side.add(key, price, size) */
static int add(side_t *s, PyObject *key, PyObject *value) {
    PyObject *hk = s->bid ? PyNumber_Negative(key) : Py_NewRef(key);
    if (hk == NULL) return -1;
    int r = heappush(s->heap, hk);
    Py_DECREF(hk);
    if (r < 0) return -1;
    if (PyDict_SetItem(s->levels, key, value) < 0) return -1;
    if (PyList_GET_SIZE(s->heap) > 2 * PyDict_GET_SIZE(s->levels) + 1024) {
        PyObject *got = PyObject_CallMethodNoArgs(s->side, s_rebuild);
        if (got == NULL) return -1;
        Py_DECREF(got);
        Py_SETREF(s->heap, PyObject_GetAttr(s->side, s_heap));
        if (s->heap == NULL) return -1;
        if (!PyList_CheckExact(s->heap)) {
            PyErr_SetString(PyExc_TypeError, "Side._heap must be a list");
            return -1;
        }
    }
    return 0;
}

/* float(s) for the usual decimal string, exactly as float() gives it: a compact ASCII string
 * of digits with at most one '.', at least one digit, at most 19 digits in all with a value
 * below 2^53, and at most 22 after the point is m / 10^k with m and 10^k exact doubles, and
 * one IEEE division is correctly rounded: the value float()'s own (correctly rounding) parser
 * gives (its "fast path"). 1 and *out set when it applies, 0 to use float(). */
static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int fast_float(PyObject *s, double *out) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_COMPACT_ASCII(s)) return 0;
    const char *c = (const char *)PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), digits = 0, frac = 0;
    int dot = 0;
    uint64_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char ch = c[i];
        if (ch >= '0' && ch <= '9') {
            if (++digits > 19) return 0;
            m = m * 10 + (uint64_t)(ch - '0');
            frac += dot;
        } else if (ch == '.' && !dot) {
            dot = 1;
        } else {
            return 0;
        }
    }
    if (digits == 0 || frac > 22 || m > ((uint64_t)1 << 53)) return 0;
    *out = (double)m / POW10[frac];
    return 1;
}

/* float(x), with the fast path above */
static PyObject *to_float(PyObject *x) {
    double v;
    return fast_float(x, &v) ? PyFloat_FromDouble(v) : PyNumber_Float(x);
}

/* float(size) == 0.0 (-1: float() raised) */
static int is_zero(PyObject *size) {
    double v;
    if (fast_float(size, &v)) return v == 0.0;
    PyObject *f = PyNumber_Float(size);
    if (f == NULL) return -1;
    int z = PyFloat_AS_DOUBLE(f) == 0.0;
    Py_DECREF(f);
    return z;
}

/* one (is_bid, price, size) */
static int level(side_t *bids, side_t *asks, PyObject *is_bid, PyObject *price, PyObject *size) {
    int r = -1, zero;
    PyObject *key = to_float(price), *value = NULL;
    if (key == NULL) return -1;
    int b = PyObject_IsTrue(is_bid);
    if (b < 0) goto done;
    side_t *s = b ? bids : asks;
    if ((zero = is_zero(size)) < 0) goto done;
    if (zero) { /* levels.pop(key, None) */
        if (PyDict_DelItem(s->levels, key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) goto done;
            PyErr_Clear();
        }
        r = 0;
        goto done;
    }
    int has = PyDict_Contains(s->levels, key);
    if (has < 0 || (value = PyTuple_Pack(2, price, size)) == NULL) goto done;
    if (PyUnicode_CheckExact(price) && PyUnicode_CheckExact(size))
        PyObject_GC_UnTrack(value); /* holds no container: what the collector would do */
    r = has ? PyDict_SetItem(s->levels, key, value) : add(s, key, value);
done:
    Py_DECREF(key);
    Py_XDECREF(value);
    return r;
}

static int unpack3(PyObject *item, PyObject **a, PyObject **b, PyObject **c, PyObject **tmp) {
    PyObject *t = item;
    *tmp = NULL;
    if (!PyTuple_CheckExact(item)) {
        if ((t = *tmp = PySequence_Tuple(item)) == NULL) return -1;
    }
    if (PyTuple_GET_SIZE(t) != 3) {
        PyErr_Format(PyExc_ValueError, "expected 3 values to unpack (got %zd)",
                     PyTuple_GET_SIZE(t));
        return -1;
    }
    *a = PyTuple_GET_ITEM(t, 0);
    *b = PyTuple_GET_ITEM(t, 1);
    *c = PyTuple_GET_ITEM(t, 2);
    return 0;
}

/* levels of one message on both sides; the count, or -1 */
static Py_ssize_t apply_levels(PyObject *levels, side_t *bids, side_t *asks) {
    Py_ssize_t n = 0;
    PyObject *it = PyObject_GetIter(levels), *item;
    if (it == NULL) return -1;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *is_bid, *price, *size, *tmp;
        int r = unpack3(item, &is_bid, &price, &size, &tmp);
        n++;
        if (r == 0) r = level(bids, asks, is_bid, price, size);
        Py_XDECREF(tmp);
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : n;
}

static PyObject *s_stats, *s_first_ns, *s_last_ns, *s_seen, *s_book, *s_bids, *s_asks, *s_clear,
    *s_snapshots, *s_updates, *s_levels_n, *s_valid, *s_valid_since, *s_in_snapshot,
    *s_cross_state, *s_crossing;

/* obj.name += n */
static int incr(PyObject *obj, PyObject *name, Py_ssize_t n) {
    PyObject *v = PyObject_GetAttr(obj, name), *by = NULL, *sum = NULL;
    int r = -1;
    if (v != NULL && (by = PyLong_FromSsize_t(n)) != NULL
        && (sum = PyNumber_InPlaceAdd(v, by)) != NULL)
        r = PyObject_SetAttr(obj, name, sum);
    Py_XDECREF(v);
    Py_XDECREF(by);
    Py_XDECREF(sum);
    return r;
}

static int call0(PyObject *obj, PyObject *name) {
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* the best key of a side as message() reads it: the heap top if it is still on the book,
 * else side.best_key(); a new reference (None for an empty side) or NULL */
static PyObject *top(side_t *s) {
    if (PyList_GET_SIZE(s->heap) == 0) Py_RETURN_NONE;
    PyObject *h0 = PyList_GET_ITEM(s->heap, 0);
    PyObject *k = s->bid ? PyNumber_Negative(h0) : Py_NewRef(h0);
    if (k == NULL) return NULL;
    int in = PyDict_Contains(s->levels, k);
    if (in < 0) {
        Py_DECREF(k);
        return NULL;
    }
    if (!in) Py_SETREF(k, PyObject_CallMethodNoArgs(s->side, s_best_key));
    return k;
}

/* 0 normal, 1 locked, 2 crossed, -1 error: the crossing check of message() */
static int crossing(side_t *bids, side_t *asks) {
    int state = 0, ge, eq;
    PyObject *b = top(bids), *a = NULL;
    if (b == NULL || (a = top(asks)) == NULL) {
        state = -1;
    } else if (b != Py_None && a != Py_None) {
        if ((ge = PyObject_RichCompareBool(b, a, Py_GE)) < 0) state = -1;
        else if (ge) state = (eq = PyObject_RichCompareBool(b, a, Py_EQ)) < 0 ? -1 : eq ? 1 : 2;
    }
    Py_XDECREF(b);
    Py_XDECREF(a);
    return state;
}

/* the head of message(): first/last time seen, snapshot or update counted */
static int begin(PyObject *tr, PyObject *st, PyObject *ts, PyObject *book, int snap) {
    PyObject *first = PyObject_GetAttr(st, s_first_ns);
    if (first == NULL) return -1;
    int none = first == Py_None, r = 0;
    Py_DECREF(first);
    if (none) {
        PyObject *got = PyObject_CallMethodOneArg(tr, s_seen, ts);
        if (got == NULL) return -1;
        Py_DECREF(got);
    } else {
        PyObject *last = PyObject_GetAttr(st, s_last_ns);
        if (last == NULL) return -1;
        int gt = PyObject_RichCompareBool(ts, last, Py_GT);
        Py_DECREF(last);
        if (gt < 0 || (gt && PyObject_SetAttr(st, s_last_ns, ts) < 0)) return -1;
    }
    if (snap) r = call0(book, s_clear) < 0 ? -1 : incr(st, s_snapshots, 1);
    else r = incr(st, s_updates, 1);
    return r;
}

/* the tail of message(): validity after a snapshot, then the crossing state */
static int end(PyObject *tr, PyObject *ts, side_t *bids, side_t *asks, int snap) {
    PyObject *v = PyObject_GetAttr(tr, s_valid);
    if (v == NULL) return -1;
    int valid = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (valid < 0) return -1;
    if (snap && !valid) {
        if (PyObject_SetAttr(tr, s_valid, Py_True) < 0
            || PyObject_SetAttr(tr, s_valid_since, ts) < 0)
            return -1;
        valid = 1;
    }
    if (PyObject_SetAttr(tr, s_in_snapshot, Py_False) < 0) return -1;
    int state = valid ? crossing(bids, asks) : 0;
    if (state < 0) return -1;
    PyObject *was = PyObject_GetAttr(tr, s_cross_state), *now = PyLong_FromLong(state);
    int same = (was && now) ? PyObject_RichCompareBool(now, was, Py_EQ) : -1;
    Py_XDECREF(was);
    if (same == 0) {
        PyObject *got = PyObject_CallMethodOneArg(tr, s_crossing, now);
        same = got == NULL ? -1 : 1;
        Py_XDECREF(got);
    }
    Py_XDECREF(now);
    return same < 0 ? -1 : 0;
}

PyDoc_STRVAR(message_doc,
"message(tracker, ts, is_snapshot, levels) -> None\n\n"
"BookTracker.message, compiled: the same attribute reads and writes in the same order.");

static PyObject *message(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "message(tracker, ts, is_snapshot, levels)");
        return NULL;
    }
    PyObject *tr = args[0], *ts = args[1];
    PyObject *st = NULL, *book = NULL, *bids = NULL, *asks = NULL, *res = NULL;
    side_t b = {0}, a = {0};
    int snap = PyObject_IsTrue(args[2]);
    Py_ssize_t n;
    if (snap < 0 || (st = PyObject_GetAttr(tr, s_stats)) == NULL) goto done;
    if ((book = PyObject_GetAttr(tr, s_book)) == NULL
        || (bids = PyObject_GetAttr(book, s_bids)) == NULL
        || (asks = PyObject_GetAttr(book, s_asks)) == NULL)
        goto done;
    if (begin(tr, st, ts, book, snap) < 0) goto done;
    /* after begin: a snapshot clears the sides in place (same dict and list) */
    if (side_init(&b, bids) < 0 || side_init(&a, asks) < 0) goto done;
    if ((n = apply_levels(args[3], &b, &a)) < 0 || incr(st, s_levels_n, n) < 0) goto done;
    if (end(tr, ts, &b, &a, snap) < 0) goto done;
    res = Py_NewRef(Py_None);
done:
    side_clear(&b);
    side_clear(&a);
    Py_XDECREF(st);
    Py_XDECREF(book);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return res;
}

PyDoc_STRVAR(best_doc,
"best(side) -> (price, size) | None\n\n"
"Side.best, compiled: the heap top's level if it is still on the book, else side.best_key()'s.");

static PyObject *best(PyObject *self, PyObject *side) {
    side_t s = {0};
    PyObject *res = NULL, *k = NULL;
    if (side_init(&s, side) < 0) goto done;
    if (PyList_GET_SIZE(s.heap) > 0) {
        PyObject *h0 = PyList_GET_ITEM(s.heap, 0);
        if ((k = s.bid ? PyNumber_Negative(h0) : Py_NewRef(h0)) == NULL) goto done;
        res = PyDict_GetItemWithError(s.levels, k);
        if (res != NULL) {
            Py_INCREF(res);
            goto done;
        }
        if (PyErr_Occurred()) goto done;
        Py_CLEAR(k);
    }
    if ((k = PyObject_CallMethodNoArgs(side, s_best_key)) == NULL) goto done;
    res = k == Py_None ? Py_NewRef(Py_None) : PyObject_GetItem(s.levels, k);
done:
    Py_XDECREF(k);
    side_clear(&s);
    return res;
}

static PyMethodDef methods[] = {
    {"best", best, METH_O, best_doc},
    {"message", (PyCFunction)(void (*)(void))message, METH_FASTCALL, message_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_book", "Compiled level loop of the L2 book (see book.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__book(void) {
    if (!(s_levels = PyUnicode_InternFromString("levels")) ||
        !(s_heap = PyUnicode_InternFromString("_heap")) ||
        !(s_bid = PyUnicode_InternFromString("_bid")) ||
        !(s_rebuild = PyUnicode_InternFromString("_rebuild")) ||
        !(s_stats = PyUnicode_InternFromString("stats")) ||
        !(s_first_ns = PyUnicode_InternFromString("first_ns")) ||
        !(s_last_ns = PyUnicode_InternFromString("last_ns")) ||
        !(s_seen = PyUnicode_InternFromString("_seen")) ||
        !(s_book = PyUnicode_InternFromString("book")) ||
        !(s_bids = PyUnicode_InternFromString("bids")) ||
        !(s_asks = PyUnicode_InternFromString("asks")) ||
        !(s_clear = PyUnicode_InternFromString("clear")) ||
        !(s_snapshots = PyUnicode_InternFromString("snapshots")) ||
        !(s_updates = PyUnicode_InternFromString("updates")) ||
        !(s_levels_n = PyUnicode_InternFromString("levels")) ||
        !(s_valid = PyUnicode_InternFromString("valid")) ||
        !(s_valid_since = PyUnicode_InternFromString("_valid_since")) ||
        !(s_in_snapshot = PyUnicode_InternFromString("_in_snapshot")) ||
        !(s_cross_state = PyUnicode_InternFromString("_cross_state")) ||
        !(s_crossing = PyUnicode_InternFromString("_crossing")) ||
        !(s_best_key = PyUnicode_InternFromString("best_key")))
        return NULL;
    PyObject *m = PyModule_Create(&module), *f = NULL, *meth = NULL;
    if (m == NULL) return NULL;
    /* `best` as a method descriptor (binds like a Python function): Side.best */
    if ((f = PyObject_GetAttrString(m, "best")) == NULL
        || (meth = PyInstanceMethod_New(f)) == NULL
        || PyModule_AddObject(m, "best_method", meth) < 0) {
        Py_XDECREF(f);
        Py_XDECREF(meth);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(f);
    return m;
}
