/* storage._stage: the compiled part of the engine's per-stream staging (optional).
 *
 * Why C: framing one batch in Python is a dozen C-level calls plus interpreter work, and the
 * payload bytes are copied twice (bytes.join, then the backend's copy into the mapping). Here
 * one call writes the whole batch -- magic, CRC, tail, columns, payloads, pad -- straight into
 * the destination buffer (the segment's shared mapping) or into one new bytes object, copying
 * each payload once, and CRC32C runs over the bytes just written (still in cache).
 *
 * The bytes are exactly those of storage/format.py encode_joined (docs/FORMAT.md, batch v2);
 * tests/storage/test_compiled_stage.py proves it with hypothesis. storage/fastpath.py decides
 * whether this module is used (CBL_PURE=1 forces the pure-Python path). Little-endian hosts
 * only: on a big-endian host the module refuses to import and the pure path is used.
 *
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78) with google_crc32c's conventions:
 * crc32c(data, crc) == google_crc32c.extend(crc, data). The SSE4.2 crc32 instruction is used
 * when the CPU has it (detected at run time), else software slicing-by-8.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CBL_X86_HW 1
#include <nmmintrin.h>
#endif

#define BATCH_HEADER_SIZE 40
#define BATCH_ALIGN 8
#define MAX_BATCH_BYTES 0xFFFFFFF8ULL

static uint32_t crc_table[8][256];
static int crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
#ifdef CBL_X86_HW
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2") != 0;
#endif
}

/* The raw (inverted) CRC state over n bytes, software: slicing-by-8. */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^
            crc_table[5][(w >> 16) & 0xFF] ^ crc_table[4][(w >> 24) & 0xFF] ^
            crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
            crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
    return c;
}

