/*
 * smtp_proxy.engine._speedups: C versions of the rewriting engine's hottest loops. Optional:
 * every caller keeps its Python path and gets the same answer without this module
 * (smtp_proxy/engine/speedups.py imports it; CLICKRELAY_NO_EXTENSIONS=1 turns it off).
 *
 * scan(html, pos, end) -> list | None
 *   html_scan._scan, step for step, about ten times faster than the regular
 *   expressions it mirrors. html_scan._scan is the reference: every function of the
 *   scanner (in _speedups_scan.h, compiled once per string kind) names the regular
 *   expression or Python function whose behaviour it reproduces, and the tests compare
 *   the two on the corpus and on generated HTML. Where reproducing Python exactly would
 *   need Unicode rules (a case-insensitive keyword meeting U+017F, U+0130, U+0131 or
 *   U+212A, which `re` folds to ASCII letters), it gives up and returns None: the caller
 *   then runs the Python scanner. Link tags that need attribute-level work (opt-out
 *   attributes, an anchor whose first href has no value, any non-ASCII character in the
 *   tag) come back as "deferred" records for the Python code, so the C side only decides
 *   where tags, comments and raw text begin and end.
 *   Records (code, a, b, in_comment, tag_end):
 *     code 0/1/2: an <a>/<area>/VML link; html[a:b] is its href value (quotes and
 *                 surrounding ASCII whitespace excluded);
 *     code 3:     a link tag for the Python code: a is where its "<" is, b the end
 *                 bound the scan ran with there.
 *
 * qp_valid(body) -> bool
 *   qp._BAD_QP_RE finds nothing (one memchr walk instead of a regex search).
 *
 * qp_line_starts(body, lines) -> list | None
 *   Where given logical lines of a quoted-printable body start, so that re-encoding a
 *   changed part touches only its changed lines (qp._qp_reencode_mapped).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    PyObject *str;
    int kind;
    const void *data;
    Py_ssize_t len;
    int bail;  /* a Unicode case fold the C code does not reproduce: use Python */
} Text;

#define IS_WS(c) ((c) == '\t' || (c) == '\n' || (c) == '\f' || (c) == '\r' || (c) == ' ')
#define IS_E(c) (IS_WS(c) || (c) == '/' || (c) == '>')
#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))

enum { CODE_A = 0, CODE_AREA = 1, CODE_VML = 2, CODE_DEFER = 3 };

/* `c` equals the lower-case ASCII letter `x` ignoring ASCII case, as in a character
 * class like [sS]: no Unicode folding. */
static int
ascii_ci(Py_UCS4 c, char x)
{
    return c < 128 && IS_ALPHA(c) && (char)(c | 0x20) == x;
}

/* `c` matches `x` as `re` does under (?i:...). The non-ASCII characters that `re`
 * folds to an ASCII letter make the scan give up (t->bail). */
static int
re_ci(Text *t, Py_UCS4 c, char x)
{
    if (c < 128)
        return (IS_ALPHA(c) && (char)(c | 0x20) == x) || (!IS_ALPHA(c) && (char)c == x);
    if ((x == 's' && c == 0x17F) || (x == 'i' && (c == 0x130 || c == 0x131)) ||
        (x == 'k' && c == 0x212A))
        t->bail = 1;
    return 0;
}

typedef struct {
    int code;
    Py_ssize_t value_start, value_end, tag_end;
    int defer; /* may carry an opt-out attribute, or has non-ASCII characters */
} LinkMatch;

static int
append(PyObject *out, int code, Py_ssize_t a, Py_ssize_t b, int in_comment, Py_ssize_t tag_end)
{
    PyObject *rec = Py_BuildValue("(innin)", code, a, b, in_comment, tag_end);
    if (rec == NULL)
        return -1;
    int rc = PyList_Append(out, rec);
    Py_DECREF(rec);
    return rc;
}


#define CHAR_T Py_UCS1
#define CHAR_SIZE 1
#define SUFFIX 1
#include "_speedups_scan.h"
#undef CHAR_T
#undef CHAR_SIZE
#undef SUFFIX
#define CHAR_T Py_UCS2
#define CHAR_SIZE 2
#define SUFFIX 2
#include "_speedups_scan.h"
#undef CHAR_T
#undef CHAR_SIZE
#undef SUFFIX
#define CHAR_T Py_UCS4
#define CHAR_SIZE 4
#define SUFFIX 4
#include "_speedups_scan.h"
#undef CHAR_T
#undef CHAR_SIZE
#undef SUFFIX

