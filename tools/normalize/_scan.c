/* The compiled scan of Advanced Trade l2_data frames: shape check and field cutting in one pass.
 *
 * scan.py checks each frame against the anchored regular expression AT_L2 (RE2 inside Arrow)
 * and then cuts the fields out from the quote positions with numpy: two full readings of
 * every byte plus several numpy passes. This module does both at once, frame by frame, and
 * writes the fields straight into Arrow string layout (int32 offsets + bytes). It admits
 * exactly the frames AT_L2 admits (tests/export/test_native_scan.py checks mask and fields
 * against the pure path with hypothesis); anything else is left to the caller, as before.
 * Input bytes are already known to be UTF-8 (scan.frames_of validates them), so checking
 * strings byte by byte for '"', '\\' and control characters is what the regex's
 * [^"\\\x00-\x1f] does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} gbuf;

static int gb_put(gbuf *b, const void *src, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *q = PyMem_RawRealloc(b->p, (size_t)cap);  /* no GIL needed */
        if (q == NULL) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

/* one string column in Arrow layout: offsets (int32, count + 1) and data */
typedef struct {
    gbuf offs, data;
} scol;

static int sc_init(scol *c) {
    int32_t zero = 0;
    memset(c, 0, sizeof(*c));
    return gb_put(&c->offs, &zero, 4);
}

static int sc_put(scol *c, const char *s, Py_ssize_t n) {
    if (gb_put(&c->data, s, n) < 0) return -1;
    if (c->data.len > INT32_MAX) return -1; /* reported as out of memory */
    int32_t end = (int32_t)c->data.len;
    return gb_put(&c->offs, &end, 4);
}

static void sc_free(scol *c) {
    PyMem_RawFree(c->offs.p);
    PyMem_RawFree(c->data.p);
}

typedef struct {
    const char *p, *e;
} cur;

static int lit(cur *c, const char *s, Py_ssize_t n) {
    if (c->e - c->p < n || memcmp(c->p, s, (size_t)n) != 0) return 0;
    c->p += n;
    return 1;
}
#define LIT(c, s) lit((c), (s), (Py_ssize_t)(sizeof(s) - 1))

/* "[^"\\\x00-\x1f]*": the content's start and length */
static int str(cur *c, const char **s, Py_ssize_t *n) {
    if (c->p >= c->e || *c->p != '"') return 0;
    const char *q = ++c->p;
    while (q < c->e) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '"') {
            *s = c->p;
            *n = q - c->p;
            c->p = q + 1;
            return 1;
        }
        if (ch == '\\' || ch < 0x20) return 0;
        q++;
    }
    return 0;
}

/* -?(?:0|[1-9][0-9]*) */
static int integer(cur *c, const char **s, Py_ssize_t *n) {
    const char *q = c->p;
    if (q < c->e && *q == '-') q++;
    if (q >= c->e) return 0;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (q < c->e && *q >= '0' && *q <= '9') q++;
    } else {
        return 0;
    }
    *s = c->p;
    *n = q - c->p;
    c->p = q;
    return 1;
}

enum { F_TS, F_SEQ, F_PRODUCT, F_EVENT_TIME, F_PRICE, F_SIZE, NCOLS };

typedef struct {
    scol col[NCOLS];
    gbuf snap;      /* uint8 per frame: snapshot */
    gbuf lev_start; /* int64 per frame + 1: its first level */
    gbuf rec;       /* int64 per level: its frame */
    gbuf bid;       /* uint8 per level: side is bid */
    int64_t frames, levels;
} out_t;

/* One level: {"side":"bid|offer","event_time":S,"price_level":S,"new_quantity":S} */
static int update(cur *c, out_t *o) {
    const char *s;
    Py_ssize_t n;
    uint8_t is_bid;
    if (!LIT(c, "{\"side\":\"")) return 0;
    if (LIT(c, "bid\"")) is_bid = 1;
    else if (LIT(c, "offer\"")) is_bid = 0;
    else return 0;
    if (!LIT(c, ",\"event_time\":") || !str(c, &s, &n)) return 0;
    if (sc_put(&o->col[F_EVENT_TIME], s, n) < 0) return -1;
    if (!LIT(c, ",\"price_level\":") || !str(c, &s, &n)) return 0;
    if (sc_put(&o->col[F_PRICE], s, n) < 0) return -1;
    if (!LIT(c, ",\"new_quantity\":") || !str(c, &s, &n) || !LIT(c, "}")) return 0;
    if (sc_put(&o->col[F_SIZE], s, n) < 0) return -1;
    if (gb_put(&o->bid, &is_bid, 1) < 0 || gb_put(&o->rec, &o->frames, 8) < 0) return -1;
    o->levels++;
    return 1;
}