#ifdef CBL_X86_HW
/* The same, with the SSE4.2 crc32 instruction (compiled for it, called only when present). */
__attribute__((target("sse4.2"))) static uint32_t crc_hw_run(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n && ((uintptr_t)p & 7)) {
        c64 = _mm_crc32_u8((uint32_t)c64, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c64 = _mm_crc32_u8((uint32_t)c64, *p++);
    return (uint32_t)c64;
}
#endif

/* Raw state in, raw state out (callers invert at the ends). */
static uint32_t crc_raw(uint32_t c, const uint8_t *p, size_t n)
{
#ifdef CBL_X86_HW
    if (crc_hw)
        return crc_hw_run(c, p, n);
#endif
    return crc_sw(c, p, n);
}

static uint32_t crc_extend(uint32_t crc, const uint8_t *p, size_t n)
{
    return ~crc_raw(~crc, p, n);
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

PyDoc_STRVAR(crc32c_doc,
"crc32c(data, crc=0, /) -> int\n\n"
"CRC32C of a bytes-like ``data`` continuing from ``crc``: google_crc32c.extend(crc, data).");

static PyObject *stage_crc32c(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long crc = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32c(data, crc=0)");
        return NULL;
    }
    if (nargs == 2) {
        crc = PyLong_AsUnsignedLongLong(args[1]);
        if (crc == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        if (crc > 0xFFFFFFFFull) {
            PyErr_SetString(PyExc_ValueError, "crc must fit in 32 bits");
            return NULL;
        }
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t out;
    Py_BEGIN_ALLOW_THREADS
    out = crc_extend((uint32_t)crc, (const uint8_t *)view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(out);
}

static int as_i64(PyObject *o, long long *out)
{
    *out = PyLong_AsLongLong(o);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int as_size(PyObject *o, Py_ssize_t *out, const char *what)
{
    *out = PyLong_AsSsize_t(o);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    if (*out < 0) {
        PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
        return -1;
    }
    return 0;
}

/* The batch tail after magic + CRC (docs/FORMAT.md): out[8:40]; returns where the columns go. */
static uint8_t *frame_tail(uint8_t *out, size_t n, long long first, long long last,
                           uint32_t payload_len, uint32_t total)
{
    uint8_t *p = out + 8;
    put_u32(p, total);
    put_u32(p + 4, (uint32_t)n);
    put_u64(p + 8, (uint64_t)first);
    put_u64(p + 16, (uint64_t)last);
    put_u32(p + 24, payload_len);
    put_u32(p + 28, 0);
    return p + 32;
}

/* Zero the pad from p to the batch's end, then magic and the CRC seeded with the offset. */
static void frame_seal(uint8_t *out, uint8_t *p, uint64_t offset, uint32_t total)
{
    memset(p, 0, (size_t)(out + total - p));
    uint8_t seed[8];
    put_u64(seed, offset);
    uint32_t c = crc_raw(0xFFFFFFFFu, seed, 8);  /* crc_seed(offset), kept raw */
    c = ~crc_raw(c, out + 8, (size_t)total - 8);
    memcpy(out, "CBB2", 4);
    put_u32(out + 4, c);
}

/* Write the batch into out[0:total]; the columns and payloads were checked by the caller. */
static void frame_write(uint8_t *out, uint64_t offset, const Py_buffer *ts, const Py_buffer *lens,
                        const uint8_t *kinds, PyObject *const *items, Py_ssize_t n,
                        long long first, long long last, uint32_t payload_len, uint32_t total)
{
    uint8_t *p = frame_tail(out, (size_t)n, first, last, payload_len, total);
    memcpy(p, ts->buf, (size_t)n * 8);
    p += n * 8;
    memcpy(p, lens->buf, (size_t)n * 4);
    p += n * 4;
    if (kinds)
        memcpy(p, kinds, (size_t)n);
    else
        memset(p, 0, (size_t)n);
    p += n;
    uint8_t *const stop = p + payload_len;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyBytes_CheckExact(items[i])) {
            Py_ssize_t size = PyBytes_GET_SIZE(items[i]);
            memcpy(p, PyBytes_AS_STRING(items[i]), (size_t)size);
            p += size;
        } else {  /* another bytes-like object (bytes.join takes those too): checked before */
            Py_buffer b;
            if (PyObject_GetBuffer(items[i], &b, PyBUF_SIMPLE) == 0) {
                size_t room = (size_t)(stop - p), size = (size_t)b.len;
                memcpy(p, b.buf, size < room ? size : room);  /* never past the payloads */
                p += size < room ? size : room;
                PyBuffer_Release(&b);
            }
        }
    }
    frame_seal(out, p, offset, total);
}

PyDoc_STRVAR(frame_doc,
"frame(dest, at, offset, ts, lens, kinds, payloads, first, last, payload_len, total, /)\n\n"
"Frame one v2 batch for file ``offset`` (the bytes of format.encode_joined's head + body).\n"
"``ts``/``lens`` are array('q')/array('I') columns, ``kinds`` bytes or None (all DATA),\n"
"``payloads`` a sequence of bytes (or bytes-like objects). With ``dest`` a writable buffer (a segment's mmap) the batch is\n"
"written to dest[at:at + total] and None is returned; with ``dest`` None a new bytes object is\n"
"returned. ValueError (nothing written) when the columns disagree with each other, with\n"
"``payload_len``/``total``, or the batch does not fit ``dest``.");

static PyObject *stage_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "frame() takes exactly 11 arguments");
        return NULL;
    }
    PyObject *dest = args[0], *kinds_obj = args[5], *payloads = args[6];
    Py_ssize_t at, payload_len, total;
    Py_ssize_t offset;
    long long first, last;
    if (as_size(args[1], &at, "at") < 0 || as_size(args[2], &offset, "offset") < 0 ||
        as_i64(args[7], &first) < 0 || as_i64(args[8], &last) < 0 ||
        as_size(args[9], &payload_len, "payload_len") < 0 || as_size(args[10], &total, "total") < 0)
        return NULL;
    if (kinds_obj != Py_None && !PyBytes_CheckExact(kinds_obj)) {
        PyErr_SetString(PyExc_TypeError, "kinds must be bytes or None");
        return NULL;
    }
    payloads = PySequence_Fast(payloads, "payloads must be a sequence of bytes");
    if (!payloads)
        return NULL;
    Py_buffer ts, lens;
    if (PyObject_GetBuffer(args[3], &ts, PyBUF_SIMPLE) < 0) {
        Py_DECREF(payloads);
        return NULL;
    }
    if (PyObject_GetBuffer(args[4], &lens, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&ts);
        Py_DECREF(payloads);
        return NULL;
    }
    PyObject *result = NULL;
    Py_buffer out = {0};
    int have_out = 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(payloads);
    PyObject *const *items = (PyObject *const *)PySequence_Fast_ITEMS(payloads);
    const uint8_t *kinds = kinds_obj == Py_None ? NULL
                                                : (const uint8_t *)PyBytes_AS_STRING(kinds_obj);
    if (n == 0 || ts.len != n * 8 || lens.len != n * 4 ||
        (kinds && PyBytes_GET_SIZE(kinds_obj) != n)) {
        PyErr_Format(PyExc_ValueError, "column sizes differ: %zd payloads, %zd ts bytes, "
                     "%zd length bytes", n, ts.len, lens.len);
        goto done;
    }
    Py_ssize_t sum = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyBytes_CheckExact(items[i])) {
            sum += PyBytes_GET_SIZE(items[i]);
            continue;
        }
        Py_buffer b;  /* the rare bytes-like payload: its size now, its bytes when writing */
        if (PyObject_GetBuffer(items[i], &b, PyBUF_SIMPLE) < 0)
            goto done;
        sum += b.len;
        PyBuffer_Release(&b);
    }
    unsigned long long raw = (unsigned long long)BATCH_HEADER_SIZE + 13ull * (unsigned long long)n +
                             (unsigned long long)sum;
    unsigned long long want = (raw + BATCH_ALIGN - 1) & ~(unsigned long long)(BATCH_ALIGN - 1);
    if (sum != payload_len || (unsigned long long)total != want || want > MAX_BATCH_BYTES) {
        PyErr_Format(PyExc_ValueError, "inconsistent batch: %zd payload bytes (given %zd), "
                     "total %zd (expected %llu)", sum, payload_len, total, want);
        goto done;
    }
    uint8_t *dst;
    if (dest == Py_None) {
        result = PyBytes_FromStringAndSize(NULL, total);
        if (!result)
            goto done;
        dst = (uint8_t *)PyBytes_AS_STRING(result);
    } else {
        if (PyObject_GetBuffer(dest, &out, PyBUF_WRITABLE) < 0)
            goto done;
        have_out = 1;
        if (at > out.len || total > out.len - at) {
            PyErr_Format(PyExc_ValueError, "batch [%zd, %zd) beyond a buffer of %zd bytes", at,
                         at + total, out.len);
            goto done;
        }
        dst = (uint8_t *)out.buf + at;
        result = Py_NewRef(Py_None);
    }
    frame_write(dst, (uint64_t)offset, &ts, &lens, kinds, items, n, first, last,
                (uint32_t)payload_len, (uint32_t)total);
