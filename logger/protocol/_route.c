/* The compiled hot paths of the two dialect routers (logger.protocol._route).
 *
 * Why: routing is the largest share of the event-loop thread's work per frame (issue 16); the
 * pure-Python closures (route_at.py ``_hot_path``, route_exchange.py ``_hot_path``) spend most of
 * it on interpreter overhead and on the temporary objects of ``split``/``partition``/``%``. These
 * types make exactly the same decisions over the same bytes, with the same side effects on the
 * same Python objects (``FeedCounters.messages``, ``SequenceTracker.expected``/``needle``, the
 * Exchange ``TradeIdTracker.last`` dict) and return the same Route tuples (``entry[0]`` of the
 * RouteTable's dicts, which stay the one owner of routes). Everything they do not settle goes to
 * the same Python callables (``full``, ``_after_seq``). Anything but ``bytes`` (which the shell
 * always passes) is refused with TypeError before any side effect; the pure closure would fail
 * on it too, but only at its first dict lookup. tests/logger/test_route_compiled.py proves the
 * two agree (hypothesis).
 *
 * Searches use memmem/memchr with Python's ``bytes.find`` semantics (first occurrence, start
 * clamped the same way, a negative start counted from the end).
 *
 * The module reads one environment variable at import, CBL_PURE (set and not "" or "0": use
 * the pure-Python paths), exposed as PURE_FORCED: the sans-I/O protocol core imports no ``os``,
 * so the choice is read here and applied by logger/protocol/native.py, the one selection point.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdlib.h>
#include <string.h>

#define AT_PREFIX "{\"channel\":\""
#define AT_PREFIX_LEN ((Py_ssize_t)(sizeof(AT_PREFIX) - 1))
#define L2_HEAD "{\"channel\":\"l2_data\","
#define L2_HEAD_LEN ((Py_ssize_t)(sizeof(L2_HEAD) - 1))
#define SEQ_KEY "\"sequence_num\":"
#define SEQ_KEY_LEN ((Py_ssize_t)(sizeof(SEQ_KEY) - 1))
#define PKEY "\"product_id\":\""
#define PKEY_LEN ((Py_ssize_t)(sizeof(PKEY) - 1))
#define EX_L2UPDATE "{\"type\":\"l2update\",\"product_id\":\""
#define EX_SNAPSHOT "{\"type\":\"snapshot\",\"product_id\":\""
#define EX_L2_LEN ((Py_ssize_t)(sizeof(EX_L2UPDATE) - 1))
#define EX_MATCH "{\"type\":\"match\",\"trade_id\":"
#define EX_MATCH_LEN ((Py_ssize_t)(sizeof(EX_MATCH) - 1))
/* route_at._SNAPSHOT_BYTES: larger frames go to _after_seq without the split */
#define SNAPSHOT_BYTES 16384

static PyObject *s_messages, *s_expected, *s_needle, *one, *int_max, *two_63, *needle_fmt,
    *nul_needle;

/* ------------------------------------------------------------------ byte helpers */

/* ``bytes.find(pat, start)`` for a pattern of length >= 1. */
static Py_ssize_t
find(const char *s, Py_ssize_t n, const char *pat, Py_ssize_t m, Py_ssize_t start)
{
    if (start < 0) {
        start += n;
        if (start < 0)
            start = 0;
    }
    if (start > n || n - start < m)
        return -1;
    const char *r = m == 1 ? memchr(s + start, pat[0], (size_t)(n - start))
                           : memmem(s + start, (size_t)(n - start), pat, (size_t)m);
    return r == NULL ? -1 : (Py_ssize_t)(r - s);
}

/* ``bytes.startswith(pat, start)`` for start >= 0. */
static int
startswith(const char *s, Py_ssize_t n, const char *pat, Py_ssize_t m, Py_ssize_t start)
{
    return start <= n && n - start >= m && memcmp(s + start, pat, (size_t)m) == 0;
}

/* ``d.get(raw[a:b])`` (Python slice bounds already resolved, b may be < a): borrowed ref, NULL
 * with no error set if absent. */
