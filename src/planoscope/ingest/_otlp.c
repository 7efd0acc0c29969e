/*
 * planoscope.ingest._otlp: the ingest hot path, an OTLP ExportTraceServiceRequest decoder that writes
 * Arrow column buffers directly.
 *
 * Walking upb's Python objects costs about 0.6 us per attribute (a wrapper object per KeyValue
 * and AnyValue), and turning Python strings into Arrow another 50 ns each, which caps a
 * 15-attribute span near 20k spans/s. This module reads the protobuf wire format and appends
 * every string straight into Arrow's layout (int32 offsets + UTF-8 bytes), so no Python object
 * is made per attribute. Each attribute set becomes one JSON object (one string per span costs
 * DuckDB far less to store than a list of key/value pairs), each value in its JSON type as
 * store/attributes.py describes. It also pulls out the string form (the collector's AsString())
 * of a few requested attribute keys (typed columns, span-metric dimensions), and, when asked
 * (maps), gives every attribute set as well as an Arrow map of key to string form (the
 * ClickHouse exporter's Map columns, as the ClickHouse store writes them) and the types of its
 * values, one letter a pair (with the typed JSON of an array or a key-value list after its a/m).
 *
 * planoscope.decode assembles the buffers into a pyarrow Table and validates UTF-8 in bulk;
 * its reference walker over protobuf objects must give identical tables (tests/test_decode.py).
 * Rare value kinds (arrays, key-value lists, bytes, doubles that are huge, subnormal or not
 * finite) are rendered by a Python callback. Little-endian hosts only (x86_64, aarch64), as Arrow buffers are.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXTRACT 128

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} buf_t;

static PyObject *DecodeError;

/* The parse runs without the GIL, so errors are noted here and raised once it is held again. */
static __thread const char *g_error;
static __thread int g_pyerror; /* a Python exception is already set (from a callback) */
static __thread char g_limit_msg[128]; /* a refused request's message, raised without the decode prefix */

static int fail(const char *msg) {
    if (!g_error) g_error = msg;
    return -1;
}

/* ---- growable buffers and Arrow-layout columns ------------------------------------------ */

typedef struct {
    char *d;
    Py_ssize_t len, cap;
} bytes_t;

static int bb_reserve(bytes_t *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *d = PyMem_RawRealloc(b->d, cap);
    if (!d) return fail("out of memory");
    b->d = d;
    b->cap = cap;
    return 0;
}

static inline int bb_put(bytes_t *b, const void *p, Py_ssize_t n) {
    if (b->len + n > b->cap && bb_reserve(b, n) < 0) return -1;
    if (n) memcpy(b->d + b->len, p, n);
    b->len += n;
    return 0;
}

static inline int bb_i32(bytes_t *b, int32_t v) { return bb_put(b, &v, 4); }
static inline int bb_i64(bytes_t *b, int64_t v) { return bb_put(b, &v, 8); }

/* A string column: offsets (n + 1 int32), data, and a validity bitmap kept only if a null occurs. */
typedef struct {
    bytes_t off, data, valid;
    Py_ssize_t n, nulls;
} strcol_t;

static int sc_init(strcol_t *c) {
    memset(c, 0, sizeof *c);
    return bb_i32(&c->off, 0);
}

/* The validity bitmap is only built once the first null arrives (all rows before it are valid). */
static int sc_valid_bit(strcol_t *c, int valid) {
    Py_ssize_t byte = c->n >> 3;
    if (byte >= c->valid.len) {
        if (bb_reserve(&c->valid, 1) < 0) return -1;
        c->valid.d[c->valid.len++] = 0;
    }
    if (valid) c->valid.d[byte] |= (char)(1 << (c->n & 7));
    return 0;
}

static inline int sc_push(strcol_t *c, const void *p, Py_ssize_t n) {
    if (c->data.len + n > INT32_MAX) return fail("request too large");
    if (bb_put(&c->data, p, n) < 0 || bb_i32(&c->off, (int32_t)c->data.len) < 0) return -1;
    if (c->nulls && sc_valid_bit(c, 1) < 0) return -1;
    c->n++;
    return 0;
}

static int sc_null(strcol_t *c) {
    if (bb_i32(&c->off, (int32_t)c->data.len) < 0) return -1;
    if (!c->nulls) { /* first null: every row so far was valid */
        Py_ssize_t nbytes = (c->n >> 3) + 1;
        if (bb_reserve(&c->valid, nbytes) < 0) return -1;
        memset(c->valid.d, 0xff, nbytes);
        c->valid.len = nbytes;
        c->valid.d[c->n >> 3] = (char)((1 << (c->n & 7)) - 1);
    }
    if (sc_valid_bit(c, 0) < 0) return -1;
    c->n++;
    c->nulls++;
    return 0;
}

static void sc_free(strcol_t *c) {
    PyMem_RawFree(c->off.d);
    PyMem_RawFree(c->data.d);
    PyMem_RawFree(c->valid.d);
}

static PyObject *bytes_of(bytes_t *b) { return PyBytes_FromStringAndSize(b->d ? b->d : "", b->len); }

/* (n, offsets, data, validity or None) */
static PyObject *sc_export(strcol_t *c) {
    PyObject *valid;
    if (c->nulls) {
        valid = bytes_of(&c->valid);
    } else {
        valid = Py_None;
        Py_INCREF(valid);
    }
    if (!valid) return NULL;
    return Py_BuildValue("(nNNN)", c->n, bytes_of(&c->off), bytes_of(&c->data), valid);
}

/* ---- wire format ------------------------------------------------------------------------ */

static int read_varint(buf_t *b, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && b->p < b->end; shift += 7) {
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return fail("truncated or invalid varint");
}

