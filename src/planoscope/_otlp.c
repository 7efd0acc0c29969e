/*
 * planoscope._otlp: the ingest hot path, an OTLP ExportTraceServiceRequest decoder.
 *
 * Walking upb's Python objects costs about 0.6 us per attribute (a wrapper object per
 * KeyValue and AnyValue), which caps a 15-attribute span at ~50k spans/s for decode alone.
 * This module reads the protobuf wire format directly and appends the column values straight
 * into Python lists, the same lists planoscope.decode's reference walker builds from protobuf
 * objects (tests/test_decode.py checks both give identical batches). Rare value kinds (arrays,
 * key-value lists, bytes, doubles in exponent form) are handed back to Python to render.
 *
 * Strings are validated as UTF-8 (PyUnicode_DecodeUTF8), as protobuf requires; a request that
 * breaks the wire format or UTF-8 is rejected whole, as upb would.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} buf_t;

static PyObject *DecodeError;   /* planoscope.decode.BadRequest, set at init by Python */
static PyObject *S_KIND[6], *S_STATUS[3], *S_TRUE, *S_FALSE, *S_EMPTY;

static int fail(const char *msg) {
    PyErr_SetString(DecodeError, msg);
    return -1;
}

static int read_varint(buf_t *b, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    while (b->p < b->end && shift < 64) {
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
        shift += 7;
    }
    return fail("cannot decode OTLP protobuf request: truncated or invalid varint");
}

static int read_fixed64(buf_t *b, uint64_t *out) {
    if (b->end - b->p < 8) return fail("cannot decode OTLP protobuf request: truncated fixed64");
    memcpy(out, b->p, 8); /* little-endian hosts only (x86_64, aarch64) */
    b->p += 8;
    return 0;
}

/* Read one field tag; returns 1 with field/wire set, 0 at end, -1 on error. */
static int next_field(buf_t *b, uint32_t *field, int *wire) {
    if (b->p >= b->end) return 0;
    uint64_t tag;
    if (read_varint(b, &tag) < 0) return -1;
    *field = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    if (*field == 0) return fail("cannot decode OTLP protobuf request: field number 0");
    return 1;
}

static int read_len(buf_t *b, buf_t *sub) {
    uint64_t n;
    if (read_varint(b, &n) < 0) return -1;
    if (n > (uint64_t)(b->end - b->p)) return fail("cannot decode OTLP protobuf request: length past end of message");
    sub->p = b->p;
    sub->end = b->p + n;
    b->p += n;
    return 0;
}

static int skip(buf_t *b, int wire) {
    uint64_t v;
    buf_t s;
    switch (wire) {
    case 0: return read_varint(b, &v);
    case 1: return read_fixed64(b, &v);
    case 2: return read_len(b, &s);
    case 5:
        if (b->end - b->p < 4) return fail("cannot decode OTLP protobuf request: truncated fixed32");
        b->p += 4;
        return 0;
    default: return fail("cannot decode OTLP protobuf request: unsupported wire type");
    }
}

static PyObject *to_str(buf_t s) {
    if (s.p == s.end) {
        Py_INCREF(S_EMPTY);
        return S_EMPTY;
    }
    PyObject *o = PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, NULL);
    if (!o) {
        PyErr_Clear();
        fail("cannot decode OTLP protobuf request: string field is not valid UTF-8");
    }
    return o;
}

static PyObject *to_hex(buf_t s) {
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t n = s.end - s.p;
    PyObject *o = PyUnicode_New(2 * n, 127);
    if (!o) return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(o);
    for (Py_ssize_t i = 0; i < n; i++) {
        d[2 * i] = digits[s.p[i] >> 4];
        d[2 * i + 1] = digits[s.p[i] & 15];
    }
    return o;
}

/* Append o to list and drop our reference; -1 if o is NULL or append fails. */
static int push(PyObject *list, PyObject *o) {
    if (!o) return -1;
    int r = PyList_Append(list, o);
    Py_DECREF(o);
    return r;
}

static int push_ssize(PyObject *list, Py_ssize_t v) { return push(list, PyLong_FromSsize_t(v)); }

typedef struct {
    PyObject *render;  /* Python callable: (kind, raw bytes or float) -> str, for rare values */
} ctx_t;