/* 1: the frame has the shape and its fields were appended; 0: not the shape; -1: error */
static int frame(cur *c, out_t *o) {
    const char *s;
    Py_ssize_t n;
    uint8_t snap;
    int r;
    if (!LIT(c, "{\"channel\":\"l2_data\",")) return 0;
    if (LIT(c, "\"client_id\":") && !(str(c, &s, &n) && LIT(c, ","))) return 0;
    if (!LIT(c, "\"timestamp\":") || !str(c, &s, &n)) return 0;
    if (sc_put(&o->col[F_TS], s, n) < 0) return -1;
    if (!LIT(c, ",\"sequence_num\":") || !integer(c, &s, &n)) return 0;
    if (sc_put(&o->col[F_SEQ], s, n) < 0) return -1;
    if (!LIT(c, ",\"events\":[{\"type\":\"")) return 0;
    if (LIT(c, "snapshot\"")) snap = 1;
    else if (LIT(c, "update\"")) snap = 0;
    else return 0;
    if (!LIT(c, ",\"product_id\":") || !str(c, &s, &n)) return 0;
    if (sc_put(&o->col[F_PRODUCT], s, n) < 0) return -1;
    if (!LIT(c, ",\"updates\":[")) return 0;
    if (!LIT(c, "]")) {
        do {
            if ((r = update(c, o)) <= 0) return r;
        } while (LIT(c, ","));
        if (!LIT(c, "]")) return 0;
    }
    if (!LIT(c, "}]}") || c->p != c->e) return 0;
    if (gb_put(&o->snap, &snap, 1) < 0) return -1;
    o->frames++;
    return gb_put(&o->lev_start, &o->levels, 8) < 0 ? -1 : 1;
}

static PyObject *bytes_of(gbuf *b) {
    return PyBytes_FromStringAndSize(b->p ? b->p : "", b->len);
}

static PyObject *scol_pair(scol *c) {
    PyObject *a = bytes_of(&c->offs), *b = bytes_of(&c->data);
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    return Py_BuildValue("(NN)", a, b);
}

/* truncate every column back to the lengths saved at the start of a rejected frame */
typedef struct {
    Py_ssize_t offs[NCOLS], data[NCOLS], bid, rec;
    int64_t levels;
} mark_t;

static void save(out_t *o, mark_t *m) {
    for (int i = 0; i < NCOLS; i++) {
        m->offs[i] = o->col[i].offs.len;
        m->data[i] = o->col[i].data.len;
    }
    m->bid = o->bid.len;
    m->rec = o->rec.len;
    m->levels = o->levels;
}

static void restore(out_t *o, mark_t *m) {
    for (int i = 0; i < NCOLS; i++) {
        o->col[i].offs.len = m->offs[i];
        o->col[i].data.len = m->data[i];
    }
    o->bid.len = m->bid;
    o->rec.len = m->rec;
    o->levels = m->levels;
}

static PyObject *build(out_t *o, PyObject *mask) {
    PyObject *cols[NCOLS] = {NULL};
    PyObject *res = NULL;
    for (int i = 0; i < NCOLS; i++)
        if ((cols[i] = scol_pair(&o->col[i])) == NULL) goto done;
    res = Py_BuildValue("(ONNNNOOOOOO)", mask, bytes_of(&o->snap), bytes_of(&o->lev_start),
                        bytes_of(&o->rec), bytes_of(&o->bid), cols[F_TS], cols[F_SEQ],
                        cols[F_PRODUCT], cols[F_EVENT_TIME], cols[F_PRICE], cols[F_SIZE]);
done:
    for (int i = 0; i < NCOLS; i++) Py_XDECREF(cols[i]);
    return res;
}

PyDoc_STRVAR(at_l2_doc,
"at_l2(buf, offsets) -> (mask, snap, lev_start, rec, bid, ts, seq, product, event_time,\n"
"                        price, size)\n\n"
"Frames buf[offsets[i]:offsets[i+1]] (offsets: int64, n + 1). mask: bytes, 1 where the frame\n"
"has the AT_L2 shape. For those frames only, in order: snap (uint8), lev_start (int64,\n"
"frames + 1), and per level rec (int64, index among those frames) and bid (uint8); string\n"
"columns as (int32 offsets, data) pairs: ts, seq, product per frame; event_time, price,\n"
"size per level.");

static PyObject *at_l2(PyObject *self, PyObject *args) {
    Py_buffer buf, offv;
    PyObject *mask = NULL, *res = NULL;
    out_t o;
    int64_t zero = 0;
    memset(&o, 0, sizeof(o));
    if (!PyArg_ParseTuple(args, "y*y*", &buf, &offv)) return NULL;
    Py_ssize_t n = offv.len / 8 - 1;
    const int64_t *offs = offv.buf;
    for (int i = 0; i < NCOLS; i++)
        if (sc_init(&o.col[i]) < 0) goto fail;
    if (n < 0 || gb_put(&o.lev_start, &zero, 8) < 0) goto fail;
    if ((mask = PyBytes_FromStringAndSize(NULL, n)) == NULL) goto fail;
    char *m = PyBytes_AS_STRING(mask);
    const char *base = buf.buf;
    int r = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t a = offs[i], b = offs[i + 1];
        if (a < 0 || b < a || b > buf.len) {
            r = -2;
            break;
        }
        cur c = {base + a, base + b};
        mark_t mk;
        save(&o, &mk);
        r = frame(&c, &o);
        if (r < 0) break;
        if (r == 0) restore(&o, &mk);
        m[i] = (char)r;
    }
    Py_END_ALLOW_THREADS
    if (r == -2) {
        PyErr_SetString(PyExc_ValueError, "offsets outside the buffer");
        goto fail;
    }
    if (r < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    res = build(&o, mask);
fail:
    Py_XDECREF(mask);
    for (int i = 0; i < NCOLS; i++) sc_free(&o.col[i]);
    PyMem_RawFree(o.snap.p);
    PyMem_RawFree(o.lev_start.p);
    PyMem_RawFree(o.rec.p);
    PyMem_RawFree(o.bid.p);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offv);
    return res;
}

static PyMethodDef methods[] = {
    {"at_l2", at_l2, METH_VARARGS, at_l2_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan",
    "Compiled shape check and field scan of Advanced Trade l2_data frames (see scan.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