static int read_fixed64(buf_t *b, uint64_t *out) {
    if (b->end - b->p < 8) return fail("truncated fixed64");
    memcpy(out, b->p, 8);
    b->p += 8;
    return 0;
}

static __thread uint32_t g_field; /* the field number of the last tag read, for skipping a group */

/* One field tag: 1 with field/wire set, 0 at the end, -1 on error. */
static int next_field(buf_t *b, uint32_t *field, int *wire) {
    if (b->p >= b->end) return 0;
    uint64_t tag;
    if (read_varint(b, &tag) < 0) return -1;
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF) return fail("invalid field number");
    *field = g_field = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    return 1;
}

static int read_len(buf_t *b, buf_t *sub) {
    uint64_t n;
    if (read_varint(b, &n) < 0) return -1;
    if (n > (uint64_t)(b->end - b->p)) return fail("length past the end of the message");
    sub->p = b->p;
    sub->end = b->p + n;
    b->p += n;
    return 0;
}

static int skip(buf_t *b, int wire);

/* An unknown field of the deprecated group encoding (wire type 3 ... 4): skipped up to its end,
   as protobuf parsers do (found by fuzzing: upb accepts it, so must we). */
static int skip_group(buf_t *b, uint32_t field, int depth) {
    uint32_t f;
    int w, r;
    if (depth > 100) return fail("groups nested too deeply");
    while ((r = next_field(b, &f, &w)) > 0) {
        if (w == 4) return f == field ? 0 : fail("mismatched end of group");
        if (w == 3 ? skip_group(b, f, depth + 1) < 0 : skip(b, w) < 0) return -1;
    }
    return r < 0 ? -1 : fail("unterminated group");
}

static int skip(buf_t *b, int wire) {
    uint64_t v;
    buf_t s;
    switch (wire) {
    case 0: return read_varint(b, &v);
    case 1: return read_fixed64(b, &v);
    case 2: return read_len(b, &s);
    case 3: return skip_group(b, g_field, 1);
    case 5:
        if (b->end - b->p < 4) return fail("truncated fixed32");
        b->p += 4;
        return 0;
    default: return fail("unsupported wire type");
    }
}

#define LEN(s) ((Py_ssize_t)((s).end - (s).p))

/* ---- decoding --------------------------------------------------------------------------- */

enum {
    S_TID, S_SID, S_PID, S_TSTATE, S_NAME, S_KIND, S_STATUS, S_SMSG, S_SATTRS,
    S_EVNAME, S_EVATTRS, S_LNTID, S_LNSID, S_LNSTATE, S_LNATTRS,
    S_SCOPENAME, S_SCOPEVER, S_SCOPEATTRS, S_SERVICE, S_RATTRS, S_N
};
static const char *S_NAMES[S_N] = {
    "tid", "sid", "pid", "tstate", "name", "kind", "status", "smsg", "sattrs",
    "evname", "evattrs", "lntid", "lnsid", "lnstate", "lnattrs", "scopename", "scopever", "scopeattrs",
    "service", "rattrs"};
enum { I_EVOFF, I_LNOFF, I_SCOPEIDX, I_RESIDX, I_N };
static const char *I_NAMES[I_N] = {"evoff", "lnoff", "scopeidx", "residx"};
enum { L_TS, L_DUR, L_EVTS, L_TKEY, L_N };
static const char *L_NAMES[L_N] = {"ts", "dur", "evts", "tkey"};
/* The attribute sets, each a JSON object in its string column and, when maps are asked for, an
   Arrow map (offsets per set; keys; string forms, repeated keys kept in order) and a string of
   their types (schema.MAP_TYPES: a letter a pair, the typed JSON after an array's or a map's) */
enum { M_RATTRS, M_SCOPEATTRS, M_SATTRS, M_EVATTRS, M_LNATTRS, M_N };
static const int M_COL[M_N] = {S_RATTRS, S_SCOPEATTRS, S_SATTRS, S_EVATTRS, S_LNATTRS};

typedef struct {
    bytes_t off;
    strcol_t k, v, t;
    bytes_t types; /* the set being read: its letters so far */
} map_t;
/* A value's type letter, by AnyValue oneof field number (0: empty) */
static const char TYPE_LETTER[8] = {'e', 's', 'b', 'i', 'd', 'a', 'm', 'y'};

typedef struct {
    /* Python callable (oneof field number, float or AnyValue bytes) -> (string form, stored JSON) */
    PyObject *render;
    strcol_t s[S_N];
    bytes_t i32[I_N], i64[L_N];
    strcol_t xspan[MAX_EXTRACT], xres[MAX_EXTRACT];
    const char *xkey[MAX_EXTRACT];
    Py_ssize_t xlen[MAX_EXTRACT], nx;
    uint64_t xlens; /* bit k set if some requested key is k bytes long */
    char xfound[MAX_EXTRACT];
    bytes_t xval[MAX_EXTRACT];           /* per row: the requested keys' values */
    bytes_t scratch, vjson;               /* a value's string form; its JSON when rendered by Python */
    int vkind;                            /* the last value's oneof field number (0: empty) */
    bytes_t obj, evobj, service;          /* the JSON objects being built */
    int has_service;
    bytes_t keys;      /* trace_id + span_id, 24 bytes a span */
    int maps;          /* also give each attribute set as a map of string forms */
    map_t m[M_N];
    PyObject *errors;
    PyThreadState *ts; /* saved while the GIL is released */
    Py_ssize_t rejected, max_errors, nspans, nevents, nlinks;
    /* limits: a value's string form is cut to max_value bytes (at a UTF-8 boundary) and marked with
       an ellipsis; an attribute set keeps its first max_attrs attributes; a request holds at most
       max_spans spans (rejected ones included), else it is refused whole */
    Py_ssize_t max_value, max_attrs, max_spans, truncated, dropped;
} out_t;