done:
    if (have_out)
        PyBuffer_Release(&out);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&ts);
    Py_DECREF(payloads);
    return result;
}

/* An exact int as an i64, 1 when it fits. Receive times (~1.8e18 ns) are three 30-bit digits:
 * on CPython 3.11 they are read straight from the digits (PyLong_AsLongLong would go through
 * _PyLong_AsByteArray for every one of them); elsewhere, and for anything else, the API. */
static inline int int_i64(PyObject *o, long long *out)
{
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
    Py_ssize_t size = Py_SIZE(o);
    const digit *d = ((PyLongObject *)o)->ob_digit;
    if (size >= 0 && size <= 3 && (size < 3 || d[2] < 8)) {
        uint64_t v = 0;
        switch (size) {
        case 3: v = (uint64_t)d[2] << 60;  /* fall through */
        case 2: v |= (uint64_t)d[1] << 30;  /* fall through */
        case 1: v |= d[0];  /* fall through */
        default: break;
        }
        *out = (long long)v;
        return 1;
    }
#endif
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

/* The sink's lists as columns: n, the payload bytes, the smallest and largest time; 0 when the
 * lists cannot be written through (a timestamp that is not an i64 int, a payload that is not
 * exactly bytes, lists of different lengths or empty): the caller buffers them instead. */
static int scan_lists(PyObject *ts, PyObject *payloads, Py_ssize_t *n_out,
                      unsigned long long *sum_out, long long *lo_out, long long *hi_out)
{
    if (!PyList_CheckExact(ts) || !PyList_CheckExact(payloads))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(ts);
    if (n == 0 || PyList_GET_SIZE(payloads) != n)
        return 0;
    PyObject **t = ((PyListObject *)ts)->ob_item, **p = ((PyListObject *)payloads)->ob_item;
    unsigned long long sum = 0;
    long long lo = 0, hi = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v;
        if (!PyBytes_CheckExact(p[i]) || !PyLong_CheckExact(t[i]) || !int_i64(t[i], &v))
            return 0;
        if (i == 0 || v < lo)
            lo = v;
        if (i == 0 || v > hi)
            hi = v;
        sum += (unsigned long long)PyBytes_GET_SIZE(p[i]);
    }
    *n_out = n;
    *sum_out = sum;
    *lo_out = lo;
    *hi_out = hi;
    return 1;
}