static PyObject *
html_scan(PyObject *self, PyObject *args)
{
    PyObject *str;
    Py_ssize_t pos, end;
    if (!PyArg_ParseTuple(args, "Unn:scan", &str, &pos, &end))
        return NULL;
    Text t = {str, PyUnicode_KIND(str), PyUnicode_DATA(str), PyUnicode_GET_LENGTH(str), 0};
    if (pos < 0 || end > t.len || pos > end) {
        PyErr_SetString(PyExc_ValueError, "scan: bad bounds");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    int rc = t.kind == PyUnicode_1BYTE_KIND   ? scan_1(&t, pos, end, 0, out)
             : t.kind == PyUnicode_2BYTE_KIND ? scan_2(&t, pos, end, 0, out)
                                              : scan_4(&t, pos, end, 0, out);
    if (rc < 0) {
        Py_DECREF(out);
        return NULL;
    }
    if (t.bail) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

/* --- quoted-printable ----------------------------------------------------------- */

static int
is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

/* qp_valid(body) -> bool: qp._BAD_QP_RE finds nothing, i.e. every "=" is an
 * escape (two hex digits) or a soft line break ([ \t]* then \r?\n or the end). */
static PyObject *
qp_valid(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *s = view.buf, *e = s + view.len, *p = s;
    int ok = 1;
    while (p < e && (p = memchr(p, '=', (size_t)(e - p))) != NULL) {
        const unsigned char *q = p + 1;
        p = q;
        if (q + 1 < e && is_hex(q[0]) && is_hex(q[1]))
            continue;
        while (q < e && (*q == ' ' || *q == '\t'))
            q++;
        if (q == e || *q == '\n' || (*q == '\r' && q + 1 < e && q[1] == '\n'))
            continue;
        ok = 0;
        break;
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

/* Just after the hard line break that ends the logical line holding s[i] (soft breaks
 * are read as binascii.a2b_qp reads them: "=" then "\n", or "=" then "\r" and anything
 * up to the next "\n"); -1 if the body ends first, -2 if an escaped line feed (=0A)
 * comes first (decoded line numbers then no longer match encoded ones). */
static Py_ssize_t
qp_next_line(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
    for (;;) {
        const unsigned char *nlp = memchr(s + i, '\n', (size_t)(n - i));
        Py_ssize_t nl = nlp ? nlp - s : n;
        int soft = 0;
        Py_ssize_t j = i;
        while (j < nl) {
            const unsigned char *eq = memchr(s + j, '=', (size_t)(nl - j));
            if (eq == NULL)
                break;
            j = eq - s;
            if (j + 1 >= n)
                break; /* "=" ending the body: a soft break into nothing */
            unsigned char d = s[j + 1];
            if (d == '\n' || d == '\r') {
                soft = 1;
                break;
            }
            if (d == '=') { /* a2b_qp reads "==" as one "=" */
                j += 2;
                continue;
            }
            if (j + 2 < n && is_hex(d) && is_hex(s[j + 2])) {
                if (d == '0' && (s[j + 2] | 0x20) == 'a')
                    return -2;
                j += 3;
                continue;
            }
            j++;
        }
        if (nl >= n)
            return -1;
        i = nl + 1;
        if (!soft)
            return i;
    }
}

/* qp_line_starts(body, lines) -> list | None: where each of the logical lines numbered
 * `lines` (ascending; 0 is the first) starts in the quoted-printable `body`; None if the
 * body has fewer lines or an escaped line feed comes before the last one. */
static PyObject *
qp_line_starts(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *body, *lines;
    if (!PyArg_ParseTuple(args, "OO:qp_line_starts", &body, &lines))
        return NULL;
    PyObject *seq = PySequence_Fast(lines, "qp_line_starts: lines must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(count);
    Py_ssize_t line = 0, pos = 0;
    for (Py_ssize_t k = 0; out != NULL && k < count; k++) {
        Py_ssize_t want = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k));
        if (want == -1 && PyErr_Occurred()) {
            Py_CLEAR(out);
            break;
        }
        if (want < line) {
            PyErr_SetString(PyExc_ValueError, "qp_line_starts: lines must be ascending");
            Py_CLEAR(out);
            break;
        }
        while (line < want && pos >= 0) {
            pos = qp_next_line(view.buf, view.len, pos);
            line++;
        }
        if (pos < 0) {
            Py_DECREF(out);
            out = Py_None;
            Py_INCREF(out);
            break;
        }
        PyObject *value = PyLong_FromSsize_t(pos);
        if (value == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, k, value);
    }
    PyBuffer_Release(&view);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", html_scan, METH_VARARGS,
     "scan(html, pos, end) -> list of (code, a, b, in_comment, tag_end), or None"},
    {"qp_valid", qp_valid, METH_O, "qp_valid(body) -> bool: every '=' is an escape or a soft break"},
    {"qp_line_starts", qp_line_starts, METH_VARARGS,
     "qp_line_starts(body, lines) -> offsets of those logical lines, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smtp_proxy.engine._speedups",
    "C versions of hot loops of smtp_proxy.engine.html_scan and smtp_proxy.engine.qp.", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