/* The latest time the store holds (decode.MAX_TIME_NS): DuckDB's TIMESTAMP_NS is int64 ns and
   reads INT64_MAX as infinity. A span's end (start + duration) and its events' times are checked. */
#define MAX_TIME_NS ((uint64_t)INT64_MAX - 1)
#define MAX_TIME_TEXT "at most 9223372036854775806 ns, in 2262"

static const char *KIND[6] = {"Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"};
static const char *STATUS[3] = {"Unset", "Ok", "Error"};

static int push_hex(strcol_t *c, buf_t s) {
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t n = LEN(s);
    if (bb_reserve(&c->data, 2 * n) < 0) return -1;
    char *d = c->data.d + c->data.len;
    for (Py_ssize_t i = 0; i < n; i++) {
        d[2 * i] = digits[s.p[i] >> 4];
        d[2 * i + 1] = digits[s.p[i] & 15];
    }
    c->data.len += 2 * n;
    return sc_push(c, "", 0);
}

/* Rare values are rendered by Python: take the GIL for the call. The AnyValue's bytes (raw) or
   else the double d; the string form goes to out, the stored JSON to o->vjson. */
static int push_rendered(out_t *o, bytes_t *out, int kind, const uint8_t *raw, Py_ssize_t len, double d) {
    PyEval_RestoreThread(o->ts);
    int r = -1;
    PyObject *arg = raw ? PyBytes_FromStringAndSize((const char *)raw, len) : PyFloat_FromDouble(d);
    PyObject *t = arg ? PyObject_CallFunction(o->render, "iO", kind, arg) : NULL;
    Py_XDECREF(arg);
    if (t) {
        Py_ssize_t n, m;
        const char *u, *j;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
            PyErr_SetString(PyExc_TypeError, "render must return (string form, stored JSON)");
        } else if ((u = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 0), &n)) &&
                   (j = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 1), &m))) {
            o->vjson.len = 0;
            r = bb_put(out, u, n) < 0 || bb_put(&o->vjson, j, m) < 0 ? -1 : 0;
        }
        Py_DECREF(t);
    }
    if (r < 0 && PyErr_Occurred()) g_pyerror = 1;
    o->ts = PyEval_SaveThread();
    return r;
}

/* s as a JSON string, escaped as Python's json.dumps(s, ensure_ascii=False) does. */
static int json_str(bytes_t *out, const char *p, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    if (bb_reserve(out, n + 2) < 0) return -1;
    out->d[out->len++] = '"';
    Py_ssize_t run = 0; /* bytes not yet copied, ending at p + i */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (bb_put(out, p + run, i - run) < 0) return -1;
        run = i + 1;
        char esc[6] = {'\\', 0};
        int len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            len = 6;
        }
        if (bb_put(out, esc, len) < 0) return -1;
    }
    if (bb_put(out, p + run, n - run) < 0) return -1;
    return bb_put(out, "\"", 1);
}

#define K_RENDERED 8 /* a value rendered by Python: its stored JSON is in o->vjson */

/* AnyValue → its string form, the collector's AsString(), appended to out; *kind is the value's
   oneof field number (0 when empty), or K_RENDERED. */
static int push_value(out_t *o, buf_t v, bytes_t *out, int *kind_out) {
    uint32_t f;
    int w, r, kind = 0;
    uint64_t num = 0;
    buf_t s = {NULL, NULL}, whole = v;
    while ((r = next_field(&v, &f, &w)) > 0) {
        if (f == 1 && w == 2) { if (read_len(&v, &s) < 0) return -1; kind = 1; }
        else if ((f == 2 || f == 3) && w == 0) { if (read_varint(&v, &num) < 0) return -1; kind = (int)f; }
        else if (f == 4 && w == 1) { if (read_fixed64(&v, &num) < 0) return -1; kind = 4; }
        else if ((f == 5 || f == 6 || f == 7) && w == 2) { if (read_len(&v, &s) < 0) return -1; kind = (int)f; }
        else if (skip(&v, w) < 0) return -1;
    }
    if (r < 0) return -1;
    *kind_out = o->vkind = kind;
    switch (kind) {
    case 0: return 0;
    case 1: return bb_put(out, s.p, LEN(s));
    case 2: return num ? bb_put(out, "true", 4) : bb_put(out, "false", 5);
    case 3: {
        char tmp[24], *e = tmp + sizeof tmp, *q = e;
        int64_t i = (int64_t)num;
        uint64_t u = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
        do { *--q = (char)('0' + u % 10); u /= 10; } while (u);
        if (i < 0) *--q = '-';
        return bb_put(out, q, e - q);
    }
    case 4: {
        double d;
        memcpy(&d, &num, 8);
        /* The shortest form that reads back as d is repr's; %g writes it without an exponent
           where repr does, between 1e-4 and 1e15. The closest 15-, 16- then 17-digit decimal is
           tried: if none of N digits reads back as d, neither does the closest, except where d's
           neighbours are not equally far (a power of two), where only 15 digits are tried, or
           where precision is lower (a subnormal number).
           Below 1e-4 it is written as the collector's AsString writes it (ES6's number to
           string): without an exponent down to 1e-6 (0.000045), below with the exponent's
           leading zeros dropped (4.5e-7, not 4.5e-07). Anything else (large or non-finite values) is rendered by Python. Rendering here
           matters: each Python call takes the GIL back in the middle of the parse, and costs
           and latencies are full-precision doubles (~0.13 a span in simulated traffic). */
        char txt[40];
        uint64_t mantissa = num & 0xFFFFFFFFFFFFFULL;
        int most = mantissa ? 17 : 15;
        if (mantissa && !(num >> 52 & 0x7FF)) most = 0; /* subnormal: fewer digits, left to Python */
        for (int digits = 15; digits <= most; digits++) {
            int n = snprintf(txt, sizeof txt, "%.*g", digits, d);
            if (n <= 0 || n >= (int)sizeof txt || strpbrk(txt, "ni")) break;
            if (strtod(txt, NULL) != d) continue;
            char *e = strchr(txt, 'e');
            if (!e) return bb_put(out, txt, n);
            if (e[1] != '-') break; /* a large number: Python writes it as an integer */
            char *x = e + 2;
            while (*x == '0') x++;
            int exp10 = atoi(x);
            if (exp10 <= 6) { /* 1e-6 <= |d| < 1e-4: "0.0000" and the digits */
                char dec[48], *q = dec;
                const char *m = txt;
                if (*m == '-') *q++ = *m++;
                *q++ = '0';
                *q++ = '.';
                for (int z = 1; z < exp10; z++) *q++ = '0';
                for (; m < e; m++)
                    if (*m != '.') *q++ = *m;
                return bb_put(out, dec, q - dec);
            }
            if (bb_put(out, txt, e - txt + 2) < 0) return -1;
            return bb_put(out, x, (Py_ssize_t)strlen(x));
        }
        *kind_out = K_RENDERED;
        return push_rendered(o, out, 4, NULL, 0, d);
    }
    default: /* array, kvlist, bytes: rendered in Python from the AnyValue's bytes */
        *kind_out = K_RENDERED;
        return push_rendered(o, out, kind, whole.p, LEN(whole), 0.0);
    }
}

