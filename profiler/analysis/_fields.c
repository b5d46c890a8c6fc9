/* One field of many msgspec structs into a numpy column, read straight from the structs' slots.
 *
 * The pure-Python way, np.fromiter(map(attrgetter(name), items), dtype), costs ~45 ns per
 * field per event, most of it reaching the struct; this reads the slot at its offset (found once
 * per struct type from the field's member descriptor) and writes the value into the column's
 * buffer. Each function takes only the plain case (floats for a float column, ints that fit
 * int64 for an int column) and answers False at the first value that is not, leaving the column
 * to the Python way, whose results and errors stay the reference; so the tables are the same
 * with or without this module (profiler.analysis.columns).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Where `name` lives in instances of `type`: its slot's offset, or -1 where it is no plain
 * object slot (then the attribute is read the usual way). */
static Py_ssize_t
slot_offset(PyTypeObject *type, PyObject *name)
{
    PyObject *descr = _PyType_Lookup(type, name); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX && member->type != T_OBJECT) {
        return -1;
    }
    return member->offset;
}

/* Reads one field of a list's items, keeping the offset for the last type seen. */
typedef struct {
    PyObject *name;
    PyTypeObject *type;
    Py_ssize_t offset;
} Field;

/* The field's value of `item`: a new reference, or NULL with an exception set. */
static PyObject *
field_get(Field *field, PyObject *item)
{
    PyTypeObject *type = Py_TYPE(item);
    if (type != field->type) {
        field->type = type;
        field->offset = slot_offset(type, field->name);
    }
    if (field->offset >= 0) {
        PyObject *value = *(PyObject **)((char *)item + field->offset);
        if (value != NULL) {
            Py_INCREF(value);
            return value;
        }
    }
    return PyObject_GetAttr(item, field->name);
}

/* items[i] as a new reference; NULL with an error where the list changed size since it had
 * `count` items (a lookup's __missing__ or a comparison runs Python code). */
static PyObject *
item_at(PyObject *items, Py_ssize_t i, Py_ssize_t count)
{
    if (PyList_GET_SIZE(items) != count) {
        PyErr_SetString(PyExc_RuntimeError, "the items changed while they were read");
        return NULL;
    }
    PyObject *item = PyList_GET_ITEM(items, i);
    Py_INCREF(item);
    return item;
}

/* The field's value of items[i]: a new reference, or NULL with an exception set. */
static PyObject *
item_field(Field *field, PyObject *items, Py_ssize_t i, Py_ssize_t count)
{
    PyObject *item = item_at(items, i, count);
    if (item == NULL) {
        return NULL;
    }
    PyObject *value = field_get(field, item);
    Py_DECREF(item);
    return value;
}

