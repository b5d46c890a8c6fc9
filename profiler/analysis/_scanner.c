/* A piece of a trace's events array straight into columns, without a Python object per event.
 *
 * msgspec decodes a piece into one struct per event (and one per args object), which the column
 * builder then reads and drops: on a Kineto trace that is ~1.5 us an event, most of a cold load.
 * scan() reads the same text and writes each field the tables read into a column of its own:
 * numbers as float64 or int64, strings and raw JSON values as codes into per-piece lists of the
 * distinct ones (each made a Python object once). It takes only the plain case, the one where
 * msgspec's typed pass would give the same values: at anything else (a value of another type
 * than the field's, a string with an escape, a key given twice, JSON nested deeper than
 * MAX_DEPTH, text that is not JSON) it answers None and the piece is decoded by msgspec, whose
 * results and errors stay the reference (profiler.analysis.scanned).
 *
 * scan(text, fields) -> None | (count, columns, strings, raws, spans, args_seen)
 *   fields: a tuple of (key: bytes, kind: int, default: float | int, subfields: tuple | None);
 *     the event's keys, one of them (kind ARGS) an object with keys of its own (subfields,
 *     of the other kinds). Every field's column follows its parent's in the order given.
 *   columns: one bytearray per field (ARGS fields excepted): float64 (F64), int64 (I64, ID,
 *     ID_NULL) or int32 codes (STR into strings, RAW into raws; 0: the default, "" or b"").
 *   spans: int64 pairs, each event's first and last byte + 1 in text.
 *   args_seen: uint64 per event, a bit per subfield its ARGS object has (1 << its place).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { F64 = 0, I64 = 1, ID = 2, ID_NULL = 3, STR = 4, RAW = 5, ARGS = 6 };
#define MAX_FIELDS 64
#define MAX_DEPTH 64 /* deeper skipped values go to msgspec, which checks the guards */
#define MAX_KEY 64   /* the longest key a field may have, + 1 */

typedef struct {
    const char *key;
    Py_ssize_t key_len;
    int kind;
    double default_float;
    int64_t default_int;
    int column;   /* index into the columns (-1 for ARGS) */
    int first_sub, sub_count; /* ARGS: its subfields in the table */
    int group;                /* ARGS: the index of its keys (Scan.groups) */
    int next_same_len;        /* the next field of its object whose key is as long, or -1 */
    uint64_t word;            /* a key under 8 bytes as short_word reads it */
} Field;

/* An object's fields by the length of their keys: a key is compared with those alone. */
typedef struct {
    int first_of_len[MAX_KEY];
} Group;

/* Distinct strings (or raw values) by their bytes: an open-addressing table of codes. */
typedef struct {
    const char **ptr;
    Py_ssize_t *len;
    uint64_t *hash;
    int32_t *slots; /* code + 1; 0: empty */
    Py_ssize_t count, capacity, slot_count;
    PyObject *values; /* list of str or bytes, by code */
    int raw;          /* bytes (raw JSON) rather than str */
} Table;

typedef struct {
    const char *start, *end;
    Field fields[MAX_FIELDS];
    int field_count, top_count; /* top-level fields are the first top_count */
    Group groups[MAX_FIELDS];   /* 0: the event's keys; then one per ARGS field */
    int group_count;
    int column_count;
    char *data[MAX_FIELDS];
    int width[MAX_FIELDS];
    PyObject *buffers[MAX_FIELDS];
    PyObject *spans;
    PyObject *args_seen; /* uint64 per event: which fields of its args it has (ARGS's bits) */
    Py_ssize_t rows, capacity;
    Table strings, raws;
    /* Whose args the tables read, so whose args of other types must go to msgspec: complete
     * events ("X") and allocator events (instants, "i" or "I", named "[memory]"). */
    int ph_field, name_field;
    int32_t complete_code, instant_code, old_instant_code, memory_code;
} Scan;

/* Why scanning stopped: BAIL hands the piece to msgspec; ERROR has a Python exception set. */
#define OK 0
#define BAIL 1
#define ERROR 2

static const char WS[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

static inline const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && WS[(unsigned char)*p]) {
        p++;
    }
    return p;
}

/* Whether a[0:n] and b[0:n] are equal, eight bytes at a time. */
static inline int
same_bytes(const char *a, const char *b, Py_ssize_t n)
{
    uint64_t x, y;
    for (; n >= 8; n -= 8, a += 8, b += 8) {
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) return 0;
    }
    for (; n > 0; n--) {
        if (*a++ != *b++) return 0;
    }
    return 1;
}

/* The n < 8 bytes at p as one little-endian number (so equal bytes are equal numbers): read as
 * one word and masked where 8 bytes may be read there (before limit), else byte by byte. */
static inline uint64_t
short_word(const char *p, Py_ssize_t n, const char *limit)
{
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (limit != NULL && limit - p >= 8) {
        memcpy(&w, p, 8);
        return n ? w & (~0ULL >> (64 - 8 * n)) : 0;
    }
#endif
    for (Py_ssize_t i = 0; i < n; i++) w |= (uint64_t)(unsigned char)p[i] << (8 * i);
    return w;
}