/* One KeyValue appended to the JSON object being built in obj ("{" already there). With extract,
   if its key is requested and not yet seen for this row, its value is kept in xval; with
   extract == 2 (resource attributes) service.name's value is kept in service. */
static int push_kv(out_t *o, buf_t kvb, bytes_t *obj, int set, int extract, Py_ssize_t *nattrs) {
    uint32_t f;
    int w, r;
    buf_t key = {kvb.p, kvb.p}, val = {kvb.p, kvb.p};
    while ((r = next_field(&kvb, &f, &w)) > 0) {
        if (f == 1 && w == 2) { if (read_len(&kvb, &key) < 0) return -1; }
        else if (f == 2 && w == 2) { if (read_len(&kvb, &val) < 0) return -1; }
        else if (skip(&kvb, w) < 0) return -1;
    }
    if (r < 0) return -1;
    if (++*nattrs > o->max_attrs) { /* beyond the limit: dropped, as an SDK's attribute count limit does */
        o->dropped++;
        return 0;
    }
    int kind;
    o->scratch.len = 0;
    if (push_value(o, val, &o->scratch, &kind) < 0) return -1;
    if (o->scratch.len > o->max_value) { /* cut, and stored as a string */
        Py_ssize_t cut = o->max_value;
        while (cut > 0 && ((unsigned char)o->scratch.d[cut] & 0xC0) == 0x80) cut--; /* not inside a character */
        o->scratch.len = cut;
        if (bb_put(&o->scratch, "\xe2\x80\xa6", 3) < 0) return -1; /* U+2026 HORIZONTAL ELLIPSIS */
        o->truncated++;
        kind = o->vkind = 1;
    }
    Py_ssize_t kl = LEN(key);
    if (o->maps) {
        map_t *m = &o->m[set];
        if (sc_push(&m->k, key.p, kl) < 0 || sc_push(&m->v, o->scratch.d, o->scratch.len) < 0 ||
            bb_put(&m->types, &TYPE_LETTER[o->vkind], 1) < 0)
            return -1;
        if ((o->vkind == 5 || o->vkind == 6) && bb_put(&m->types, o->vjson.d, o->vjson.len) < 0) return -1;
    }
    if (obj->len > 1 && bb_put(obj, ",", 1) < 0) return -1;
    if (json_str(obj, (const char *)key.p, kl) < 0 || bb_put(obj, ":", 1) < 0) return -1;
    /* the value in its JSON type (store/attributes.py): ints and bools are their string form */
    switch (kind) {
    case 0: r = bb_put(obj, "null", 4); break;
    case 1: r = json_str(obj, o->scratch.d, o->scratch.len); break;
    case 4: /* a double reads back as one: "2" is stored 2.0 (NaN, Infinity: as they are) */
        r = bb_put(obj, o->scratch.d, o->scratch.len);
        if (r == 0 && o->scratch.d[o->scratch.len - 1] <= '9' && !memchr(o->scratch.d, '.', o->scratch.len) &&
            !memchr(o->scratch.d, 'e', o->scratch.len))
            r = bb_put(obj, ".0", 2);
        break;
    case K_RENDERED: r = bb_put(obj, o->vjson.d, o->vjson.len); break;
    default: r = bb_put(obj, o->scratch.d, o->scratch.len);
    }
    if (r < 0) return -1;
    if (extract && kl < 64 && (o->xlens >> kl) & 1) {
        for (Py_ssize_t j = 0; j < o->nx; j++) {
            if (o->xlen[j] == kl && !o->xfound[j] && memcmp(o->xkey[j], key.p, kl) == 0) {
                o->xfound[j] = 1;
                o->xval[j].len = 0;
                if (bb_put(&o->xval[j], o->scratch.d, o->scratch.len) < 0) return -1;
            }
        }
    }
    if (extract == 2 && kl == 12 && memcmp(key.p, "service.name", 12) == 0) { /* the last one wins */
        o->service.len = 0;
        o->has_service = 1;
        if (bb_put(&o->service, o->scratch.d, o->scratch.len) < 0) return -1;
    }
    return 0;
}