static PyObject *
get_slice(PyObject *d, const char *s, Py_ssize_t a, Py_ssize_t b, int *err)
{
    PyObject *key = PyBytes_FromStringAndSize(s + a, b > a ? b - a : 0);
    if (key == NULL) {
        *err = 1;
        return NULL;
    }
    PyObject *v;
    if (PyDict_CheckExact(d)) {
        v = PyDict_GetItemWithError(d, key);
        if (v == NULL && PyErr_Occurred())
            *err = 1;
    } else { /* not expected (the tables are dicts): the generic mapping protocol */
        v = PyObject_GetItem(d, key);
        if (v == NULL) {
            if (PyErr_ExceptionMatches(PyExc_KeyError))
                PyErr_Clear();
            else
                *err = 1;
        } else {
            Py_DECREF(v); /* still owned by d */
        }
    }
    Py_DECREF(key);
    return v;
}

/* ``t[i]`` as a new reference. */
static PyObject *
item(PyObject *t, Py_ssize_t i)
{
    if (PyTuple_Check(t) && PyTuple_GET_SIZE(t) > i) {
        PyObject *v = PyTuple_GET_ITEM(t, i);
        Py_INCREF(v);
        return v;
    }
    return PySequence_GetItem(t, i);
}

/* The offset of ``obj.name`` where it is a plain writable ``__slots__`` member of a type with
 * the generic attribute protocol (FeedCounters, SequenceTracker), else -1. Reading and writing
 * the slot then is what ``getattr``/``setattr`` do for it, without the look-up per frame. */
static Py_ssize_t
slot_offset(PyObject *obj, PyObject *name)
{
    PyTypeObject *tp = Py_TYPE(obj);
    if (tp->tp_getattro != PyObject_GenericGetAttr || tp->tp_setattro != PyObject_GenericSetAttr)
        return -1;
    PyObject *d = PyObject_GetAttr((PyObject *)tp, name);
    if (d == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            off = m->offset;
    }
    Py_DECREF(d);
    return off;
}

typedef struct {
    PyObject *name;
    Py_ssize_t off;
} Attr;

/* ``obj.name`` (new ref) */
static inline PyObject *
attr_get(PyObject *obj, const Attr *a)
{
    if (a->off >= 0) {
        PyObject *v = *(PyObject **)((char *)obj + a->off);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(obj, a->name);
}

/* ``obj.name = v`` */
static inline int
attr_set(PyObject *obj, const Attr *a, PyObject *v)
{
    if (a->off >= 0) {
        PyObject **p = (PyObject **)((char *)obj + a->off);
        PyObject *old = *p;
        *p = Py_NewRef(v);
        Py_XDECREF(old);
        return 0;
    }
    return PyObject_SetAttr(obj, a->name, v);
}

/* ``obj.name += 1`` */
static int
bump(PyObject *obj, const Attr *a)
{
    PyObject *v = attr_get(obj, a);
    if (v == NULL)
        return -1;
    PyObject *w = PyNumber_Add(v, one);
    Py_DECREF(v);
    if (w == NULL)
        return -1;
    int r = attr_set(obj, a, w);
    Py_DECREF(w);
    return r;
}

/* ``sequence.seq_needle(e)``: b'"sequence_num":%d,' % e if e < 1 << 63 else b"\x00" */
static PyObject *
seq_needle(PyObject *e)
{
    if (PyLong_CheckExact(e)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(e, &overflow);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (overflow > 0)
            return Py_NewRef(nul_needle);
        if (overflow == 0) {
            char buf[SEQ_KEY_LEN + 24];
            char digits[24];
            int nd = 0;
            unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
            do {
                digits[nd++] = (char)('0' + u % 10);
                u /= 10;
            } while (u);
            memcpy(buf, SEQ_KEY, SEQ_KEY_LEN);
            Py_ssize_t len = SEQ_KEY_LEN;
            if (v < 0)
                buf[len++] = '-';
            while (nd)
                buf[len++] = digits[--nd];
            buf[len++] = ',';
            return PyBytes_FromStringAndSize(buf, len);
        }
    }
    int lt = PyObject_RichCompareBool(e, two_63, Py_LT);
    if (lt < 0)
        return NULL;
    return lt ? PyNumber_Remainder(needle_fmt, e) : Py_NewRef(nul_needle);
}

/* ``e = tracker.expected + 1; tracker.expected = e; tracker.needle = seq_needle(e)`` */
static int
advance(PyObject *tracker, const Attr *expected, const Attr *needle)
{
    PyObject *x = attr_get(tracker, expected);
    if (x == NULL)
        return -1;
    PyObject *e = PyNumber_Add(x, one);
    Py_DECREF(x);
    if (e == NULL)
        return -1;
    int r = attr_set(tracker, expected, e);
    if (r == 0) {
        PyObject *nd = seq_needle(e);
        r = nd == NULL ? -1 : attr_set(tracker, needle, nd);
        Py_XDECREF(nd);
    }
    Py_DECREF(e);
    return r;
}

/* The route of a frame with exactly one ``"product_id":"`` key, at or after ``k``, whose id is
 * in ``known``: ``entry[0]`` (new ref); NULL without error when that is not the case. The
 * Python path's ``raw.split(pkey)`` → 2 parts, ``len(parts[0]) >= k``,
 * ``known.get(parts[1].partition(b'"')[0])``. */
static PyObject *
sole_product(PyObject *known, const char *s, Py_ssize_t n, Py_ssize_t k)
{
    Py_ssize_t p = find(s, n, PKEY, PKEY_LEN, 0);
    if (p < k || find(s, n, PKEY, PKEY_LEN, p + PKEY_LEN) >= 0)
        return NULL;
    p += PKEY_LEN;
    Py_ssize_t q = find(s, n, "\"", 1, p);
    int err = 0;
    PyObject *entry = get_slice(known, s, p, q < 0 ? n : q, &err);
    if (entry == NULL || entry == Py_None)
        return NULL; /* error (err) or absent */
    return item(entry, 0);
}

/* ------------------------------------------------------------------ Advanced Trade */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *counters, *tracker, *wires, *l2_wire, *l2_known, *full, *after_seq;
    Py_ssize_t at; /* where the l2_data sequence key was last time */
    Attr messages, expected, needle;
} AtHotPath;