/* A hash of p[0:n]; short_word's value where n <= 8 (then equal hashes are equal bytes). */
static inline uint64_t
hash_bytes(const char *p, Py_ssize_t n, const char *limit)
{
    if (n < 8) return short_word(p, n, limit);
    const uint64_t k = 0x9E3779B97F4A7C15ULL;
    uint64_t h = (uint64_t)n * k, w;
    for (; n >= 8; n -= 8, p += 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
    }
    h = (h ^ short_word(p, n, limit)) * k;
    return h ^ (h >> 32);
}

static inline uint64_t
slot_of(uint64_t h)
{
    return (h * 0x9E3779B97F4A7C15ULL) >> 17; /* short strings' hashes are their bytes: mix */
}

static int
table_init(Table *t, int raw)
{
    t->capacity = 64;
    t->slot_count = 128;
    t->count = 0;
    t->raw = raw;
    t->ptr = PyMem_Malloc(t->capacity * sizeof(char *));
    t->len = PyMem_Malloc(t->capacity * sizeof(Py_ssize_t));
    t->hash = PyMem_Malloc(t->capacity * sizeof(uint64_t));
    t->slots = PyMem_Calloc(t->slot_count, sizeof(int32_t));
    t->values = PyList_New(0);
    if (!t->ptr || !t->len || !t->hash || !t->slots || !t->values) {
        PyErr_NoMemory();
        return ERROR;
    }
    return OK;
}

static void
table_free(Table *t)
{
    PyMem_Free(t->ptr);
    PyMem_Free(t->len);
    PyMem_Free(t->hash);
    PyMem_Free(t->slots);
    Py_XDECREF(t->values);
}

static int
table_rehash(Table *t)
{
    Py_ssize_t slot_count = t->slot_count * 2;
    int32_t *slots = PyMem_Calloc(slot_count, sizeof(int32_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return ERROR;
    }
    for (Py_ssize_t code = 0; code < t->count; code++) {
        Py_ssize_t at = (Py_ssize_t)(slot_of(t->hash[code]) & (uint64_t)(slot_count - 1));
        while (slots[at]) {
            at = (at + 1) & (slot_count - 1);
        }
        slots[at] = (int32_t)(code + 1);
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->slot_count = slot_count;
    return OK;
}

/* The code of the value whose bytes are p[0:n] (for a str table, valid UTF-8 without escapes;
 * text up to limit may be read), numbering it next when new: -1 with an exception set on
 * failure, -2 where a str is not UTF-8 (the caller's BAIL). */
static Py_ssize_t
table_code(Table *t, const char *p, Py_ssize_t n, const char *limit)
{
    uint64_t h = hash_bytes(p, n, limit);
    Py_ssize_t at = (Py_ssize_t)(slot_of(h) & (uint64_t)(t->slot_count - 1));
    for (;;) {
        int32_t slot = t->slots[at];
        if (slot == 0) {
            break;
        }
        Py_ssize_t code = slot - 1;
        if (t->hash[code] == h && t->len[code] == n && (n < 8 || same_bytes(t->ptr[code], p, n))) {
            return code;
        }
        at = (at + 1) & (t->slot_count - 1);
    }
    if (t->count >= INT32_MAX - 1) {
        PyErr_SetString(PyExc_OverflowError, "too many distinct strings in a piece");
        return -1;
    }
    PyObject *value = t->raw ? PyBytes_FromStringAndSize(p, n) : PyUnicode_DecodeUTF8(p, n, NULL);
    if (value == NULL) {
        if (!t->raw && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return -2;
        }
        return -1;
    }
    int failed = PyList_Append(t->values, value);
    Py_DECREF(value);
    if (failed) {
        return -1;
    }
    if (t->count == t->capacity) {
        Py_ssize_t capacity = t->capacity * 2;
        const char **ptr = PyMem_Realloc(t->ptr, capacity * sizeof(char *));
        if (ptr) t->ptr = ptr;
        Py_ssize_t *len = PyMem_Realloc(t->len, capacity * sizeof(Py_ssize_t));
        if (len) t->len = len;
        uint64_t *hash = PyMem_Realloc(t->hash, capacity * sizeof(uint64_t));
        if (hash) t->hash = hash;
        if (!ptr || !len || !hash) {
            PyErr_NoMemory();
            return -1;
        }
        t->capacity = capacity;
    }
    Py_ssize_t code = t->count++;
    t->ptr[code] = p;
    t->len[code] = n;
    t->hash[code] = h;
    t->slots[at] = (int32_t)(code + 1);
    if (t->count * 2 > t->slot_count && table_rehash(t) != OK) {
        return -1;
    }
    return code;
}

/* The length of the valid UTF-8 sequence at p (its lead byte >= 0x80), or 0 (Unicode's table
 * 3-7: no overlong forms, no surrogates, nothing past U+10FFFF). */
static Py_ssize_t
utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    Py_ssize_t n;
    unsigned char low = 0x80, high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    }
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) low = 0xA0;
        if (c == 0xED) high = 0x9F;
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) low = 0x90;
        if (c == 0xF4) high = 0x8F;
    }
    else {
        return 0;
    }
    if (end - p < n || p[1] < low || p[1] > high) {
        return 0;
    }
    for (Py_ssize_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF) {
            return 0;
        }
    }
    return n;
}