/* AnyValue → its string form appended to vals. */
static int push_value(ctx_t *cx, buf_t v, PyObject *vals) {
    uint32_t f;
    int w, r;
    buf_t last = {NULL, NULL};
    int kind = 0; /* 0 none, else the oneof field number of the last value seen */
    uint64_t num = 0;
    buf_t s = {NULL, NULL};
    buf_t whole = v;
    while ((r = next_field(&v, &f, &w)) > 0) {
        if (f == 1 && w == 2) { if (read_len(&v, &s) < 0) return -1; kind = 1; }
        else if ((f == 2 || f == 3) && w == 0) { if (read_varint(&v, &num) < 0) return -1; kind = f; }
        else if (f == 4 && w == 1) { if (read_fixed64(&v, &num) < 0) return -1; kind = 4; }
        else if ((f == 5 || f == 6 || f == 7) && w == 2) { if (read_len(&v, &last) < 0) return -1; kind = f; }
        else if (skip(&v, w) < 0) return -1;
    }
    if (r < 0) return -1;
    switch (kind) {
    case 0: Py_INCREF(S_EMPTY); return push(vals, S_EMPTY);
    case 1: return push(vals, to_str(s));
    case 2: { PyObject *o = num ? S_TRUE : S_FALSE; Py_INCREF(o); return push(vals, o); }
    case 3: {
        char tmp[24];
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)(int64_t)num);
        return push(vals, PyUnicode_FromStringAndSize(tmp, n));
    }
    case 4: {
        double d;
        memcpy(&d, &num, 8);
        char *txt = PyOS_double_to_string(d, 'r', 0, 0, NULL);
        if (!txt) return -1;
        if (!strpbrk(txt, "eni")) { /* plain digits: repr's shortest form is the ES6 form too */
            PyObject *o = PyUnicode_FromString(txt);
            PyMem_Free(txt);
            return push(vals, o);
        }
        PyMem_Free(txt);
        PyObject *fd = PyFloat_FromDouble(d);
        if (!fd) return -1;
        PyObject *o = PyObject_CallFunction(cx->render, "iO", 4, fd);
        Py_DECREF(fd);
        return push(vals, o);
    }
    default: { /* array, kvlist, bytes: Python renders them from the AnyValue's bytes */
        PyObject *raw = PyBytes_FromStringAndSize((const char *)whole.p, whole.end - whole.p);
        if (!raw) return -1;
        PyObject *o = PyObject_CallFunction(cx->render, "iO", kind, raw);
        Py_DECREF(raw);
        return push(vals, o);
    }
    }
}

/* repeated KeyValue (one entry at a time): key and value strings appended. */
static int push_kv(ctx_t *cx, buf_t kvb, PyObject *keys, PyObject *vals) {
    uint32_t f;
    int w, r;
    buf_t key = {kvb.p, kvb.p}, val = {kvb.p, kvb.p};
    while ((r = next_field(&kvb, &f, &w)) > 0) {
        if (f == 1 && w == 2) { if (read_len(&kvb, &key) < 0) return -1; }
        else if (f == 2 && w == 2) { if (read_len(&kvb, &val) < 0) return -1; }
        else if (skip(&kvb, w) < 0) return -1;
    }
    if (r < 0) return -1;
    if (push(keys, to_str(key)) < 0) return -1;
    return push_value(cx, val, vals);
}

/* Index of the output lists, in the order decode.py's _Columns names them. */
enum {
    C_TS, C_DUR, C_TID, C_SID, C_PID, C_TSTATE, C_NAME, C_KIND, C_STATUS, C_SMSG,
    C_SKEYS, C_SVALS, C_SOFF,
    C_EVOFF, C_EVTS, C_EVNAME, C_EVKEYS, C_EVVALS, C_EVAOFF,
    C_LNOFF, C_LNTID, C_LNSID, C_LNSTATE, C_LNKEYS, C_LNVALS, C_LNAOFF,
    C_SCOPEIDX, C_RESIDX, C_SCOPENAME, C_SCOPEVER, C_SERVICE, C_RKEYS, C_RVALS, C_ROFF,
    C_KEYS, C_ERRORS, C_N
};

typedef struct {
    ctx_t cx;
    PyObject *c[C_N];
    Py_ssize_t rejected;
    Py_ssize_t max_errors;
} out_t;

static int reject(out_t *o, PyObject *name, const char *what) {
    o->rejected++;
    if (PyList_GET_SIZE(o->c[C_ERRORS]) >= o->max_errors) return 0;
    return push(o->c[C_ERRORS], PyUnicode_FromFormat("span %R: %s", name, what));
}

