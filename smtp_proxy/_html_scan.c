/*
 * The link scanner of smtp_proxy/html_links.py in C: the same walk over the same
 * text, step for step, about ten times faster than the regular expressions it mirrors.
 *
 * html_links._scan is the reference. Every function here names the regular expression
 * or the Python function whose behaviour it reproduces, and the tests compare the two
 * scanners on the corpus and on generated HTML. Where reproducing Python exactly would
 * need Unicode rules (a case-insensitive keyword meeting U+017F, U+0130, U+0131 or
 * U+212A, which `re` folds to ASCII letters), the scan gives up and returns None: the
 * caller then runs the Python scanner. Tags that need attribute-level work (opt-out
 * attributes, an anchor whose first href has no value, any non-ASCII character in a
 * link tag) are not decided here either: they come back as "deferred" records that
 * the caller handles with the Python code, so the C side only has to be right about
 * where tags, comments and raw text begin and end.
 *
 * scan(html, pos, end) -> list | None
 *   records (code, a, b, in_comment, tag_end):
 *     code 0/1/2: an <a>/<area>/VML link; html[a:b] is its href value (quotes and
 *                 surrounding ASCII whitespace excluded);
 *     code 3:     a link tag for the Python code: a is where its "<" is, b the end
 *                 bound the scan ran with there.
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
#include "_html_scan_impl.h"
#undef CHAR_T
#undef CHAR_SIZE
#undef SUFFIX
#define CHAR_T Py_UCS2
#define CHAR_SIZE 2
#define SUFFIX 2
#include "_html_scan_impl.h"
#undef CHAR_T
#undef CHAR_SIZE
#undef SUFFIX
#define CHAR_T Py_UCS4
#define CHAR_SIZE 4
#define SUFFIX 4
#include "_html_scan_impl.h"
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

static PyMethodDef methods[] = {
    {"scan", html_scan, METH_VARARGS,
     "scan(html, pos, end) -> list of (code, a, b, in_comment, tag_end), or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smtp_proxy._html_scan",
    "C version of smtp_proxy.html_links._scan (see html_links).", -1, methods,
};

PyMODINIT_FUNC
PyInit__html_scan(void)
{
    return PyModule_Create(&module);
}