/* Bytes a string's fast loop stops at: a quote, a backslash, a control, any of UTF-8's. */
static char SPECIAL[256];

static void
init_special(void)
{
    for (int c = 0; c < 256; c++) SPECIAL[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
}

static inline int
hex_digit(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static inline int
hex_value(char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* A string from just after its opening quote: *p is left after the closing quote. *escaped
 * says whether it holds an escape. BAIL where it is not valid JSON text, or has a \u escape
 * of a surrogate (whose handling msgspec decides). */
static int
scan_string(const char **p, const char *end, int *escaped)
{
    const unsigned char *s = (const unsigned char *)*p;
    const unsigned char *e = (const unsigned char *)end;
    *escaped = 0;
    while (s < e) {
        while (e - s >= 4) { /* plain bytes, four at a time */
            if (SPECIAL[s[0]]) break;
            if (SPECIAL[s[1]]) { s += 1; break; }
            if (SPECIAL[s[2]]) { s += 2; break; }
            if (SPECIAL[s[3]]) { s += 3; break; }
            s += 4;
        }
        while (s < e && !SPECIAL[*s]) s++;
        if (s >= e) {
            break;
        }
        unsigned char c = *s;
        if (c == '"') {
            *p = (const char *)(s + 1);
            return OK;
        }
        if (c == '\\') {
            *escaped = 1;
            if (e - s < 2) {
                return BAIL;
            }
            char x = (char)s[1];
            if (x == 'u') {
                if (e - s < 6 || !hex_digit(s[2]) || !hex_digit(s[3]) || !hex_digit(s[4]) ||
                    !hex_digit(s[5])) {
                    return BAIL;
                }
                int unit = (hex_value(s[2]) << 12) | (hex_value(s[3]) << 8) |
                           (hex_value(s[4]) << 4) | hex_value(s[5]);
                if (unit >= 0xD800 && unit <= 0xDFFF) {
                    return BAIL;
                }
                s += 6;
            }
            else if (x == '"' || x == '\\' || x == '/' || x == 'b' || x == 'f' || x == 'n' ||
                     x == 'r' || x == 't') {
                s += 2;
            }
            else {
                return BAIL;
            }
        }
        else if (c < 0x20) {
            return BAIL;
        }
        else if (c >= 0x80) {
            Py_ssize_t n = utf8_sequence(s, e);
            if (n == 0) {
                return BAIL;
            }
            s += n;
        }
        else {
            s++;
        }
    }
    return BAIL; /* no closing quote */
}

/* A JSON number at *p: its end, and whether it is an integer literal. NULL if not a number. */
static const char *
number_end(const char *p, const char *end, int *integer)
{
    const char *s = p;
    *integer = 1;
    if (s < end && *s == '-') s++;
    if (s >= end) return NULL;
    if (*s == '0') {
        s++;
    }
    else if (*s >= '1' && *s <= '9') {
        while (s < end && *s >= '0' && *s <= '9') s++;
    }
    else {
        return NULL;
    }
    if (s < end && *s == '.') {
        *integer = 0;
        s++;
        const char *digits = s;
        while (s < end && *s >= '0' && *s <= '9') s++;
        if (s == digits) return NULL;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        *integer = 0;
        s++;
        if (s < end && (*s == '+' || *s == '-')) s++;
        const char *digits = s;
        while (s < end && *s >= '0' && *s <= '9') s++;
        if (s == digits) return NULL;
    }
    return s;
}

/* An integer literal p[0:n] as int64: OK, or BAIL past int64. */
static int
parse_int(const char *p, const char *end, int64_t *out)
{
    int negative = *p == '-';
    const char *s = p + negative;
    uint64_t value = 0;
    for (; s < end; s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            return BAIL;
        }
        value = value * 10 + digit;
    }
    if (negative) {
        if (value > (uint64_t)INT64_MAX + 1) return BAIL;
        *out = value == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)value;
    }
    else {
        if (value > (uint64_t)INT64_MAX) return BAIL;
        *out = (int64_t)value;
    }
    return OK;
}

static const double POWERS[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static const uint64_t POWERS_INT[] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
    100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
    10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL};

static inline int
bit_length(__uint128_t x)
{
    uint64_t high = (uint64_t)(x >> 64);
    return high ? 128 - __builtin_clzll(high) : 64 - __builtin_clzll((uint64_t)x);
}

/* mantissa / 10^k (mantissa > 0, k <= 19) correctly rounded to a double, in integers: Kineto's
 * times (16-19 digits, 3 after the point) are past the exact-doubles path. The numerator is
 * shifted to 127 bits, so the quotient has 63 or more: its top 53 bits, rounded half to even
 * on the bits below and the division's remainder, are the double's. */
static double
exact_quotient(uint64_t mantissa, int k)
{
    int shift = 127 - bit_length(mantissa);
    __uint128_t numerator = (__uint128_t)mantissa << shift;
    __uint128_t quotient = numerator / POWERS_INT[k];
    int inexact = numerator % POWERS_INT[k] != 0;
    int drop = bit_length(quotient) - 53; /* >= 10 */
    __uint128_t kept = quotient >> drop;
    __uint128_t rest = quotient & ((((__uint128_t)1) << drop) - 1);
    __uint128_t half = ((__uint128_t)1) << (drop - 1);
    if (rest > half || (rest == half && (inexact || (kept & 1)))) {
        kept++;
        if (kept == ((__uint128_t)1) << 53) {
            kept >>= 1;
            drop++;
        }
    }
    return ldexp((double)(uint64_t)kept, drop - shift);
}

/* A number p[0:n] as a float, correctly rounded: exact in doubles where the digits and the
 * power of ten both are (Clinger's fast path), in integers where the digits fit 64 bits and
 * there is no exponent, else by Python's own conversion. BAIL where it
 * overflows. An integer literal is first an int, as msgspec reads it (so -0 is 0.0). */
static int
parse_float(const char *p, const char *end, int integer, double *out)
{
    if (integer) {
        int64_t value;
        if (parse_int(p, end, &value) == OK) {
            *out = (double)value;
            return OK;
        }
    }
    const char *s = p;
    int negative = *s == '-';
    s += negative;
    uint64_t mantissa = 0;
    int digits = 0, exponent = 0;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        if (digits || *s != '0') digits++;
        mantissa = mantissa * 10 + (uint64_t)(*s - '0');
    }
    if (s < end && *s == '.') {
        for (s++; s < end && *s >= '0' && *s <= '9'; s++) {
            if (digits || *s != '0') digits++;
            mantissa = mantissa * 10 + (uint64_t)(*s - '0');
            exponent--;
        }
    }
    if (digits <= 15 && s == end && exponent >= -22) {
        double value = (double)mantissa;
        value = exponent < 0 ? value / POWERS[-exponent] : value;
        *out = negative ? -value : value;
        return OK;
    }
    if (digits <= 19 && s == end && exponent >= -19 && mantissa != 0) {
        double value = exact_quotient(mantissa, -exponent);
        *out = negative ? -value : value;
        return OK;
    }
    char *stop = NULL;
    double value = PyOS_string_to_double(p, &stop, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return BAIL;
    }
    if (stop != end || isinf(value)) {
        return BAIL;
    }
    *out = value;
    return OK;
}