static int obj_begin(bytes_t *obj) {
    obj->len = 0;
    return bb_put(obj, "{", 1);
}

static int obj_end(out_t *o, bytes_t *obj, int set) {
    if (bb_put(obj, "}", 1) < 0 || sc_push(&o->s[M_COL[set]], obj->d, obj->len) < 0) return -1;
    if (!o->maps) return 0;
    map_t *m = &o->m[set];
    if (bb_i32(&m->off, (int32_t)m->k.n) < 0 || sc_push(&m->t, m->types.d, m->types.len) < 0) return -1;
    m->types.len = 0;
    return 0;
}

static void extract_reset(out_t *o) {
    memset(o->xfound, 0, (size_t)o->nx);
}

static int extract_emit(out_t *o, strcol_t *cols) {
    for (Py_ssize_t j = 0; j < o->nx; j++) {
        int r = o->xfound[j] ? sc_push(&cols[j], o->xval[j].d, o->xval[j].len) : sc_null(&cols[j]);
        if (r < 0) return -1;
    }
    return 0;
}

static int reject(out_t *o, buf_t name, const char *what) {
    o->rejected++;
    if (o->rejected > o->max_errors) return 0;
    PyEval_RestoreThread(o->ts); /* rare: take the GIL to write the message */
    int r = -1;
    PyObject *n = PyUnicode_DecodeUTF8((const char *)name.p, LEN(name), "replace");
    PyObject *m = n ? PyUnicode_FromFormat("span %R: %s", n, what) : NULL;
    if (m) r = PyList_Append(o->errors, m);
    Py_XDECREF(n);
    Py_XDECREF(m);
    if (r < 0) g_pyerror = 1;
    o->ts = PyEval_SaveThread();
    return r;
}