/* A writable, C-contiguous buffer of `count` items of `itemsize` bytes. */
static int
get_out(PyObject *out, Py_buffer *view, Py_ssize_t count, Py_ssize_t itemsize)
{
    if (PyObject_GetBuffer(out, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    if (view->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "out holds %zd bytes, %zd items of %zd bytes need %zd",
                     view->len, count, itemsize, count * itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int
parse_items(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *fname)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", fname, want, nargs);
        return -1;
    }
    if (!PyList_CheckExact(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s(): items must be a list", fname);
        return -1;
    }
    if (!PyUnicode_CheckExact(args[1])) {
        PyErr_Format(PyExc_TypeError, "%s(): name must be a str", fname);
        return -1;
    }
    return 0;
}

/* One number per item into out: a float column takes floats, an int column ints within int64;
 * True, or False at the first value that is neither (out is then partly written). */
static PyObject *
numbers(PyObject *const *args, Py_ssize_t nargs, int is_float, const char *fname)
{
    if (parse_items(args, nargs, 3, fname) < 0) {
        return NULL;
    }
    PyObject *items = args[0];
    Py_ssize_t count = PyList_GET_SIZE(items);
    Py_buffer view;
    if (get_out(args[2], &view, count, is_float ? sizeof(double) : sizeof(long long)) < 0) {
        return NULL;
    }
    Field field = {args[1], NULL, -1};
    PyObject *result = Py_True;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = item_field(&field, items, i, count);
        if (value == NULL) {
            result = NULL;
            break;
        }
        int plain = 0;
        if (is_float && PyFloat_CheckExact(value)) {
            ((double *)view.buf)[i] = PyFloat_AS_DOUBLE(value);
            plain = 1;
        }
        else if (!is_float && PyLong_CheckExact(value)) {
            int overflow;
            ((long long *)view.buf)[i] = PyLong_AsLongLongAndOverflow(value, &overflow);
            plain = !overflow;
        }
        Py_DECREF(value);
        if (!plain) {
            result = Py_False;
            break;
        }
    }
    PyBuffer_Release(&view);
    Py_XINCREF(result);
    return result;
}

/* floats(items, name, out): out[i] = items[i].<name> where each is a float. */
static PyObject *
floats(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return numbers(args, nargs, 1, "floats");
}

/* ints(items, name, out): out[i] = items[i].<name> where each is an int within int64. */
static PyObject *
ints(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return numbers(args, nargs, 0, "ints");
}

/* `value`'s bytes (msgspec.Raw, bytes, anything with a buffer), as a new bytes object. */
static PyObject *
as_bytes(PyObject *value)
{
    if (PyBytes_CheckExact(value)) {
        Py_INCREF(value);
        return value;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *text = PyBytes_FromStringAndSize(view.buf, view.len);
    PyBuffer_Release(&view);
    return text;
}

/* codes(items, name, index, out[, raw]): out[i] = index[items[i].<name>] (int32), a dict
 * whose __missing__, if any, numbers a value not seen yet: what dict.__getitem__ does. With
 * raw true, each value is looked up as bytes(value) (a raw JSON text). */
static PyObject *
codes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int raw = 0;
    if (nargs == 5) {
        raw = PyObject_IsTrue(args[4]);
        if (raw < 0) {
            return NULL;
        }
        nargs = 4;
    }
    if (parse_items(args, nargs, 4, "codes") < 0) {
        return NULL;
    }
    PyObject *items = args[0], *index = args[2];
    if (!PyDict_Check(index)) {
        PyErr_SetString(PyExc_TypeError, "codes(): index must be a dict");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(items);
    Py_buffer view;
    if (get_out(args[3], &view, count, sizeof(int)) < 0) {
        return NULL;
    }
    int *out = (int *)view.buf;
    Field field = {args[1], NULL, -1};
    PyObject *result = Py_True;
    for (Py_ssize_t i = 0; i < count && result != NULL; i++) {
        PyObject *value = item_field(&field, items, i, count);
        if (value != NULL && raw) {
            Py_SETREF(value, as_bytes(value));
        }
        if (value == NULL) {
            result = NULL;
            break;
        }
        PyObject *code = PyDict_GetItemWithError(index, value); /* borrowed */
        if (code != NULL) {
            Py_INCREF(code);
        }
        else if (!PyErr_Occurred()) {
            code = PyObject_GetItem(index, value); /* __missing__ */
        }
        Py_DECREF(value);
        if (code == NULL) {
            result = NULL;
            break;
        }
        long number = PyLong_AsLong(code);
        Py_DECREF(code);
        if (number == -1 && PyErr_Occurred()) {
            result = NULL;
        }
        else if (number < INT_MIN || number > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "codes(): a code past int32");
            result = NULL;
        }
        else {
            out[i] = (int)number;
        }
    }
    PyBuffer_Release(&view);
    Py_XINCREF(result);
    return result;
}

/* differs(items, names, defaults, out): out[i] = whether the tuple of items[i].<names[j]>
 * differs from `defaults`, compared as tuples compare: item by item, by identity first
 * (defaults are shared objects), then defaults[j] == value. */
static PyObject *
differs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyTuple_CheckExact(args[1])
        || !PyTuple_CheckExact(args[2])
        || PyTuple_GET_SIZE(args[1]) != PyTuple_GET_SIZE(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "differs(items: list, names: tuple, defaults: tuple, out) with as "
                        "many names as defaults");
        return NULL;
    }
    PyObject *items = args[0], *names = args[1], *defaults = args[2];
    Py_ssize_t count = PyList_GET_SIZE(items), nfields = PyTuple_GET_SIZE(names);
    if (nfields > 64) {
        PyErr_SetString(PyExc_ValueError, "differs(): at most 64 names");
        return NULL;
    }
    Field fields[64];
    for (Py_ssize_t j = 0; j < nfields; j++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(names, j))) {
            PyErr_SetString(PyExc_TypeError, "differs(): names must be str");
            return NULL;
        }
        fields[j] = (Field){PyTuple_GET_ITEM(names, j), NULL, -1};
    }
    Py_buffer view;
    if (get_out(args[3], &view, count, 1) < 0) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)view.buf;
    PyObject *result = Py_True;
    for (Py_ssize_t i = 0; i < count && result != NULL; i++) {
        PyObject *item = item_at(items, i, count);
        if (item == NULL) {
            result = NULL;
            break;
        }
        unsigned char any = 0;
        for (Py_ssize_t j = 0; j < nfields && !any && result != NULL; j++) {
            PyObject *value = field_get(&fields[j], item);
            if (value == NULL) {
                result = NULL;
                break;
            }
            int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(defaults, j), value, Py_EQ);
            Py_DECREF(value);
            if (eq < 0) {
                result = NULL;
            }
            any = eq == 0;
        }
        Py_DECREF(item);
        out[i] = any;
    }
    PyBuffer_Release(&view);
    Py_XINCREF(result);
    return result;
}

static PyMethodDef methods[] = {
    {"floats", (PyCFunction)(void (*)(void))floats, METH_FASTCALL,
     "floats(items, name, out) -> bool: each item's float field into out (float64); False "
     "at the first value that is not a float."},
    {"ints", (PyCFunction)(void (*)(void))ints, METH_FASTCALL,
     "ints(items, name, out) -> bool: each item's int field into out (int64); False at the "
     "first value that is not an int within int64."},
    {"codes", (PyCFunction)(void (*)(void))codes, METH_FASTCALL,
     "codes(items, name, index, out[, raw]) -> True: index[value] of each item's field into "
     "out (int32), as dict.__getitem__ (with __missing__) gives it; raw: index[bytes(value)]."},
    {"differs", (PyCFunction)(void (*)(void))differs, METH_FASTCALL,
     "differs(items, names, defaults, out) -> True: whether any of each item's fields "
     "differs from its default, into out (bool)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fields",
    "Struct fields into numpy columns, read from the structs' slots.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fields(void)
{
    return PyModule_Create(&module);
}