/* After a member of an array or object: a comma (MORE: *p is left at the next member) or the
 * closing bracket (DONE: *p is left after it); BAIL at anything else. */
#define MORE 3
#define DONE 4
static inline int
after_member(const char **p, const char *end, char close)
{
    const char *s = skip_ws(*p, end);
    if (s < end && *s == ',') {
        *p = skip_ws(s + 1, end);
        return MORE;
    }
    if (s < end && *s == close) {
        *p = s + 1;
        return DONE;
    }
    return BAIL;
}

/* An object's key at *p and the colon after it: *p is left at the value. BAIL where it is not
 * a key; *escaped says whether it holds an escape. */
static inline int
read_key(const char **p, const char *end, const char **key, Py_ssize_t *key_len, int *escaped)
{
    const char *s = *p;
    if (s >= end || *s != '"') return BAIL;
    *key = ++s;
    if (scan_string(&s, end, escaped) != OK) return BAIL;
    *key_len = s - 1 - *key;
    s = skip_ws(s, end);
    if (s >= end || *s != ':') return BAIL;
    *p = skip_ws(s + 1, end);
    return OK;
}

static int skip_value(const char **p, const char *end, int depth);

/* An array or object from just after its opening bracket. */
static int
skip_container(const char **p, const char *end, int depth, char close)
{
    if (depth > MAX_DEPTH) {
        return BAIL;
    }
    const char *s = skip_ws(*p, end);
    if (s < end && *s == close) {
        *p = s + 1;
        return OK;
    }
    for (;;) {
        if (close == '}') {
            const char *key;
            Py_ssize_t key_len;
            int escaped;
            if (read_key(&s, end, &key, &key_len, &escaped) != OK) return BAIL;
        }
        int status = skip_value(&s, end, depth + 1);
        if (status != OK) return status;
        status = after_member(&s, end, close);
        if (status != MORE) {
            *p = s;
            return status == DONE ? OK : BAIL;
        }
    }
}

/* Any JSON value at *p (no whitespace before it): *p is left after it. */
static int
skip_value(const char **p, const char *end, int depth)
{
    const char *s = *p;
    if (s >= end) return BAIL;
    int escaped, integer;
    switch (*s) {
    case '"':
        *p = s + 1;
        return scan_string(p, end, &escaped);
    case '{':
        *p = s + 1;
        return skip_container(p, end, depth, '}');
    case '[':
        *p = s + 1;
        return skip_container(p, end, depth, ']');
    case 't':
        if (end - s >= 4 && memcmp(s, "true", 4) == 0) { *p = s + 4; return OK; }
        return BAIL;
    case 'f':
        if (end - s >= 5 && memcmp(s, "false", 5) == 0) { *p = s + 5; return OK; }
        return BAIL;
    case 'n':
        if (end - s >= 4 && memcmp(s, "null", 4) == 0) { *p = s + 4; return OK; }
        return BAIL;
    default:
        s = number_end(s, end, &integer);
        if (s == NULL) return BAIL;
        *p = s;
        return OK;
    }
}