static PyObject *
call_after_seq(AtHotPath *self, PyObject *raw, Py_ssize_t k, PyObject *wire)
{
    PyObject *pk = PyLong_FromSsize_t(k);
    if (pk == NULL)
        return NULL;
    PyObject *args[3] = {raw, pk, wire};
    PyObject *r = PyObject_Vectorcall(self->after_seq, args, 3, NULL);
    Py_DECREF(pk);
    return r;
}

/* l2_data in the venue's layout (prefix and closing ``]}`` checked) */
static PyObject *
at_l2(AtHotPath *self, PyObject *raw, const char *s, Py_ssize_t n)
{
    PyObject *needle = attr_get(self->tracker, &self->needle);
    if (needle == NULL)
        return NULL;
    if (!PyBytes_Check(needle)) {
        Py_DECREF(needle);
        PyErr_SetString(PyExc_TypeError, "SequenceTracker.needle must be bytes");
        return NULL;
    }
    const char *nd = PyBytes_AS_STRING(needle);
    Py_ssize_t nl = PyBytes_GET_SIZE(needle);
    if (!startswith(s, n, nd, nl, self->at)) {
        Py_ssize_t i = find(s, n, SEQ_KEY, SEQ_KEY_LEN, L2_HEAD_LEN);
        if (i < 0 || !startswith(s, n, nd, nl, i)) {
            Py_DECREF(needle);
            return PyObject_CallOneArg(self->full, raw);
        }
        self->at = i;
    }
    Py_DECREF(needle);
    if (advance(self->tracker, &self->expected, &self->needle) < 0)
        return NULL;
    Py_ssize_t k = self->at + nl;
    if (n <= SNAPSHOT_BYTES) {
        PyObject *route = sole_product(self->l2_known, s, n, k);
        if (route != NULL || PyErr_Occurred())
            return route;
    }
    return call_after_seq(self, raw, k - 1, self->l2_wire);
}