static int decode_span(out_t *o, buf_t sp, Py_ssize_t scope_i) {
    uint32_t f;
    int w, r;
    buf_t tid = {sp.p, sp.p}, sid = tid, pid = tid, tstate = tid, name = tid, status = {NULL, NULL};
    uint64_t kind = 0, start = 0, end = 0;
    /* First pass: scalars. Attributes, events and links are read on a second pass only for
       spans that pass validation, so a rejected span leaves no trace in the columns. */
    buf_t s = sp;
    while ((r = next_field(&s, &f, &w)) > 0) {
        buf_t sub;
        if (w == 2 && (f == 1 || f == 2 || f == 3 || f == 4 || f == 5 || f == 15 || f == 9 || f == 11 || f == 13)) {
            if (read_len(&s, &sub) < 0) return -1;
            if (f == 1) tid = sub;
            else if (f == 2) sid = sub;
            else if (f == 3) tstate = sub;
            else if (f == 4) pid = sub;
            else if (f == 5) name = sub;
            else if (f == 15) status = sub;
        } else if (f == 6 && w == 0) { if (read_varint(&s, &kind) < 0) return -1; }
        else if (f == 7 && w == 1) { if (read_fixed64(&s, &start) < 0) return -1; }
        else if (f == 8 && w == 1) { if (read_fixed64(&s, &end) < 0) return -1; }
        else if (skip(&s, w) < 0) return -1;
    }
    if (r < 0) return -1;
    PyObject *name_s = to_str(name);
    if (!name_s) return -1;
    static const uint8_t zero[16] = {0};
    const char *bad = NULL;
    char msg[96];
    Py_ssize_t tl = tid.end - tid.p, sl = sid.end - sid.p, pl = pid.end - pid.p;
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
    } else if (start > (uint64_t)INT64_MAX || end - start > (uint64_t)INT64_MAX) {
        bad = "start_time_unix_nano out of range";
    }
    if (bad) {
        int rr = reject(o, name_s, bad);
        Py_DECREF(name_s);
        return rr;
    }
    /* status */
    uint64_t code = 0;
    buf_t smsg = {tid.p, tid.p};
    if (status.p) {
        buf_t st = status;
        while ((r = next_field(&st, &f, &w)) > 0) {
            if (f == 2 && w == 2) { if (read_len(&st, &smsg) < 0) goto err; }
            else if (f == 3 && w == 0) { if (read_varint(&st, &code) < 0) goto err; }
            else if (skip(&st, w) < 0) goto err;
        }
        if (r < 0) goto err;
    }
    /* second pass: attributes, events, links */
    s = sp;
    while ((r = next_field(&s, &f, &w)) > 0) {
        buf_t sub;
        if (w != 2) { if (skip(&s, w) < 0) goto err; continue; }
        if (read_len(&s, &sub) < 0) goto err;
        if (f == 9) {
            if (push_kv(&o->cx, sub, o->c[C_SKEYS], o->c[C_SVALS]) < 0) goto err;
        } else if (f == 11) {
            uint64_t t = 0;
            buf_t en = {sub.p, sub.p}, e = sub, a;
            uint32_t ef;
            int ew, er;
            while ((er = next_field(&e, &ef, &ew)) > 0) {
                if (ef == 1 && ew == 1) { if (read_fixed64(&e, &t) < 0) goto err; }
                else if (ef == 2 && ew == 2) { if (read_len(&e, &en) < 0) goto err; }
                else if (ef == 3 && ew == 2) {
                    if (read_len(&e, &a) < 0 || push_kv(&o->cx, a, o->c[C_EVKEYS], o->c[C_EVVALS]) < 0) goto err;
                } else if (skip(&e, ew) < 0) goto err;
            }
            if (er < 0) goto err;
            if (t > (uint64_t)INT64_MAX) t = 0;
            if (push(o->c[C_EVTS], PyLong_FromUnsignedLongLong(t)) < 0) goto err;
            if (push(o->c[C_EVNAME], to_str(en)) < 0) goto err;
            if (push_ssize(o->c[C_EVAOFF], PyList_GET_SIZE(o->c[C_EVKEYS])) < 0) goto err;
        } else if (f == 13) {
            buf_t lt = {sub.p, sub.p}, ls = lt, lst = lt, l = sub, a;
            uint32_t lf;
            int lw, lr;
            while ((lr = next_field(&l, &lf, &lw)) > 0) {
                if (lw == 2 && lf >= 1 && lf <= 4) {
                    if (read_len(&l, &a) < 0) goto err;
                    if (lf == 1) lt = a;
                    else if (lf == 2) ls = a;
                    else if (lf == 3) lst = a;
                    else if (push_kv(&o->cx, a, o->c[C_LNKEYS], o->c[C_LNVALS]) < 0) goto err;
                } else if (skip(&l, lw) < 0) goto err;
            }
            if (lr < 0) goto err;
            if (push(o->c[C_LNTID], to_hex(lt)) < 0 || push(o->c[C_LNSID], to_hex(ls)) < 0 ||
                push(o->c[C_LNSTATE], to_str(lst)) < 0 ||
                push_ssize(o->c[C_LNAOFF], PyList_GET_SIZE(o->c[C_LNKEYS])) < 0)
                goto err;
        }
    }
    if (r < 0) goto err;
    if (push_ssize(o->c[C_SOFF], PyList_GET_SIZE(o->c[C_SKEYS])) < 0 ||
        push_ssize(o->c[C_EVOFF], PyList_GET_SIZE(o->c[C_EVTS])) < 0 ||
        push_ssize(o->c[C_LNOFF], PyList_GET_SIZE(o->c[C_LNTID])) < 0)
        goto err;
    if (push(o->c[C_TS], PyLong_FromUnsignedLongLong(start)) < 0) goto err;
    if (push(o->c[C_DUR], PyLong_FromUnsignedLongLong(end - start)) < 0) goto err;
    if (push(o->c[C_TID], to_hex(tid)) < 0 || push(o->c[C_SID], to_hex(sid)) < 0 ||
        push(o->c[C_PID], to_hex(pid)) < 0 || push(o->c[C_TSTATE], to_str(tstate)) < 0)
        goto err;
    if (PyList_Append(o->c[C_NAME], name_s) < 0) goto err;
    PyObject *k = S_KIND[kind < 6 ? kind : 0];
    if (PyList_Append(o->c[C_KIND], k) < 0) goto err;
    if (PyList_Append(o->c[C_STATUS], S_STATUS[code < 3 ? code : 0]) < 0) goto err;
    if (push(o->c[C_SMSG], to_str(smsg)) < 0) goto err;
    PyObject *key = PyBytes_FromStringAndSize(NULL, 24);
    if (!key) goto err;
    memcpy(PyBytes_AS_STRING(key), tid.p, 16);
    memcpy(PyBytes_AS_STRING(key) + 16, sid.p, 8);
    if (push(o->c[C_KEYS], key) < 0) goto err;
    if (push_ssize(o->c[C_SCOPEIDX], scope_i) < 0) goto err;
    Py_DECREF(name_s);
    return 0;