/* pid/tid as profiler.analysis.columns.int_id reads a label: the digits after its last space,
 * if they are -?[0-9]{1,19} and fit int64, else -1. */
static int64_t
label_id(const char *p, Py_ssize_t n)
{
    const char *tail = p;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        if (p[i] == ' ') {
            tail = p + i + 1;
            break;
        }
    }
    const char *end = p + n, *digits = tail + (tail < end && *tail == '-');
    if (end - digits < 1 || end - digits > 19) return -1;
    for (const char *s = digits; s < end; s++) {
        if (*s < '0' || *s > '9') return -1;
    }
    int64_t value;
    return parse_int(tail, end, &value) == OK ? value : -1;
}

/* Rows [from, to) of every column hold their field's default, and of args_seen no key: an
 * event then writes only the fields it has. */
static void
put_defaults(Scan *scan, Py_ssize_t from, Py_ssize_t to)
{
    for (int f = 0; f < scan->field_count; f++) {
        Field *field = &scan->fields[f];
        if (field->column < 0) continue;
        char *at = scan->data[field->column];
        Py_ssize_t row;
        switch (field->kind) {
        case F64:
            for (row = from; row < to; row++) ((double *)at)[row] = field->default_float;
            break;
        case STR: case RAW:
            memset(at + from * 4, 0, (size_t)(to - from) * 4);
            break;
        default:
            for (row = from; row < to; row++) ((int64_t *)at)[row] = field->default_int;
            break;
        }
    }
    memset(PyByteArray_AS_STRING(scan->args_seen) + from * sizeof(uint64_t), 0,
           (size_t)(to - from) * sizeof(uint64_t));
}

static int
grow(Scan *scan)
{
    Py_ssize_t capacity = scan->capacity * 2;
    for (int c = 0; c < scan->column_count; c++) {
        if (PyByteArray_Resize(scan->buffers[c], capacity * scan->width[c]) < 0) return ERROR;
        scan->data[c] = PyByteArray_AS_STRING(scan->buffers[c]);
    }
    if (PyByteArray_Resize(scan->spans, capacity * 2 * sizeof(int64_t)) < 0) return ERROR;
    if (PyByteArray_Resize(scan->args_seen, capacity * sizeof(uint64_t)) < 0) return ERROR;
    put_defaults(scan, scan->capacity, capacity);
    scan->capacity = capacity;
    return OK;
}

/* One field's value at *p into its column (row `row`). A value of another type than the field's
 * is skipped and *mismatch set (whether that matters depends on the event's phase: the caller
 * decides). */
static int
scan_field(Scan *scan, Field *field, const char **p, Py_ssize_t row, int *mismatch)
{
    const char *s = *p, *end = scan->end;
    char *column = field->column >= 0 ? scan->data[field->column] : NULL;
    int integer, escaped;
    if (s >= end) return BAIL;
    switch (field->kind) {
    case F64:
    case I64: {
        const char *stop = number_end(s, end, &integer);
        if (stop == NULL) break;
        if (field->kind == F64) {
            if (parse_float(s, stop, integer, &((double *)column)[row]) != OK) return BAIL;
        }
        else if (!integer || parse_int(s, stop, &((int64_t *)column)[row]) != OK) {
            *mismatch = 1; /* a float, or an int past int64, for an int field */
        }
        *p = stop;
        return OK;
    }
    case ID:
    case ID_NULL: {
        if (*s == '"') {
            const char *start = s + 1;
            s = start;
            if (scan_string(&s, end, &escaped) != OK) return BAIL;
            if (escaped) return BAIL;
            ((int64_t *)column)[row] = label_id(start, s - 1 - start);
            *p = s;
            return OK;
        }
        if (*s == 'n' && field->kind == ID_NULL) {
            if (end - s < 4 || memcmp(s, "null", 4) != 0) return BAIL;
            ((int64_t *)column)[row] = -1;
            *p = s + 4;
            return OK;
        }
        const char *stop = number_end(s, end, &integer);
        if (stop == NULL) break;
        if (!integer || parse_int(s, stop, &((int64_t *)column)[row]) != OK) return BAIL;
        *p = stop;
        return OK;
    }
    case STR: {
        if (*s != '"') break;
        const char *start = s + 1;
        s = start;
        if (scan_string(&s, end, &escaped) != OK || escaped) return BAIL;
        Py_ssize_t code = table_code(&scan->strings, start, s - 1 - start, end);
        if (code < 0) return code == -2 ? BAIL : ERROR;
        ((int32_t *)column)[row] = (int32_t)code;
        *p = s;
        return OK;
    }
    case RAW: {
        const char *start = s;
        int status = skip_value(&s, end, 1);
        if (status != OK) return status;
        Py_ssize_t code = table_code(&scan->raws, start, s - start, end);
        if (code < 0) return ERROR;
        ((int32_t *)column)[row] = (int32_t)code;
        *p = s;
        return OK;
    }
    }
    /* not the field's type: skip it, if it is JSON at all */
    int status = skip_value(p, end, 1);
    if (status == OK) *mismatch = 1;
    return status;
}

