/* The C half of demo_ext: an FNV-1a checksum and a description string. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *checksum(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = (const unsigned char *)buf.buf;
    for (Py_ssize_t i = 0; i < buf.len; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLongLong(h);
}

static PyObject *describe(PyObject *self, PyObject *unused) {
    return PyUnicode_FromFormat("demo_ext native module for Python %d.%d", PY_MAJOR_VERSION, PY_MINOR_VERSION);
}

static PyMethodDef methods[] = {
    {"checksum", checksum, METH_VARARGS, "FNV-1a 64-bit checksum of a bytes-like object."},
    {"describe", describe, METH_NOARGS, "What this module is."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "demo_ext._native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