/* another channel in the venue's layout: NULL without error means ``full(raw)`` */
static PyObject *
at_other(AtHotPath *self, PyObject *raw, const char *s, Py_ssize_t n)
{
    Py_ssize_t j = find(s, n, "\"", 1, AT_PREFIX_LEN);
    int err = 0;
    PyObject *wire = get_slice(self->wires, s, AT_PREFIX_LEN, j < 0 ? n - 1 : j, &err);
    if (wire == NULL || wire == Py_None)
        return NULL;
    Py_INCREF(wire);
    PyObject *result = NULL;
    PyObject *needle = attr_get(self->tracker, &self->needle);
    if (needle == NULL)
        goto done;
    if (!PyBytes_Check(needle)) {
        PyErr_SetString(PyExc_TypeError, "SequenceTracker.needle must be bytes");
        goto done;
    }
    Py_ssize_t i = find(s, n, SEQ_KEY, SEQ_KEY_LEN, j);
    Py_ssize_t nl = PyBytes_GET_SIZE(needle);
    if (i < 0 || !startswith(s, n, PyBytes_AS_STRING(needle), nl, i))
        goto done; /* NULL, no error: full */
    if (advance(self->tracker, &self->expected, &self->needle) < 0)
        goto done;
    Py_ssize_t k = i + nl;
    PyObject *shared = item(wire, 1);
    if (shared == NULL)
        goto done;
    int is_shared = PyObject_IsTrue(shared);
    Py_DECREF(shared);
    if (is_shared < 0)
        goto done;
    if (!is_shared && n <= SNAPSHOT_BYTES) {
        PyObject *known = item(wire, 2);
        if (known == NULL)
            goto done;
        result = sole_product(known, s, n, k);
        Py_DECREF(known);
        if (result != NULL || PyErr_Occurred())
            goto done;
    }
    result = call_after_seq(self, raw, k - 1, wire);
done:
    Py_XDECREF(needle);
    Py_DECREF(wire);
    return result;
}

static PyObject *
at_call(AtHotPath *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "on_message takes one argument (raw)");
        return NULL;
    }
    PyObject *raw = args[0];
    if (!PyBytes_Check(raw)) {
        PyErr_Format(PyExc_TypeError, "on_message needs bytes, not %.100s",
                     Py_TYPE(raw)->tp_name);
        return NULL;
    }
    if (bump(self->counters, &self->messages) < 0)
        return NULL;
    const char *s = PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    if (startswith(s, n, L2_HEAD, L2_HEAD_LEN, 0)) {
        if (s[n - 1] == '}' && s[n - 2] == ']')
            return at_l2(self, raw, s, n);
    } else if (startswith(s, n, AT_PREFIX, AT_PREFIX_LEN, 0) && s[n - 1] == '}'
               && s[n - 2] == ']') {
        PyObject *route = at_other(self, raw, s, n);
        if (route != NULL || PyErr_Occurred())
            return route;
    }
    return PyObject_CallOneArg(self->full, raw);
}

static PyObject *
at_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"counters", "tracker", "wires", "l2_wire", "full", "after_seq",
                             NULL};
    PyObject *counters, *tracker, *wires, *l2_wire, *full, *after_seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!OOO:AtHotPath", kwlist, &counters,
                                     &tracker, &PyDict_Type, &wires, &l2_wire, &full,
                                     &after_seq))
        return NULL;
    PyObject *l2_known = item(l2_wire, 2);
    if (l2_known == NULL)
        return NULL;
    AtHotPath *self = (AtHotPath *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(l2_known);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)at_call;
    self->counters = Py_NewRef(counters);
    self->tracker = Py_NewRef(tracker);
    self->wires = Py_NewRef(wires);
    self->l2_wire = Py_NewRef(l2_wire);
    self->l2_known = l2_known;
    self->full = Py_NewRef(full);
    self->after_seq = Py_NewRef(after_seq);
    self->at = L2_HEAD_LEN;
    self->messages = (Attr){s_messages, slot_offset(counters, s_messages)};
    self->expected = (Attr){s_expected, slot_offset(tracker, s_expected)};
    self->needle = (Attr){s_needle, slot_offset(tracker, s_needle)};
    return (PyObject *)self;
}

static int
at_traverse(AtHotPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->counters);
    Py_VISIT(self->tracker);
    Py_VISIT(self->wires);
    Py_VISIT(self->l2_wire);
    Py_VISIT(self->l2_known);
    Py_VISIT(self->full);
    Py_VISIT(self->after_seq);
    return 0;
}

static int
at_clear(AtHotPath *self)
{
    Py_CLEAR(self->counters);
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->wires);
    Py_CLEAR(self->l2_wire);
    Py_CLEAR(self->l2_known);
    Py_CLEAR(self->full);
    Py_CLEAR(self->after_seq);
    return 0;
}