static int decode_span(out_t *o, buf_t sp, int32_t scope_i) {
    uint32_t f;
    int w, r;
    if (o->nspans + o->rejected >= o->max_spans) {
        snprintf(g_limit_msg, sizeof g_limit_msg, "the request holds more than %zd spans (max_spans_per_request)",
                 o->max_spans);
        return fail(g_limit_msg);
    }
    buf_t none = {sp.p, sp.p};
    buf_t tid = none, sid = none, pid = none, tstate = none, name = none, status = {NULL, NULL};
    uint64_t kind = 0, start = 0, end = 0, max_event = 0;
    /* First pass: the scalars. Attributes, events and links are read on a second pass, only for
       spans that pass validation, so a rejected span leaves nothing in the columns. */
    buf_t s = sp;
    while ((r = next_field(&s, &f, &w)) > 0) {
        buf_t sub;
        if (w == 2 && f <= 15) {
            if (read_len(&s, &sub) < 0) return -1;
            if (f == 1) tid = sub;
            else if (f == 2) sid = sub;
            else if (f == 3) tstate = sub;
            else if (f == 4) pid = sub;
            else if (f == 5) name = sub;
            else if (f == 15) status = sub;
            else if (f == 11) { /* an event: only its time matters here, the last one given wins */
                uint64_t t = 0;
                uint32_t ef;
                int ew, er;
                while ((er = next_field(&sub, &ef, &ew)) > 0) {
                    if (ef == 1 && ew == 1) { if (read_fixed64(&sub, &t) < 0) return -1; }
                    else if (skip(&sub, ew) < 0) return -1;
                }
                if (er < 0) return -1;
                if (t > max_event) max_event = t;
            }
        } else if (f == 6 && w == 0) { if (read_varint(&s, &kind) < 0) return -1; }
        else if (f == 7 && w == 1) { if (read_fixed64(&s, &start) < 0) return -1; }
        else if (f == 8 && w == 1) { if (read_fixed64(&s, &end) < 0) return -1; }
        else if (skip(&s, w) < 0) return -1;
    }
    if (r < 0) return -1;
    static const uint8_t zero[16] = {0};
    char msg[96];
    const char *bad = NULL;
    Py_ssize_t tl = LEN(tid), sl = LEN(sid), pl = LEN(pid);
    if (tl != 16 || memcmp(tid.p, zero, 16) == 0) {
        snprintf(msg, sizeof msg, "trace_id must be 16 bytes and not all zero, got %zd bytes", tl);
        bad = msg;
    } else if (sl != 8 || memcmp(sid.p, zero, 8) == 0) {
        snprintf(msg, sizeof msg, "span_id must be 8 bytes and not all zero, got %zd bytes", sl);
        bad = msg;
    } else if (pl != 0 && pl != 8) {
        snprintf(msg, sizeof msg, "parent_span_id must be empty or 8 bytes, got %zd bytes", pl);
        bad = msg;
    } else if (end < start) {
        bad = "end_time_unix_nano is before start_time_unix_nano";
    } else if (start > MAX_TIME_NS) {
        bad = "start_time_unix_nano is out of range (" MAX_TIME_TEXT ")";
    } else if (end > MAX_TIME_NS) {
        bad = "end_time_unix_nano is out of range (" MAX_TIME_TEXT ")";
    } else if (max_event > MAX_TIME_NS) {
        bad = "an event's time_unix_nano is out of range (" MAX_TIME_TEXT ")";
    }
    if (bad) return reject(o, name, bad);

    uint64_t code = 0;
    buf_t smsg = none;
    if (status.p) {
        buf_t st = status;
        while ((r = next_field(&st, &f, &w)) > 0) {
            if (f == 2 && w == 2) { if (read_len(&st, &smsg) < 0) return -1; }
            else if (f == 3 && w == 0) { if (read_varint(&st, &code) < 0) return -1; }
            else if (skip(&st, w) < 0) return -1;
        }
        if (r < 0) return -1;
    }
    extract_reset(o);
    if (obj_begin(&o->obj) < 0) return -1;
    Py_ssize_t nattrs = 0;
    s = sp;
    while ((r = next_field(&s, &f, &w)) > 0) {
        buf_t sub;
        if (w != 2) { if (skip(&s, w) < 0) return -1; continue; }
        if (read_len(&s, &sub) < 0) return -1;
        if (f == 9) {
            if (push_kv(o, sub, &o->obj, M_SATTRS, 1, &nattrs) < 0) return -1;
        } else if (f == 11) {
            uint64_t t = 0;
            buf_t en = {sub.p, sub.p}, e = sub, a;
            uint32_t ef;
            int ew, er;
            Py_ssize_t nev = 0;
            if (obj_begin(&o->evobj) < 0) return -1;
            while ((er = next_field(&e, &ef, &ew)) > 0) {
                if (ef == 1 && ew == 1) { if (read_fixed64(&e, &t) < 0) return -1; }
                else if (ef == 2 && ew == 2) { if (read_len(&e, &en) < 0) return -1; }
                else if (ef == 3 && ew == 2) {
                    if (read_len(&e, &a) < 0 || push_kv(o, a, &o->evobj, M_EVATTRS, 0, &nev) < 0) return -1;
                } else if (skip(&e, ew) < 0) return -1;
            }
            if (er < 0) return -1;
            if (bb_i64(&o->i64[L_EVTS], (int64_t)t) < 0 ||
                sc_push(&o->s[S_EVNAME], en.p, LEN(en)) < 0 || obj_end(o, &o->evobj, M_EVATTRS) < 0)
                return -1;
            o->nevents++;
        } else if (f == 13) {
            buf_t lt = {sub.p, sub.p}, ls = lt, lst = lt, l = sub, a;
            uint32_t lf;
            int lw, lr;
            Py_ssize_t nln = 0;
            if (obj_begin(&o->evobj) < 0) return -1;
            while ((lr = next_field(&l, &lf, &lw)) > 0) {
                if (lw == 2 && lf >= 1 && lf <= 4) {
                    if (read_len(&l, &a) < 0) return -1;
                    if (lf == 1) lt = a;
                    else if (lf == 2) ls = a;
                    else if (lf == 3) lst = a;
                    else if (push_kv(o, a, &o->evobj, M_LNATTRS, 0, &nln) < 0) return -1;
                } else if (skip(&l, lw) < 0) return -1;
            }
            if (lr < 0) return -1;
            if (push_hex(&o->s[S_LNTID], lt) < 0 || push_hex(&o->s[S_LNSID], ls) < 0 ||
                sc_push(&o->s[S_LNSTATE], lst.p, LEN(lst)) < 0 || obj_end(o, &o->evobj, M_LNATTRS) < 0)
                return -1;
            o->nlinks++;
        }
    }
    if (r < 0) return -1;
    if (extract_emit(o, o->xspan) < 0 || obj_end(o, &o->obj, M_SATTRS) < 0) return -1;
    if (bb_i32(&o->i32[I_EVOFF], (int32_t)o->nevents) < 0 || bb_i32(&o->i32[I_LNOFF], (int32_t)o->nlinks) < 0 ||
        bb_i64(&o->i64[L_TS], (int64_t)start) < 0 || bb_i64(&o->i64[L_DUR], (int64_t)(end - start)) < 0 ||
        bb_i32(&o->i32[I_SCOPEIDX], scope_i) < 0)
        return -1;
    const char *k = KIND[kind < 6 ? kind : 0], *c = STATUS[code < 3 ? code : 0];
    if (push_hex(&o->s[S_TID], tid) < 0 || push_hex(&o->s[S_SID], sid) < 0 || push_hex(&o->s[S_PID], pid) < 0 ||
        sc_push(&o->s[S_TSTATE], tstate.p, LEN(tstate)) < 0 || sc_push(&o->s[S_NAME], name.p, LEN(name)) < 0 ||
        sc_push(&o->s[S_KIND], k, (Py_ssize_t)strlen(k)) < 0 ||
        sc_push(&o->s[S_STATUS], c, (Py_ssize_t)strlen(c)) < 0 || sc_push(&o->s[S_SMSG], smsg.p, LEN(smsg)) < 0)
        return -1;
    uint64_t tkey = 0; /* schema.TraceKey: the trace id's last 8 bytes, big-endian */
    for (int i = 8; i < 16; i++) tkey = tkey << 8 | tid.p[i];
    if (bb_put(&o->i64[L_TKEY], &tkey, 8) < 0) return -1;
    if (bb_put(&o->keys, tid.p, 16) < 0 || bb_put(&o->keys, sid.p, 8) < 0) return -1;
    o->nspans++;
    return 0;
}