/* An object's keys from just after its '{', its fields those of group from fields[first] on;
 * *keys_seen gets a bit per field it has (1 << its place in the group). */
static int
scan_object(Scan *scan, const Group *group, int first, const char **p, Py_ssize_t row,
            int *mismatch, int depth, uint64_t *keys_seen)
{
    const char *s = skip_ws(*p, scan->end), *end = scan->end;
    uint64_t seen = 0;
    *keys_seen = 0;
    if (s < end && *s == '}') {
        *p = s + 1;
        return OK;
    }
    for (;;) {
        const char *key;
        Py_ssize_t key_len;
        int escaped;
        if (read_key(&s, end, &key, &key_len, &escaped) != OK || escaped) return BAIL;
        int found = -1;
        if (key_len < MAX_KEY) {
            for (int f = group->first_of_len[key_len]; f >= 0; f = scan->fields[f].next_same_len) {
                Field *field = &scan->fields[f];
                if (key_len < 8 ? short_word(key, key_len, end) == field->word
                                : same_bytes(field->key, key, key_len)) {
                    found = f;
                    break;
                }
            }
        }
        int status;
        if (found < 0) {
            status = skip_value(&s, end, depth + 1);
        }
        else {
            uint64_t bit = 1ULL << (found - first);
            if (seen & bit) return BAIL; /* a key given twice */
            seen |= bit;
            Field *field = &scan->fields[found];
            if (field->kind == ARGS) {
                if (*s == '{') {
                    s++;
                    int bad = 0;
                    uint64_t *args_seen = (uint64_t *)PyByteArray_AS_STRING(scan->args_seen);
                    status = scan_object(scan, &scan->groups[field->group], field->first_sub,
                                         &s, row, &bad, depth + 1, &args_seen[row]);
                    if (bad) *mismatch = 1;
                }
                else {
                    status = skip_value(&s, end, depth + 1);
                    *mismatch = 1;
                }
            }
            else {
                int bad = 0;
                status = scan_field(scan, field, &s, row, &bad);
                if (bad) {
                    if (depth == 0) return BAIL; /* the envelope's types are always checked */
                    *mismatch = 1;
                }
            }
        }
        if (status != OK) return status;
        status = after_member(&s, end, '}');
        if (status != MORE) {
            *p = s;
            *keys_seen = seen;
            return status == DONE ? OK : BAIL;
        }
    }
}

static int
scan_events(Scan *scan)
{
    const char *s = skip_ws(scan->start, scan->end), *end = scan->end;
    if (s >= end || *s != '[') return BAIL;
    s = skip_ws(s + 1, end);
    if (s < end && *s == ']') {
        s = skip_ws(s + 1, end);
        return s == end ? OK : BAIL;
    }
    for (;;) {
        if (s >= end || *s != '{') return BAIL; /* an event that is not an object */
        if (scan->rows == scan->capacity && grow(scan) != OK) return ERROR;
        Py_ssize_t row = scan->rows;
        const char *first = s;
        s++;
        int mismatch = 0;
        uint64_t keys_seen;
        int status = scan_object(scan, &scan->groups[0], 0, &s, row, &mismatch, 0, &keys_seen);
        if (status != OK) return status;
        if (mismatch) {
            /* args of other types than EventArgs': the tables read them on complete events */
            int32_t ph = ((int32_t *)scan->data[scan->fields[scan->ph_field].column])[row];
            int32_t name = ((int32_t *)scan->data[scan->fields[scan->name_field].column])[row];
            if (ph == scan->complete_code) return BAIL;
            if ((ph == scan->instant_code || ph == scan->old_instant_code) &&
                name == scan->memory_code) {
                return BAIL;
            }
        }
        int64_t *span = (int64_t *)PyByteArray_AS_STRING(scan->spans) + 2 * row;
        span[0] = first - scan->start;
        span[1] = s - scan->start;
        scan->rows++;
        status = after_member(&s, end, ']');
        if (status != MORE) {
            return status == DONE && skip_ws(s, end) == end ? OK : BAIL;
        }
    }
}

/* The next group: fields[first:first + count] by the length of their keys. */
static int
index_keys(Scan *scan, int first, int count)
{
    Group *group = &scan->groups[scan->group_count++];
    for (int n = 0; n < MAX_KEY; n++) group->first_of_len[n] = -1;
    for (int f = first + count - 1; f >= first; f--) {
        Field *field = &scan->fields[f];
        if (field->key_len >= MAX_KEY) {
            PyErr_SetString(PyExc_ValueError, "a field's key is too long");
            return ERROR;
        }
        field->word = field->key_len < 8 ? short_word(field->key, field->key_len, NULL) : 0;
        field->next_same_len = group->first_of_len[field->key_len];
        group->first_of_len[field->key_len] = f;
    }
    return OK;
}