static void
at_dealloc(AtHotPath *self)
{
    PyObject_GC_UnTrack(self);
    at_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef at_members[] = {
    {"at", T_PYSSIZET, offsetof(AtHotPath, at), READONLY,
     "offset of the l2_data sequence key in the previous frame"},
    {NULL}};

static PyTypeObject AtHotPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "logger.protocol._route.AtHotPath",
    .tp_basicsize = sizeof(AtHotPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The Advanced Trade hot path (route_at.AdvancedTradeRouter._hot_path), compiled.",
    .tp_new = at_new,
    .tp_traverse = (traverseproc)at_traverse,
    .tp_clear = (inquiry)at_clear,
    .tp_dealloc = (destructor)at_dealloc,
    .tp_vectorcall_offset = offsetof(AtHotPath, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_members = at_members,
};

/* ------------------------------------------------------------------ Exchange */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *counters, *l2_known, *match_known, *last_trade, *full;
    Attr messages;
} ExHotPath;

/* ``int(raw[a:b])`` (a new int), or NULL: with *bad set on ValueError (cleared). */
static PyObject *
parse_int(const char *s, Py_ssize_t a, Py_ssize_t b, int *bad)
{
    Py_ssize_t len = b - a;
    if (len >= 1 && len <= 18) {
        long long v = 0;
        Py_ssize_t i = a;
        for (; i < b && s[i] >= '0' && s[i] <= '9'; i++)
            v = v * 10 + (s[i] - '0');
        if (i == b)
            return PyLong_FromLongLong(v);
    }
    /* anything else (sign, spaces, underscores, long): Python's own int() */
    PyObject *slice = PyBytes_FromStringAndSize(s + a, len > 0 ? len : 0);
    if (slice == NULL)
        return NULL;
    PyObject *v = PyNumber_Long(slice);
    Py_DECREF(slice);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        *bad = 1;
    }
    return v;
}

/* ``trade_id == last + 1 and trade_id <= INT_MAX`` */
static int
next_trade(PyObject *trade_id, PyObject *last)
{
    if (PyLong_CheckExact(trade_id) && PyLong_CheckExact(last)) {
        int o1, o2;
        long long t = PyLong_AsLongLongAndOverflow(trade_id, &o1);
        long long l = PyLong_AsLongLongAndOverflow(last, &o2);
        if (PyErr_Occurred())
            return -1;
        if (o1 == 0 && o2 == 0)
            return l != LLONG_MAX && t == l + 1; /* t fits int64: t <= INT_MAX */
    }
    PyObject *next = PyNumber_Add(last, one);
    if (next == NULL)
        return -1;
    int eq = PyObject_RichCompareBool(trade_id, next, Py_EQ);
    Py_DECREF(next);
    if (eq <= 0)
        return eq;
    return PyObject_RichCompareBool(trade_id, int_max, Py_LE);
}

/* an in-order ``match``: NULL without error means ``full(raw)`` */
static PyObject *
ex_match(ExHotPath *self, const char *s, Py_ssize_t n)
{
    Py_ssize_t k = find(s, n, ",", 1, EX_MATCH_LEN);
    Py_ssize_t p = find(s, n, PKEY, PKEY_LEN, k) + PKEY_LEN;
    if (p < PKEY_LEN)
        return NULL;
    Py_ssize_t q = find(s, n, "\"", 1, p);
    int err = 0;
    PyObject *entry = get_slice(self->match_known, s, p, q < 0 ? n - 1 : q, &err);
    if (entry == NULL || entry == Py_None)
        return NULL;
    PyObject *route = item(entry, 0);
    if (route == NULL)
        return NULL;
    PyObject *product = item(route, 0);
    if (product == NULL)
        goto fail;
    PyObject *last = PyDict_GetItemWithError(self->last_trade, product);
    if (last == NULL || last == Py_None) {
        Py_DECREF(product);
        Py_DECREF(route);
        return NULL;
    }
    Py_INCREF(last);
    int bad = 0;
    PyObject *trade_id = parse_int(s, EX_MATCH_LEN, k, &bad);
    int ok = trade_id == NULL ? -1 : next_trade(trade_id, last);
    Py_DECREF(last);
    if (ok > 0 && PyDict_SetItem(self->last_trade, product, trade_id) < 0)
        ok = -1;
    Py_XDECREF(trade_id);
    Py_DECREF(product);
    if (ok > 0)
        return route;
fail:
    Py_DECREF(route);
    return NULL;
}