err:
    Py_DECREF(name_s);
    return -1;
}

static int decode_scope_spans(out_t *o, buf_t ss, Py_ssize_t res_i) {
    uint32_t f;
    int w, r;
    buf_t scope = {NULL, NULL}, sname = {ss.p, ss.p}, sver = sname;
    buf_t s = ss;
    while ((r = next_field(&s, &f, &w)) > 0) {
        if (f == 1 && w == 2) { if (read_len(&s, &scope) < 0) return -1; }
        else if (skip(&s, w) < 0) return -1;
    }
    if (r < 0) return -1;
    if (scope.p) {
        buf_t sc = scope;
        while ((r = next_field(&sc, &f, &w)) > 0) {
            if (f == 1 && w == 2) { if (read_len(&sc, &sname) < 0) return -1; }
            else if (f == 2 && w == 2) { if (read_len(&sc, &sver) < 0) return -1; }
            else if (skip(&sc, w) < 0) return -1;
        }
        if (r < 0) return -1;
    }
    Py_ssize_t scope_i = PyList_GET_SIZE(o->c[C_SCOPENAME]);
    if (push(o->c[C_SCOPENAME], to_str(sname)) < 0 || push(o->c[C_SCOPEVER], to_str(sver)) < 0 ||
        push_ssize(o->c[C_RESIDX], res_i) < 0)
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
    PyObject *service = S_EMPTY;
    Py_INCREF(service);
    Py_ssize_t first = PyList_GET_SIZE(o->c[C_RKEYS]);
    if (res.p) {
        buf_t rr = res;
        while ((r = next_field(&rr, &f, &w)) > 0) {
            buf_t kv;
            if (f == 1 && w == 2) {
                if (read_len(&rr, &kv) < 0 || push_kv(&o->cx, kv, o->c[C_RKEYS], o->c[C_RVALS]) < 0) goto err;
            } else if (skip(&rr, w) < 0) goto err;
        }
        if (r < 0) goto err;
    }
    /* service.name: the last one wins, as in the reference walker */
    for (Py_ssize_t i = first; i < PyList_GET_SIZE(o->c[C_RKEYS]); i++) {
        if (PyUnicode_CompareWithASCIIString(PyList_GET_ITEM(o->c[C_RKEYS], i), "service.name") == 0) {
            Py_DECREF(service);
            service = PyList_GET_ITEM(o->c[C_RVALS], i);
            Py_INCREF(service);
        }
    }
    Py_ssize_t res_i = PyList_GET_SIZE(o->c[C_SERVICE]);
    if (push(o->c[C_SERVICE], service) < 0) return -1;
    if (push_ssize(o->c[C_ROFF], PyList_GET_SIZE(o->c[C_RKEYS])) < 0) return -1;
    s = rs;
    while ((r = next_field(&s, &f, &w)) > 0) {
        buf_t ss;
        if (f == 2 && w == 2) {
            if (read_len(&s, &ss) < 0 || decode_scope_spans(o, ss, res_i) < 0) return -1;
        } else if (skip(&s, w) < 0) return -1;
    }
    return r;
err:
    Py_DECREF(service);
    return -1;
}

