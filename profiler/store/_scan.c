/* Scans of Kineto's exported text that a capture window's write makes, in C.
 *
 * engine_starts() is chrome_trace.backward_starts' loop: for each autograd engine event, its
 * "Sequence number" and "ts" read where they sit in the text. In Python each event cost ~1.3 us
 * of regex searches and int/float calls; here the search and the fields cost a few hundred ns.
 * It reads the fields exactly as backward_starts' regexes do (chrome_trace._SEQUENCE_NUMBER,
 * chrome_trace._TS), which stay the reference where this module was not built.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <string.h>

static const char SEQUENCE[] = "\"Sequence number\"";
static const char TS[] = "\"ts\"";

/* Python's bytes regex \s: space, \t, \n, \v, \f, \r. */
static int
is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* The first match of `key`\s*:\s*([chars]+) in [at, end), as the span of the group;
 * 0 where there is none. `dots` admits '.' in the group ([0-9.]+), else digits only. */
static int
field(const char *at, const char *end, const char *key, size_t key_len, int dots,
      const char **start, const char **stop)
{
    while (at < end) {
        const char *hit = memmem(at, (size_t)(end - at), key, key_len);
        if (hit == NULL) {
            return 0;
        }
        const char *p = hit + key_len;
        while (p < end && is_space(*p)) {
            p++;
        }
        if (p < end && *p == ':') {
            p++;
            while (p < end && is_space(*p)) {
                p++;
            }
            const char *first = p;
            while (p < end && ((*p >= '0' && *p <= '9') || (dots && *p == '.'))) {
                p++;
            }
            if (p > first) {
                *start = first;
                *stop = p;
                return 1;
            }
        }
        at = hit + 1; /* the regex tries again from the next position */
    }
    return 0;
}

/* The span's text as a Python int or float (what int()/float() make of it), or NULL. */
static PyObject *
number(const char *start, const char *stop, int is_float)
{
    PyObject *text = PyUnicode_DecodeASCII(start, stop - start, "strict");
    if (text == NULL) {
        return NULL;
    }
    PyObject *value = is_float ? PyFloat_FromString(text) : PyLong_FromUnicodeObject(text, 10);
    Py_DECREF(text);
    return value;
}

/* engine_starts(raw, needle, wanted) -> dict: for each copy of `needle` in `raw` (left to right,
 * not overlapping) up to the next '}', its sequence number where it is in `wanted` (a set or
 * frozenset of ints) -> the float of its "ts", the first one found for each number. */
static PyObject *
engine_starts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyAnySet_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "engine_starts(raw, needle: bytes, wanted: set)");
        return NULL;
    }
    Py_buffer text, needle;
    if (PyObject_GetBuffer(args[0], &text, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &needle, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&text);
        return NULL;
    }
    PyObject *wanted = args[2];
    PyObject *starts = PyDict_New();
    const char *at = text.buf, *limit = (const char *)text.buf + text.len;
    while (starts != NULL && needle.len > 0 && at < limit) {
        const char *hit = memmem(at, (size_t)(limit - at), needle.buf, (size_t)needle.len);
        if (hit == NULL) {
            break;
        }
        at = hit + needle.len;
        const char *end = memchr(hit, '}', (size_t)(limit - hit));
        if (end == NULL) {
            break;
        }
        const char *first, *stop;
        if (!field(hit, end, SEQUENCE, sizeof(SEQUENCE) - 1, 0, &first, &stop)) {
            continue;
        }
        PyObject *sequence = number(first, stop, 0);
        int keep = sequence == NULL ? -1 : PySet_Contains(wanted, sequence);
        if (keep > 0 && field(hit, end, TS, sizeof(TS) - 1, 1, &first, &stop)) {
            PyObject *ts = number(first, stop, 1);
            keep = ts == NULL ? -1 : (PyDict_SetDefault(starts, sequence, ts) == NULL ? -1 : 0);
            Py_XDECREF(ts);
        }
        Py_XDECREF(sequence);
        if (keep < 0) {
            Py_CLEAR(starts);
        }
    }
    PyBuffer_Release(&needle);
    PyBuffer_Release(&text);
    return starts;
}

static PyMethodDef methods[] = {
    {"engine_starts", (PyCFunction)(void (*)(void))engine_starts, METH_FASTCALL,
     "engine_starts(raw, needle, wanted) -> dict: sequence number -> ts of the first engine "
     "event of each wanted number (chrome_trace.backward_starts)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "Scans of Kineto's exported text, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    return PyModule_Create(&module);
}