static PyObject *
ex_call(ExHotPath *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "on_message takes one argument (raw)");
        return NULL;
    }
    PyObject *raw = args[0];
    if (!PyBytes_Check(raw)) {
        PyErr_Format(PyExc_TypeError, "on_message needs bytes, not %.100s",
                     Py_TYPE(raw)->tp_name);
        return NULL;
    }
    if (bump(self->counters, &self->messages) < 0)
        return NULL;
    const char *s = PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    if (startswith(s, n, EX_L2UPDATE, EX_L2_LEN, 0)
        || startswith(s, n, EX_SNAPSHOT, EX_L2_LEN, 0)) {
        if (s[n - 1] == '}') {
            Py_ssize_t q = find(s, n, "\"", 1, EX_L2_LEN);
            int err = 0;
            PyObject *entry = get_slice(self->l2_known, s, EX_L2_LEN, q < 0 ? n - 1 : q, &err);
            if (err)
                return NULL;
            if (entry != NULL && entry != Py_None)
                return item(entry, 0);
        }
    } else if (startswith(s, n, EX_MATCH, EX_MATCH_LEN, 0) && s[n - 1] == '}') {
        PyObject *route = ex_match(self, s, n);
        if (route != NULL || PyErr_Occurred())
            return route;
    }
    return PyObject_CallOneArg(self->full, raw);
}

static PyObject *
ex_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"counters", "l2_known", "match_known", "last_trade", "full", NULL};
    PyObject *counters, *l2_known, *match_known, *last_trade, *full;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!O:ExHotPath", kwlist, &counters,
                                     &l2_known, &match_known, &PyDict_Type, &last_trade, &full))
        return NULL;
    ExHotPath *self = (ExHotPath *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = (vectorcallfunc)ex_call;
    self->counters = Py_NewRef(counters);
    self->l2_known = Py_NewRef(l2_known);
    self->match_known = Py_NewRef(match_known);
    self->last_trade = Py_NewRef(last_trade);
    self->full = Py_NewRef(full);
    self->messages = (Attr){s_messages, slot_offset(counters, s_messages)};
    return (PyObject *)self;
}

static int
ex_traverse(ExHotPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->counters);
    Py_VISIT(self->l2_known);
    Py_VISIT(self->match_known);
    Py_VISIT(self->last_trade);
    Py_VISIT(self->full);
    return 0;
}

static int
ex_clear(ExHotPath *self)
{
    Py_CLEAR(self->counters);
    Py_CLEAR(self->l2_known);
    Py_CLEAR(self->match_known);
    Py_CLEAR(self->last_trade);
    Py_CLEAR(self->full);
    return 0;
}

static void
ex_dealloc(ExHotPath *self)
{
    PyObject_GC_UnTrack(self);
    ex_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ExHotPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "logger.protocol._route.ExHotPath",
    .tp_basicsize = sizeof(ExHotPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The Exchange hot path (route_exchange.ExchangeRouter._hot_path), compiled.",
    .tp_new = ex_new,
    .tp_traverse = (traverseproc)ex_traverse,
    .tp_clear = (inquiry)ex_clear,
    .tp_dealloc = (destructor)ex_dealloc,
    .tp_vectorcall_offset = offsetof(ExHotPath, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------------ module */

static struct PyModuleDef route_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "logger.protocol._route",
    .m_doc = "Compiled hot paths of the dialect routers (see logger/protocol/native.py).",
    .m_size = -1,
};

static int
pure_forced(void)
{
    const char *v = getenv("CBL_PURE");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

PyMODINIT_FUNC
PyInit__route(void)
{
    if (PyType_Ready(&AtHotPathType) < 0 || PyType_Ready(&ExHotPathType) < 0)
        return NULL;
    s_messages = PyUnicode_InternFromString("messages");
    s_expected = PyUnicode_InternFromString("expected");
    s_needle = PyUnicode_InternFromString("needle");
    one = PyLong_FromLong(1);
    int_max = PyLong_FromLongLong(LLONG_MAX);
    two_63 = PyNumber_Add(int_max, one);
    needle_fmt = PyBytes_FromString(SEQ_KEY "%d,");
    nul_needle = PyBytes_FromStringAndSize("\0", 1);
    if (!s_messages || !s_expected || !s_needle || !one || !int_max || !two_63 || !needle_fmt
        || !nul_needle)
        return NULL;
    PyObject *m = PyModule_Create(&route_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "AtHotPath", (PyObject *)&AtHotPathType) < 0
        || PyModule_AddObjectRef(m, "ExHotPath", (PyObject *)&ExHotPathType) < 0
        || PyModule_AddObjectRef(m, "PURE_FORCED", pure_forced() ? Py_True : Py_False) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