/* decode(body, render, max_errors) -> (list of C_N lists..., rejected) */
static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer view;
    out_t o;
    if (!PyArg_ParseTuple(args, "y*On", &view, &o.cx.render, &o.max_errors)) return NULL;
    o.rejected = 0;
    for (int i = 0; i < C_N; i++) o.c[i] = NULL;
    PyObject *result = NULL;
    for (int i = 0; i < C_N; i++)
        if (!(o.c[i] = PyList_New(0))) goto done;
    if (push_ssize(o.c[C_SOFF], 0) < 0 || push_ssize(o.c[C_EVOFF], 0) < 0 || push_ssize(o.c[C_EVAOFF], 0) < 0 ||
        push_ssize(o.c[C_LNOFF], 0) < 0 || push_ssize(o.c[C_LNAOFF], 0) < 0 || push_ssize(o.c[C_ROFF], 0) < 0)
        goto done;
    buf_t b = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    uint32_t f;
    int w, r;
    while ((r = next_field(&b, &f, &w)) > 0) {
        buf_t rs;
        if (f == 1 && w == 2) {
            if (read_len(&b, &rs) < 0 || decode_resource_spans(&o, rs) < 0) goto done;
        } else if (skip(&b, w) < 0) goto done;
    }
    if (r < 0) goto done;
    result = PyTuple_New(C_N + 1);
    if (!result) goto done;
    for (int i = 0; i < C_N; i++) {
        PyTuple_SET_ITEM(result, i, o.c[i]);
        o.c[i] = NULL;
    }
    PyTuple_SET_ITEM(result, C_N, PyLong_FromSsize_t(o.rejected));
done:
    for (int i = 0; i < C_N; i++) Py_XDECREF(o.c[i]);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *set_error(PyObject *self, PyObject *exc) {
    Py_XDECREF(DecodeError);
    Py_INCREF(exc);
    DecodeError = exc;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, "decode(body, render, max_errors) -> columns of an OTLP trace request"},
    {"set_error", set_error, METH_O, "set the exception class raised for undecodable requests"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp", NULL, -1, methods};

PyMODINIT_FUNC PyInit__otlp(void) {
    static const char *kinds[] = {"Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"};
    static const char *codes[] = {"Unset", "Ok", "Error"};
    for (int i = 0; i < 6; i++)
        if (!(S_KIND[i] = PyUnicode_InternFromString(kinds[i]))) return NULL;
    for (int i = 0; i < 3; i++)
        if (!(S_STATUS[i] = PyUnicode_InternFromString(codes[i]))) return NULL;
    if (!(S_TRUE = PyUnicode_InternFromString("true")) || !(S_FALSE = PyUnicode_InternFromString("false")) ||
        !(S_EMPTY = PyUnicode_InternFromString("")))
        return NULL;
    DecodeError = PyExc_ValueError;
    Py_INCREF(DecodeError);
    return PyModule_Create(&module);
}