/* One field from its spec, (key, kind, default, subfields), of a kind up to last_kind; its
 * subfields (an ARGS field's) go to *subfields where it is given. */
static int
read_field(Field *field, PyObject *item, int last_kind, PyObject **subfields)
{
    PyObject *key, *fallback, *nested;
    if (!PyArg_ParseTuple(item, "SiOO", &key, &field->kind, &fallback, &nested)) {
        return ERROR;
    }
    field->key = PyBytes_AS_STRING(key);
    field->key_len = PyBytes_GET_SIZE(key);
    if (field->key_len == 0 || field->kind < F64 || field->kind > last_kind) {
        PyErr_SetString(PyExc_ValueError, "a field needs a key and a kind it may have");
        return ERROR;
    }
    if (subfields != NULL) *subfields = nested;
    if (field->kind == ARGS) field->column = -1;
    else if (field->kind == F64) field->default_float = PyFloat_AsDouble(fallback);
    else if (field->kind != STR && field->kind != RAW) {
        field->default_int = PyLong_AsLongLong(fallback);
    }
    return PyErr_Occurred() ? ERROR : OK;
}

/* The fields' table from Python's spec; a field of kind ARGS has its subfields right after the
 * top-level ones. */
static int
read_fields(Scan *scan, PyObject *spec)
{
    if (!PyTuple_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "fields must be a tuple");
        return ERROR;
    }
    Py_ssize_t top = PyTuple_GET_SIZE(spec);
    if (top > MAX_FIELDS) goto too_many;
    scan->top_count = (int)top;
    scan->field_count = (int)top;
    scan->ph_field = scan->name_field = -1;
    for (Py_ssize_t i = 0; i < top; i++) {
        Field *field = &scan->fields[i];
        PyObject *subfields;
        if (read_field(field, PyTuple_GET_ITEM(spec, i), ARGS, &subfields) != OK) return ERROR;
        if (field->key_len == 2 && memcmp(field->key, "ph", 2) == 0) scan->ph_field = (int)i;
        if (field->key_len == 4 && memcmp(field->key, "name", 4) == 0) scan->name_field = (int)i;
        if (field->kind != ARGS) continue;
        if (scan->field_count > scan->top_count) {
            PyErr_SetString(PyExc_ValueError, "one ARGS field at most");
            return ERROR;
        }
        if (!PyTuple_Check(subfields)) {
            PyErr_SetString(PyExc_TypeError, "an ARGS field needs its subfields");
            return ERROR;
        }
        Py_ssize_t count = PyTuple_GET_SIZE(subfields);
        if (scan->field_count + count > MAX_FIELDS) goto too_many;
        field->first_sub = scan->field_count;
        field->sub_count = (int)count;
        for (Py_ssize_t j = 0; j < count; j++) {
            Field *sub = &scan->fields[scan->field_count++];
            if (read_field(sub, PyTuple_GET_ITEM(subfields, j), ARGS - 1, NULL) != OK) {
                return ERROR;
            }
        }
    }
    if (scan->ph_field < 0 || scan->fields[scan->ph_field].kind != STR || scan->name_field < 0 ||
        scan->fields[scan->name_field].kind != STR) {
        PyErr_SetString(PyExc_ValueError, "the fields need ph and name, strings");
        return ERROR;
    }
    /* each object's keys by length */
    scan->group_count = 0;
    if (index_keys(scan, 0, scan->top_count) != OK) return ERROR;
    for (int f = 0; f < scan->top_count; f++) {
        Field *field = &scan->fields[f];
        if (field->kind == ARGS) {
            field->group = scan->group_count;
            if (index_keys(scan, field->first_sub, field->sub_count) != OK) return ERROR;
        }
    }
    /* columns: every non-ARGS field, in table order */
    int column = 0;
    for (int f = 0; f < scan->field_count; f++) {
        Field *field = &scan->fields[f];
        if (field->kind == ARGS) continue;
        field->column = column;
        scan->width[column] = (field->kind == STR || field->kind == RAW) ? 4 : 8;
        column++;
    }
    scan->column_count = column;
    return OK;
too_many:
    PyErr_SetString(PyExc_ValueError, "too many fields");
    return ERROR;
}