static int decode_scope_spans(out_t *o, buf_t ss, int32_t res_i) {
    uint32_t f;
    int w, r;
    buf_t scope = {NULL, NULL}, sname = {ss.p, ss.p}, sver = sname, s = ss;
    while ((r = next_field(&s, &f, &w)) > 0) {
        if (f == 1 && w == 2) { if (read_len(&s, &scope) < 0) return -1; }
        else if (skip(&s, w) < 0) return -1;
    }
    if (r < 0) return -1;
    /* the scope's attributes, into o->obj: the resource's object is already pushed, and the
       spans' are begun after this */
    Py_ssize_t nattrs = 0;
    if (obj_begin(&o->obj) < 0) return -1;
    if (scope.p) {
        while ((r = next_field(&scope, &f, &w)) > 0) {
            buf_t kv;
            if (f == 1 && w == 2) { if (read_len(&scope, &sname) < 0) return -1; }
            else if (f == 2 && w == 2) { if (read_len(&scope, &sver) < 0) return -1; }
            else if (f == 3 && w == 2) {
                if (read_len(&scope, &kv) < 0 || push_kv(o, kv, &o->obj, M_SCOPEATTRS, 0, &nattrs) < 0) return -1;
            } else if (skip(&scope, w) < 0) return -1;
        }
        if (r < 0) return -1;
    }
    int32_t scope_i = (int32_t)o->s[S_SCOPENAME].n;
    if (sc_push(&o->s[S_SCOPENAME], sname.p, LEN(sname)) < 0 || sc_push(&o->s[S_SCOPEVER], sver.p, LEN(sver)) < 0 ||
        obj_end(o, &o->obj, M_SCOPEATTRS) < 0 || bb_i32(&o->i32[I_RESIDX], res_i) < 0)
        return -1;
    s = ss;
    while ((r = next_field(&s, &f, &w)) > 0) {
        buf_t sp;
        if (f == 2 && w == 2) {
            if (read_len(&s, &sp) < 0 || decode_span(o, sp, scope_i) < 0) return -1;
        } else if (skip(&s, w) < 0) return -1;
    }
    return r;
}

static int decode_resource_spans(out_t *o, buf_t rs) {
    uint32_t f;
    int w, r;
    buf_t s = rs, res = {NULL, NULL};
    while ((r = next_field(&s, &f, &w)) > 0) {
        if (f == 1 && w == 2) { if (read_len(&s, &res) < 0) return -1; }
        else if (skip(&s, w) < 0) return -1;
    }
    if (r < 0) return -1;
    /* requested keys are pulled from the resource attributes too (span-metric dimensions fall back
       to them); service.name is found on the way */
    extract_reset(o);
    o->has_service = 0;
    if (obj_begin(&o->obj) < 0) return -1;
    Py_ssize_t nattrs = 0;
    if (res.p) {
        while ((r = next_field(&res, &f, &w)) > 0) {
            buf_t kv;
            if (f == 1 && w == 2) {
                if (read_len(&res, &kv) < 0 || push_kv(o, kv, &o->obj, M_RATTRS, 2, &nattrs) < 0) return -1;
            } else if (skip(&res, w) < 0) return -1;
        }
        if (r < 0) return -1;
    }
    int32_t res_i = (int32_t)o->s[S_SERVICE].n;
    if ((o->has_service ? sc_push(&o->s[S_SERVICE], o->service.d, o->service.len)
                        : sc_push(&o->s[S_SERVICE], "", 0)) < 0 ||
        obj_end(o, &o->obj, M_RATTRS) < 0 || extract_emit(o, o->xres) < 0)
        return -1;
    s = rs;
    while ((r = next_field(&s, &f, &w)) > 0) {
        buf_t ss;
        if (f == 2 && w == 2) {
            if (read_len(&s, &ss) < 0 || decode_scope_spans(o, ss, res_i) < 0) return -1;
        } else if (skip(&s, w) < 0) return -1;
    }
    return r;
}

static void out_free(out_t *o) {
    for (int i = 0; i < S_N; i++) sc_free(&o->s[i]);
    for (int i = 0; i < I_N; i++) PyMem_RawFree(o->i32[i].d);
    for (int i = 0; i < L_N; i++) PyMem_RawFree(o->i64[i].d);
    for (int i = 0; i < M_N; i++) {
        PyMem_RawFree(o->m[i].off.d);
        sc_free(&o->m[i].k);
        sc_free(&o->m[i].v);
        sc_free(&o->m[i].t);
        PyMem_RawFree(o->m[i].types.d);
    }
    for (Py_ssize_t j = 0; j < o->nx; j++) {
        sc_free(&o->xspan[j]);
        sc_free(&o->xres[j]);
        PyMem_RawFree(o->xval[j].d);
    }
    PyMem_RawFree(o->scratch.d);
    PyMem_RawFree(o->vjson.d);
    PyMem_RawFree(o->obj.d);
    PyMem_RawFree(o->evobj.d);
    PyMem_RawFree(o->service.d);
    PyMem_RawFree(o->keys.d);
    Py_XDECREF(o->errors);
}