/* frame_write's column part for the sink's lists: the same bytes, read from list items. */
static void frame_lists(uint8_t *out, uint64_t offset, PyObject *ts, PyObject *payloads,
                        size_t n, long long first, long long last, uint32_t payload_len,
                        uint32_t total)
{
    PyObject **t = ((PyListObject *)ts)->ob_item, **pl = ((PyListObject *)payloads)->ob_item;
    uint8_t *p = frame_tail(out, n, first, last, payload_len, total);
    for (size_t i = 0; i < n; i++, p += 8) {
        long long v = 0;
        int_i64(t[i], &v);  /* checked by scan_lists */
        put_u64(p, (uint64_t)v);
    }
    for (size_t i = 0; i < n; i++, p += 4)
        put_u32(p, (uint32_t)PyBytes_GET_SIZE(pl[i]));
    memset(p, 0, n);  /* kinds: all DATA */
    p += n;
    for (size_t i = 0; i < n; i++) {
        Py_ssize_t size = PyBytes_GET_SIZE(pl[i]);
        memcpy(p, PyBytes_AS_STRING(pl[i]), (size_t)size);
        p += size;
    }
    frame_seal(out, p, offset, total);
}

#define OFF_COMMITTED_LEN 16
#define OFF_STATS 24
#define HINTS_END 48

PyDoc_STRVAR(commit_lists_doc,
"commit_lists(mm, off, room, cap_end, max_total, day_lo, day_hi, count, first, last, ts,\n"
"             payloads, /) -> tuple | int | None\n\n"
"Write the records of two lists (receive times, bytes payloads: the sink's) as one v2 batch\n"
"at ``off`` of a segment's mapping ``mm`` and commit it there: the batch, then the v2 header\n"
"hints (``count``/``first``/``last``: the segment's before it), then the commit point.\n"
"Returns (end, count, first, last, payload_len) after it; an int ``end`` when the batch needs\n"
"the segment allocated (and populated) up to ``end`` first (``room`` is too small; nothing\n"
"written); None when it cannot be written through (nothing written): a time outside\n"
"[day_lo, day_hi) or not an i64, a payload not bytes, a batch over ``max_total`` or ending\n"
"past ``cap_end``.");

