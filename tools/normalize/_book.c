/* The compiled level loop of BookTracker.message: the same Python dicts and heaps, no bytecode.
 *
 * book.py keeps each side of the book as a dict {float(price): (price, size)} plus a heap of
 * the side's prices (negated for bids), cleaned lazily. Interpreting the per-level loop costs
 * more than the dict and heap work itself; this function does exactly what the loop in
 * BookTracker.message and Side.add do, with the same objects (dict, list, tuples, floats) and
 * in the same order, so the book and its heap come out identical, element for element
 * (tests/export/test_native_book.py checks that against the pure loop with hypothesis).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject *side;   /* the Side object (for _rebuild) */
    PyObject *levels; /* dict */
    PyObject *heap;   /* list */
    int bid;
} side_t;

static PyObject *s_levels, *s_heap, *s_bid, *s_rebuild;

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

/* one (is_bid, price, size) */
static int level(side_t *bids, side_t *asks, PyObject *is_bid, PyObject *price, PyObject *size) {
    int r = -1;
    PyObject *key = PyNumber_Float(price), *fsize = NULL, *value = NULL;
    if (key == NULL) return -1;
    int b = PyObject_IsTrue(is_bid);
    if (b < 0) goto done;
    side_t *s = b ? bids : asks;
    if ((fsize = PyNumber_Float(size)) == NULL) goto done;
    if (PyFloat_AS_DOUBLE(fsize) == 0.0) { /* levels.pop(key, None) */
        if (PyDict_DelItem(s->levels, key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) goto done;
            PyErr_Clear();
        }
        r = 0;
        goto done;
    }
    int has = PyDict_Contains(s->levels, key);
    if (has < 0 || (value = PyTuple_Pack(2, price, size)) == NULL) goto done;
    r = has ? PyDict_SetItem(s->levels, key, value) : add(s, key, value);
done:
    Py_DECREF(key);
    Py_XDECREF(fsize);
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

PyDoc_STRVAR(apply_doc,
"apply(levels, bids, asks) -> int\n\n"
"Apply each (is_bid, price, size) of `levels` to the Side objects `bids` and `asks` as\n"
"BookTracker.message's loop does; returns the number of levels.");

static PyObject *apply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "apply(levels, bids, asks)");
        return NULL;
    }
    side_t bids = {0}, asks = {0};
    Py_ssize_t n = 0;
    PyObject *it = NULL, *item, *res = NULL;
    if (side_init(&bids, args[1]) < 0 || side_init(&asks, args[2]) < 0) goto done;
    if ((it = PyObject_GetIter(args[0])) == NULL) goto done;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *is_bid, *price, *size, *tmp;
        int r = unpack3(item, &is_bid, &price, &size, &tmp);
        n++;
        if (r == 0) r = level(&bids, &asks, is_bid, price, size);
        Py_XDECREF(tmp);
        Py_DECREF(item);
        if (r < 0) goto done;
    }
    if (!PyErr_Occurred()) res = PyLong_FromSsize_t(n);
done:
    Py_XDECREF(it);
    side_clear(&bids);
    side_clear(&asks);
    return res;
}

static PyMethodDef methods[] = {
    {"apply", (PyCFunction)(void (*)(void))apply, METH_FASTCALL, apply_doc},
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
        !(s_rebuild = PyUnicode_InternFromString("_rebuild")))
        return NULL;
    return PyModule_Create(&module);
}