static PyObject *export(out_t *o) {
    PyObject *d = PyDict_New(), *v;
    if (!d) return NULL;
#define SET(name, expr) \
    if (!(v = (expr)) || PyDict_SetItemString(d, name, v) < 0) { Py_XDECREF(v); Py_DECREF(d); return NULL; } \
    Py_DECREF(v);
    for (int i = 0; i < S_N; i++) { SET(S_NAMES[i], sc_export(&o->s[i])); }
    for (int i = 0; i < I_N; i++) { SET(I_NAMES[i], bytes_of(&o->i32[i])); }
    for (int i = 0; i < L_N; i++) { SET(L_NAMES[i], bytes_of(&o->i64[i])); }
    PyObject *xs = PyList_New(o->nx), *xr = PyList_New(o->nx);
    if (!xs || !xr) { Py_XDECREF(xs); Py_XDECREF(xr); Py_DECREF(d); return NULL; }
    for (Py_ssize_t j = 0; j < o->nx; j++) {
        /* None for a key no row has (most requested keys, for any one sender): no Arrow array to make */
        PyObject *a = o->xspan[j].nulls == o->xspan[j].n ? Py_NewRef(Py_None) : sc_export(&o->xspan[j]);
        PyObject *b = o->xres[j].nulls == o->xres[j].n ? Py_NewRef(Py_None) : sc_export(&o->xres[j]);
        if (!a || !b) { Py_XDECREF(a); Py_XDECREF(b); Py_DECREF(xs); Py_DECREF(xr); Py_DECREF(d); return NULL; }
        PyList_SET_ITEM(xs, j, a);
        PyList_SET_ITEM(xr, j, b);
    }
    SET("xspan", xs);
    SET("xres", xr);
    /* per attribute set, in M_* order: (offsets, keys, string forms, types), or None unless asked */
    PyObject *maps = Py_None;
    if (o->maps) {
        if (!(maps = PyTuple_New(M_N))) { Py_DECREF(d); return NULL; }
        for (int i = 0; i < M_N; i++) {
            PyObject *t = Py_BuildValue("(NNNN)", bytes_of(&o->m[i].off), sc_export(&o->m[i].k), sc_export(&o->m[i].v),
                                        sc_export(&o->m[i].t));
            if (!t) { Py_DECREF(maps); Py_DECREF(d); return NULL; }
            PyTuple_SET_ITEM(maps, i, t);
        }
    } else {
        Py_INCREF(maps);
    }
    SET("maps", maps);
    SET("keys", bytes_of(&o->keys));
    SET("errors", (Py_INCREF(o->errors), o->errors));
    SET("rejected", PyLong_FromSsize_t(o->rejected));
    SET("n", PyLong_FromSsize_t(o->nspans));
    SET("truncated", PyLong_FromSsize_t(o->truncated));
    SET("dropped", PyLong_FromSsize_t(o->dropped));
#undef SET
    return d;
}

/* decode(body, render, max_errors, extract_keys, max_value_bytes, max_attributes, max_spans, maps) -> dict
   of column buffers */
static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *render, *xkeys;
    Py_ssize_t max_errors, max_value, max_attrs, max_spans;
    int maps = 0;
    if (!PyArg_ParseTuple(args, "y*OnO!nnn|p", &view, &render, &max_errors, &PyTuple_Type, &xkeys, &max_value,
                          &max_attrs, &max_spans, &maps))
        return NULL;
    if (max_value < 0 || max_attrs < 0 || max_spans < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "limits must not be negative");
        return NULL;
    }
    out_t *o = PyMem_RawCalloc(1, sizeof(out_t));
    if (!o) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    o->render = render;
    o->max_errors = max_errors;
    o->max_value = max_value;
    o->max_attrs = max_attrs;
    o->max_spans = max_spans;
    o->maps = maps;
    o->nx = PyTuple_GET_SIZE(xkeys);
    if (o->nx > MAX_EXTRACT) {
        PyErr_SetString(PyExc_ValueError, "too many extract keys");
        o->nx = 0;
        goto done;
    }
    for (Py_ssize_t j = 0; j < o->nx; j++) {
        if (!(o->xkey[j] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(xkeys, j), &o->xlen[j]))) {
            o->nx = 0;
            goto done;
        }
        if (o->xlen[j] >= 64) {
            PyErr_SetString(PyExc_ValueError, "extract keys must be shorter than 64 bytes");
            o->nx = 0;
            goto done;
        }
        o->xlens |= (uint64_t)1 << o->xlen[j];
    }
    g_error = NULL;
    g_pyerror = 0;
    if (!(o->errors = PyList_New(0))) goto done;
    for (int i = 0; i < S_N; i++)
        if (sc_init(&o->s[i]) < 0) goto raise;
    for (Py_ssize_t j = 0; j < o->nx; j++)
        if (sc_init(&o->xspan[j]) < 0 || sc_init(&o->xres[j]) < 0) goto raise;
    int offs[] = {I_EVOFF, I_LNOFF};
    for (int i = 0; i < 2; i++)
        if (bb_i32(&o->i32[offs[i]], 0) < 0) goto raise;
    for (int i = 0; o->maps && i < M_N; i++)
        if (bb_i32(&o->m[i].off, 0) < 0 || sc_init(&o->m[i].k) < 0 || sc_init(&o->m[i].v) < 0 ||
            sc_init(&o->m[i].t) < 0)
            goto raise;
    buf_t b = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    uint32_t f;
    int w, r;
    o->ts = PyEval_SaveThread(); /* the parse touches no Python object: other threads run meanwhile */
    while ((r = next_field(&b, &f, &w)) > 0) {
        buf_t rs;
        if (f == 1 && w == 2) {
            if (read_len(&b, &rs) < 0 || decode_resource_spans(o, rs) < 0) { r = -1; break; }
        } else if (skip(&b, w) < 0) { r = -1; break; }
    }
    PyEval_RestoreThread(o->ts);
    if (r >= 0) {
        result = export(o);
        goto done;
    }
raise:
    if (g_pyerror) goto done;
    if (g_error == g_limit_msg) PyErr_SetString(DecodeError, g_limit_msg);
    else PyErr_Format(DecodeError, "cannot decode OTLP protobuf request: %s", g_error ? g_error : "?");
done:
    out_free(o);
    PyMem_RawFree(o);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *set_error(PyObject *self, PyObject *exc) {
    Py_INCREF(exc);
    Py_XSETREF(DecodeError, exc);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(body, render, max_errors, extract_keys, max_value_bytes, max_attributes, max_spans, maps=False) -> dict "
     "of Arrow buffers"},
    {"set_error", set_error, METH_O, "set the exception class raised for undecodable requests"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp", NULL, -1, methods};

PyMODINIT_FUNC PyInit__otlp(void) {
    DecodeError = PyExc_ValueError;
    Py_INCREF(DecodeError);
    return PyModule_Create(&module);
}