static PyObject *
scan(PyObject *module, PyObject *args)
{
    Py_buffer text;
    PyObject *spec, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*O:scan", &text, &spec)) {
        return NULL;
    }
    Scan *state = PyMem_Calloc(1, sizeof(Scan));
    if (state == NULL) {
        PyBuffer_Release(&text);
        return PyErr_NoMemory();
    }
    state->start = text.buf;
    state->end = (const char *)text.buf + text.len;
    state->capacity = text.len / 256 + 16;
    int status = read_fields(state, spec);
    if (status == OK) status = table_init(&state->strings, 0);
    if (status == OK) status = table_init(&state->raws, 1);
    for (int c = 0; status == OK && c < state->column_count; c++) {
        state->buffers[c] = PyByteArray_FromStringAndSize(NULL, state->capacity * state->width[c]);
        if (state->buffers[c] == NULL) status = ERROR;
        else state->data[c] = PyByteArray_AS_STRING(state->buffers[c]);
    }
    if (status == OK) {
        state->spans = PyByteArray_FromStringAndSize(NULL, state->capacity * 2 * sizeof(int64_t));
        state->args_seen = PyByteArray_FromStringAndSize(NULL, state->capacity * sizeof(uint64_t));
        if (state->spans == NULL || state->args_seen == NULL) status = ERROR;
        else put_defaults(state, 0, state->capacity);
    }
    if (status == OK) {
        /* "" and b"" are code 0 (the defaults); the phases and the name the mismatch check
         * compares with are looked up once */
        if (table_code(&state->strings, "", 0, NULL) != 0 || table_code(&state->raws, "", 0, NULL) != 0)
            status = ERROR;
        Py_ssize_t complete = table_code(&state->strings, "X", 1, NULL);
        Py_ssize_t instant = table_code(&state->strings, "i", 1, NULL);
        Py_ssize_t old_instant = table_code(&state->strings, "I", 1, NULL);
        Py_ssize_t memory = table_code(&state->strings, "[memory]", 8, NULL);
        if (complete < 0 || instant < 0 || old_instant < 0 || memory < 0) status = ERROR;
        state->complete_code = (int32_t)complete;
        state->instant_code = (int32_t)instant;
        state->old_instant_code = (int32_t)old_instant;
        state->memory_code = (int32_t)memory;
    }
    if (status == OK) status = scan_events(state);
    if (status == OK) {
        PyObject *columns = PyList_New(state->column_count);
        int failed = columns == NULL;
        for (int c = 0; !failed && c < state->column_count; c++) {
            failed = PyByteArray_Resize(state->buffers[c], state->rows * state->width[c]) < 0;
            if (!failed) {
                PyList_SET_ITEM(columns, c, state->buffers[c]);
                state->buffers[c] = NULL;
            }
        }
        if (!failed) failed = PyByteArray_Resize(state->spans, state->rows * 16) < 0;
        if (!failed) failed = PyByteArray_Resize(state->args_seen, state->rows * 8) < 0;
        if (!failed) {
            result = Py_BuildValue("nNOOOO", state->rows, columns, state->strings.values,
                                   state->raws.values, state->spans, state->args_seen);
            columns = NULL;
        }
        Py_XDECREF(columns);
    }
    else if (status == BAIL) {
        result = Py_NewRef(Py_None);
    }
    for (int c = 0; c < MAX_FIELDS; c++) Py_XDECREF(state->buffers[c]);
    Py_XDECREF(state->spans);
    Py_XDECREF(state->args_seen);
    table_free(&state->strings);
    table_free(&state->raws);
    PyMem_Free(state);
    PyBuffer_Release(&text);
    return result;
}

/* number(codes, values, index, mapping, out): out[i] = index[values[codes[i]]], each distinct
 * code looked up once, in the order codes first appear (index numbers what is new to it as it is
 * looked up: a vocabulary's order of first appearance). mapping (int32, one per value; -1: not
 * looked up yet) carries the lookups from one call to the next. */
static PyObject *
number(PyObject *module, PyObject *args)
{
    Py_buffer codes, mapping, out;
    PyObject *values, *index, *result = NULL;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*O!Ow*w*:number", &codes, &PyList_Type, &values, &index,
                          &mapping, &out)) {
        return NULL;
    }
    Py_ssize_t count = codes.len / 4, known = mapping.len / 4;
    const int32_t *in = codes.buf;
    int32_t *map = mapping.buf, *to = out.buf;
    if (out.len / 4 != count || known != PyList_GET_SIZE(values)) {
        PyErr_SetString(PyExc_ValueError, "number: sizes do not agree");
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        int32_t code = in[i];
        if (code < 0 || code >= known) {
            PyErr_SetString(PyExc_IndexError, "number: a code past the values");
            goto done;
        }
        if (map[code] < 0) {
            if (PyList_GET_SIZE(values) != known) { /* a lookup ran code that changed it */
                PyErr_SetString(PyExc_RuntimeError, "number: the values changed");
                goto done;
            }
            PyObject *value = PyList_GET_ITEM(values, code);
            Py_INCREF(value);
            PyObject *found = PyObject_GetItem(index, value);
            Py_DECREF(value);
            if (found == NULL) goto done;
            long number = PyLong_AsLong(found);
            Py_DECREF(found);
            if (number == -1 && PyErr_Occurred()) goto done;
            if (number < 0 || number > INT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "number: a code past int32");
                goto done;
            }
            map[code] = (int32_t)number;
        }
        to[i] = map[code];
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&codes);
    PyBuffer_Release(&mapping);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"number", number, METH_VARARGS,
     "number(codes, values, index, mapping, out): a piece's codes as a vocabulary's, each "
     "distinct value looked up once, in order of first appearance."},
    {"scan", scan, METH_VARARGS,
     "scan(text, fields) -> None | (count, columns, strings, raws, spans, args_seen): a piece "
     "of a trace's events array as columns; None where msgspec must decode it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scanner",
    "A piece of a trace's events array straight into columns (profiler.analysis.scanned).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__scanner(void)
{
    init_special();
    return PyModule_Create(&module);
}