static PyObject *stage_commit_lists(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "commit_lists() takes exactly 12 arguments");
        return NULL;
    }
    Py_ssize_t off, room, cap_end, max_total;
    long long day_lo, day_hi, count, first, last;
    if (as_size(args[1], &off, "off") < 0 || as_size(args[2], &room, "room") < 0 ||
        as_size(args[3], &cap_end, "cap_end") < 0 || as_size(args[4], &max_total, "max_total") < 0 ||
        as_i64(args[5], &day_lo) < 0 || as_i64(args[6], &day_hi) < 0 ||
        as_i64(args[7], &count) < 0 || as_i64(args[8], &first) < 0 || as_i64(args[9], &last) < 0)
        return NULL;
    Py_ssize_t n;
    unsigned long long sum;
    long long lo, hi;
    if (!scan_lists(args[10], args[11], &n, &sum, &lo, &hi) || lo < day_lo || hi >= day_hi)
        Py_RETURN_NONE;
    unsigned long long total = ((unsigned long long)BATCH_HEADER_SIZE + 13ull * (unsigned long long)n +
                                sum + BATCH_ALIGN - 1) & ~(unsigned long long)(BATCH_ALIGN - 1);
    if (total > (unsigned long long)max_total || total > MAX_BATCH_BYTES ||
        (unsigned long long)off + total > (unsigned long long)cap_end)
        Py_RETURN_NONE;
    unsigned long long end = (unsigned long long)off + total;
    if (end > (unsigned long long)room)
        return PyLong_FromUnsignedLongLong(end);
    Py_buffer out;
    if (PyObject_GetBuffer(args[0], &out, PyBUF_WRITABLE) < 0)
        return NULL;
    if ((unsigned long long)out.len < end || off < HINTS_END) {
        PyBuffer_Release(&out);
        PyErr_Format(PyExc_ValueError, "batch [%zd, %llu) beyond a mapping of %zd bytes", off,
                     end, out.len);
        return NULL;
    }
    uint8_t *base = (uint8_t *)out.buf;
    frame_lists(base + off, (uint64_t)off, args[10], args[11], (size_t)n, lo, hi, (uint32_t)sum,
                (uint32_t)total);
    if (count > 0) {  /* the segment's statistics with this batch (format.pack_stats, v2) */
        if (first < lo)
            lo = first;
        if (last > hi)
            hi = last;
    }
    count += n;
    uint32_t hint = count <= 0xFFFFFFFFll ? (uint32_t)count : 0xFFFFFFFFu;
    uint8_t stats[28];  /* committed_len u64 + [28, 48): what the hints' CRC binds */
    put_u64(stats, end);
    put_u32(stats + 8, hint);
    put_u64(stats + 12, (uint64_t)lo);
    put_u64(stats + 20, (uint64_t)hi);
    put_u32(base + OFF_STATS, crc_extend(0, stats, sizeof stats));
    memcpy(base + OFF_STATS + 4, stats + 8, 20);
    __atomic_thread_fence(__ATOMIC_RELEASE);  /* the commit point is stored last */
    put_u64(base + OFF_COMMITTED_LEN, end);
    PyBuffer_Release(&out);
    return Py_BuildValue("(KLLLK)", end, count, lo, hi, sum);
}

static PyObject *stage_hardware(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(crc_hw);
}

/* Tests only: run the software CRC on a CPU that has SSE4.2, so both are proven. */
static PyObject *stage_use_hardware(PyObject *self, PyObject *arg)
{
    int want = PyObject_IsTrue(arg);
    if (want < 0)
        return NULL;
    int had = crc_hw;
#ifdef CBL_X86_HW
    crc_hw = want && __builtin_cpu_supports("sse4.2");
#endif
    return PyBool_FromLong(had);
}

static PyMethodDef stage_methods[] = {
    {"crc32c", (PyCFunction)(void (*)(void))stage_crc32c, METH_FASTCALL, crc32c_doc},
    {"frame", (PyCFunction)(void (*)(void))stage_frame, METH_FASTCALL, frame_doc},
    {"commit_lists", (PyCFunction)(void (*)(void))stage_commit_lists, METH_FASTCALL,
     commit_lists_doc},
    {"hardware_crc", stage_hardware, METH_NOARGS,
     "hardware_crc() -> bool\n\nTrue when CRC32C runs on the SSE4.2 crc32 instruction."},
    {"use_hardware_crc", stage_use_hardware, METH_O,
     "use_hardware_crc(flag) -> bool\n\nFor tests: the SSE4.2 CRC (where the CPU has it) or the\n"
     "software one from now on; returns whether hardware was in use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef stage_module = {
    PyModuleDef_HEAD_INIT, "storage._stage",
    "Compiled batch framing and CRC32C for the storage engine (see storage/fastpath.py).", -1,
    stage_methods,
};

PyMODINIT_FUNC PyInit__stage(void)
{
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "storage._stage supports little-endian hosts only");
        return NULL;
    }
    crc_init();
    return PyModule_Create(&stage_module);
}
