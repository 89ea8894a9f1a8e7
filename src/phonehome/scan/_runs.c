/* phonehome.scan._runs: the base64, base64url, base32 and hex run decoders of phonehome.scan.layers, in C (then
 * layer_marks, the layers' trigger search, and at the end the XOR differentials of phonehome.scan.obfuscation: the
 * same results as their Python references).
 *
 * A JSON body is full of runs of these alphabets (floats' decimals, tokens, ids, timestamps); in Python each run
 * is one bytes object, one decode call and one join item, and that was most of a cleartext scan's time. Here one
 * call finds the runs of one kind, decodes them and joins them with layers._JOIN, within the output budget.
 *
 * The output is byte for byte what the pure-Python decoders in layers.py return (they are the reference, and the
 * fallback when this module is not built); testing/unit/test_runs_accelerated.py checks it.
 *
 * decode_runs(data, kind, budget, cut) -> (decoded, used)
 *   data    bytes-like (buffer protocol, C-contiguous)
 *   kind    BASE64 | BASE64URL | BASE32 | HEX
 *   budget  output bytes allowed (layers.Budget.left)
 *   cut     only data[:cut] is searched (layers.MAX_TEXT_DECODE_BYTES)
 *   used    how much of the budget the call took (the caller subtracts it)
 *
 * Runs (searched in data[:cut]): maximal runs of MIN_RUN_CHARS or more characters of
 *   BASE64/BASE64URL  [A-Za-z0-9+/_-]; a run holding '-' or '_' is base64url, else base64; a base64url run that
 *                     also holds '+' or '/' is not one value and is skipped. Padding '=' after a run is ignored
 *                     (Python strips it before decoding).
 *   BASE32            [A-Z2-7]  (Python searches the base64 runs joined by spaces: every base32 or hex run of 16
 *   HEX               [0-9A-Fa-f] characters lies inside one base64 run, so these are the same runs, in order)
 * Decoding: base64 is binascii.a2b_base64(strict_mode=True) of the run padded to a multiple of 4 (a length of
 * 4k+1 drops the last character); the unused low bits of the last character are ignored, as binascii does.
 * base32 is base64.b32decode of the run cut to a multiple of 8 when its length mod 8 is 1, 3 or 6, else padded.
 * hex is binascii.a2b_hex of the run cut to an even length. In every case that is: the run's characters as one
 * bit stream, whole bytes only.
 *
 * decode_every_run(data, cut) -> (base64, base64url, base32, hex)
 *   decode_runs of each kind with a budget that does not bind, in one pass: the base64 runs are found once, and
 *   the base32 and hex runs are searched inside them only (see above: they are the same runs). layers' wrappers
 *   take each output when it fits the budget left at its decoder's turn (then it is what decode_runs gives).
 *
 * Budget, as layers._add_part spends it: each decoded run after the first takes a separator (3 bytes) first; a
 * separator that does not fit whole spends what is left and ends the output without being written; a run that
 * does not fit whole is cut to what is left; the output ends as soon as nothing is left. (When everything fits,
 * Python joins in one go; the result is the same.)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MIN_RUN_CHARS 16
/* inputs at least this long are decoded with the GIL released */
#define NOGIL_BYTES (64 << 10)

enum { KIND_BASE64 = 0, KIND_BASE64URL = 1, KIND_BASE32 = 2, KIND_HEX = 3 };

/* character classes */
#define IS_B64 0x01u  /* [A-Za-z0-9+/_-] */
#define IS_B32 0x02u  /* [A-Z2-7] */
#define IS_HEX 0x04u  /* [0-9A-Fa-f] */
#define IS_URL 0x08u  /* '-' '_' */
#define IS_STD 0x10u  /* '+' '/' */

static const char JOIN[3] = {'\n', '\0', '\n'};

static unsigned char classes[256];
/* the value of each character in its alphabet ('-' and '_' as base64url's 62 and 63); 0 outside it */
static unsigned char b64_value[256];
static unsigned char b32_value[256];
static unsigned char hex_value[256];

static void
init_tables(void)
{
    int c;
    memset(classes, 0, sizeof classes);
    for (c = 'A'; c <= 'Z'; c++) {
        classes[c] |= IS_B64 | IS_B32;
        b64_value[c] = (unsigned char)(c - 'A');
        b32_value[c] = (unsigned char)(c - 'A');
    }
    for (c = 'a'; c <= 'z'; c++) {
        classes[c] |= IS_B64;
        b64_value[c] = (unsigned char)(c - 'a' + 26);
    }
    for (c = '0'; c <= '9'; c++) {
        classes[c] |= IS_B64 | IS_HEX;
        b64_value[c] = (unsigned char)(c - '0' + 52);
        hex_value[c] = (unsigned char)(c - '0');
    }
    for (c = '2'; c <= '7'; c++) {
        classes[c] |= IS_B32;
        b32_value[c] = (unsigned char)(c - '2' + 26);
    }
    for (c = 'A'; c <= 'F'; c++) {
        classes[c] |= IS_HEX;
        hex_value[c] = (unsigned char)(c - 'A' + 10);
    }
    for (c = 'a'; c <= 'f'; c++) {
        classes[c] |= IS_HEX;
        hex_value[c] = (unsigned char)(c - 'a' + 10);
    }
    classes['+'] |= IS_B64 | IS_STD;
    classes['/'] |= IS_B64 | IS_STD;
    classes['-'] |= IS_B64 | IS_URL;
    classes['_'] |= IS_B64 | IS_URL;
    b64_value['+'] = b64_value['-'] = 62;
    b64_value['/'] = b64_value['_'] = 63;
}

/* The first `limit` bytes of the bit stream of `nchars` characters of `bits` bits each. */
static Py_ssize_t
decode_bits(const unsigned char *src, Py_ssize_t nchars, const unsigned char *value, int bits,
            unsigned char *dst, Py_ssize_t limit)
{
    uint32_t acc = 0;
    int held = 0;
    Py_ssize_t i, written = 0;

    if (bits == 6) {  /* base64, the common case: four characters, three bytes */
        while (nchars >= 4 && limit - written >= 3) {
            acc = ((uint32_t)value[src[0]] << 18) | ((uint32_t)value[src[1]] << 12) |
                  ((uint32_t)value[src[2]] << 6) | (uint32_t)value[src[3]];
            dst[written] = (unsigned char)(acc >> 16);
            dst[written + 1] = (unsigned char)(acc >> 8);
            dst[written + 2] = (unsigned char)acc;
            written += 3;
            src += 4;
            nchars -= 4;
        }
        acc = 0;
    }
    else if (bits == 4) {  /* hex: two characters, one byte */
        Py_ssize_t pairs = nchars / 2;
        if (pairs > limit)
            pairs = limit;
        for (i = 0; i < pairs; i++)
            dst[i] = (unsigned char)((hex_value[src[2 * i]] << 4) | hex_value[src[2 * i + 1]]);
        return pairs;
    }
    for (i = 0; i < nchars && written < limit; i++) {
        acc = (acc << bits) | value[src[i]];  /* only the low `held` + `bits` (< 14) bits matter */
        held += bits;
        if (held >= 8) {
            held -= 8;
            dst[written++] = (unsigned char)(acc >> held);
        }
    }
    return written;
}

/* Decoded size of a run of `length` characters of `kind`, and the characters that are decoded (`*nchars`). */
static Py_ssize_t
decoded_size(int kind, Py_ssize_t length, Py_ssize_t *nchars)
{
    switch (kind) {
    case KIND_BASE32:
        if (length % 8 == 1 || length % 8 == 3 || length % 8 == 6)
            length -= length % 8;
        *nchars = length;
        return length / 8 * 5 + length % 8 * 5 / 8;
    case KIND_HEX:
        *nchars = length / 2 * 2;
        return length / 2;
    default:
        *nchars = length;
        return length / 4 * 3 + length % 4 * 3 / 4;
    }
}

/* The next maximal run of `mask` characters of MIN_RUN_CHARS or more in src[pos:n]: its start in *start, its
   end (exclusive) returned; n when there is none. `pos` must not be inside a run that began before it (0, the
   end of a run, or just after a character outside the class).

   Most of a JSON body is short runs (words, numbers): instead of testing every byte, test the last byte a run
   starting at `pos` would need; outside the class, no run of MIN_RUN_CHARS can start before it, so jump past it;
   inside, look back for the nearest byte outside the class (not back into bytes already known to be inside). */
static Py_ssize_t
next_run(const unsigned char *src, Py_ssize_t n, Py_ssize_t pos, unsigned char mask, Py_ssize_t *start)
{
    Py_ssize_t known = pos;  /* src[pos:known] are in the class */

    while (n - pos >= MIN_RUN_CHARS) {
        Py_ssize_t last = pos + MIN_RUN_CHARS - 1, back;

        if (!(classes[src[last]] & mask)) {
            pos = known = last + 1;
            continue;
        }
        for (back = last - 1; back >= known && (classes[src[back]] & mask); back--)
            ;
        if (back >= known) {  /* src[back] is outside: a run could start after it */
            pos = back + 1;
            known = last + 1;
            continue;
        }
        *start = pos;  /* src[pos:last+1] are in the class, and src[pos-1] is not */
        for (pos = last + 1; pos < n && (classes[src[pos]] & mask); pos++)
            ;
        return pos;
    }
    *start = n;
    return n;
}

/* Find, decode and join the runs of `kind` in src[:n] into dst (room for `room` bytes) within `*left`.
   Returns the bytes written; `*left` is what is left of the budget. */
static Py_ssize_t
decode_all(const unsigned char *src, Py_ssize_t n, int kind, Py_ssize_t *left, unsigned char *dst,
           Py_ssize_t room)
{
    const unsigned char mask = kind == KIND_BASE32 ? IS_B32 : kind == KIND_HEX ? IS_HEX : IS_B64;
    const unsigned char *value = kind == KIND_BASE32 ? b32_value : kind == KIND_HEX ? hex_value : b64_value;
    const int bits = kind == KIND_BASE32 ? 5 : kind == KIND_HEX ? 4 : 6;
    Py_ssize_t pos = 0, written = 0, parts = 0;

    while (pos < n && *left > 0) {
        Py_ssize_t start, nchars, size, take, i;
        unsigned char seen = 0;

        pos = next_run(src, n, pos, mask, &start);
        if (start >= n)
            break;
        if (kind == KIND_BASE64 || kind == KIND_BASE64URL) {
            for (i = start; i < pos; i++)
                seen |= classes[src[i]];
            if (kind == KIND_BASE64 && (seen & IS_URL))
                continue;  /* a base64url run */
            if (kind == KIND_BASE64URL && (!(seen & IS_URL) || (seen & IS_STD)))
                continue;  /* a standard run, or mixed alphabets: not one value */
        }
        size = decoded_size(kind, pos - start, &nchars);
        if (size <= 0)
            continue;
        if (parts > 0) {
            if (*left < (Py_ssize_t)sizeof JOIN) {
                *left = 0;  /* the separator spends the rest and ends the output */
                break;
            }
            *left -= (Py_ssize_t)sizeof JOIN;
            if (room - written < (Py_ssize_t)sizeof JOIN)
                break;  /* cannot happen (the output is never longer than the input): bounds first */
            memcpy(dst + written, JOIN, sizeof JOIN);
            written += (Py_ssize_t)sizeof JOIN;
        }
        take = size < *left ? size : *left;
        if (take > room - written)
            take = room - written;
        take = decode_bits(src + start, nchars, value, bits, dst + written, take);
        written += take;
        *left -= take;
        parts++;
    }
    return written;
}

static PyObject *
decode_runs(PyObject *module, PyObject *args)
{
    Py_buffer view;
    int kind;
    Py_ssize_t budget, cut, n, room, left, written;
    PyObject *out;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*inn:decode_runs", &view, &kind, &budget, &cut))
        return NULL;
    if (kind < KIND_BASE64 || kind > KIND_HEX) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "kind must be BASE64, BASE64URL, BASE32 or HEX (0-3), not %d", kind);
        return NULL;
    }
    n = view.len < cut ? view.len : cut;
    if (n < MIN_RUN_CHARS || budget <= 0) {
        PyBuffer_Release(&view);
        return Py_BuildValue("(y#n)", "", (Py_ssize_t)0, (Py_ssize_t)0);
    }
    room = n < budget ? n : budget;  /* the output is never longer than the input, nor than the budget */
    out = PyBytes_FromStringAndSize(NULL, room);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    left = budget;
    if (n >= NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        written = decode_all((const unsigned char *)view.buf, n, kind, &left,
                             (unsigned char *)PyBytes_AS_STRING(out), room);
        Py_END_ALLOW_THREADS
    }
    else {
        written = decode_all((const unsigned char *)view.buf, n, kind, &left,
                             (unsigned char *)PyBytes_AS_STRING(out), room);
    }
    PyBuffer_Release(&view);
    if (written != room && _PyBytes_Resize(&out, written) < 0)
        return NULL;
    return Py_BuildValue("(Nn)", out, budget - left);
}

/* Append run src[start:end) of `kind`, decoded whole, to dst at *written (a separator first if it is not the
   first part of that output). dst has room for `room` bytes: never too few (a run of 16+ characters decodes to
   at least 4 bytes fewer, room for the separator), checked all the same. */
static void
append_run(const unsigned char *src, Py_ssize_t start, Py_ssize_t end, int kind, unsigned char *dst,
           Py_ssize_t room, Py_ssize_t *written, Py_ssize_t *parts)
{
    const unsigned char *value = kind == KIND_BASE32 ? b32_value : kind == KIND_HEX ? hex_value : b64_value;
    const int bits = kind == KIND_BASE32 ? 5 : kind == KIND_HEX ? 4 : 6;
    Py_ssize_t nchars, size = decoded_size(kind, end - start, &nchars);

    if (size <= 0 || room - *written < size + (Py_ssize_t)sizeof JOIN)
        return;
    if (*parts > 0) {
        memcpy(dst + *written, JOIN, sizeof JOIN);
        *written += (Py_ssize_t)sizeof JOIN;
    }
    *written += decode_bits(src + start, nchars, value, bits, dst + *written, size);
    (*parts)++;
}

/* Every run of `mask` in the base64 run src[start:end), of `kind`, appended (maximal runs of the whole buffer:
   the characters just outside the base64 run are outside every alphabet). */
static void
append_sub_runs(const unsigned char *src, Py_ssize_t start, Py_ssize_t end, unsigned char mask, int kind,
                unsigned char *dst, Py_ssize_t room, Py_ssize_t *written, Py_ssize_t *parts)
{
    Py_ssize_t pos = 0, sub;

    while (pos < end - start) {
        pos = next_run(src + start, end - start, pos, mask, &sub);
        if (sub >= end - start)
            break;
        append_run(src, start + sub, start + pos, kind, dst, room, written, parts);
    }
}

/* The four decode_all outputs with no budget, in one pass: each base64 run is decoded as base64 or base64url
   (or skipped: mixed alphabets), and the base32 and hex runs are searched inside it only. */
static void
decode_every_kind(const unsigned char *src, Py_ssize_t n, unsigned char **dst, Py_ssize_t *written)
{
    Py_ssize_t pos = 0, parts[4] = {0, 0, 0, 0};

    while (pos < n) {
        Py_ssize_t start, i;
        unsigned char seen = 0;

        pos = next_run(src, n, pos, IS_B64, &start);
        if (start >= n)
            break;
        for (i = start; i < pos; i++)
            seen |= classes[src[i]];
        if (!(seen & IS_URL))
            append_run(src, start, pos, KIND_BASE64, dst[KIND_BASE64], n, &written[KIND_BASE64],
                       &parts[KIND_BASE64]);
        else if (!(seen & IS_STD))
            append_run(src, start, pos, KIND_BASE64URL, dst[KIND_BASE64URL], n, &written[KIND_BASE64URL],
                       &parts[KIND_BASE64URL]);
        if (seen & IS_B32)
            append_sub_runs(src, start, pos, IS_B32, KIND_BASE32, dst[KIND_BASE32], n, &written[KIND_BASE32],
                            &parts[KIND_BASE32]);
        if (seen & IS_HEX)
            append_sub_runs(src, start, pos, IS_HEX, KIND_HEX, dst[KIND_HEX], n, &written[KIND_HEX],
                            &parts[KIND_HEX]);
    }
}

/* decode_every_run(data, cut) -> (base64, base64url, base32, hex): what decode_runs gives for each kind with
 * a budget that does not bind, from one pass over data[:cut]. Each output is at most len(data[:cut]) bytes (a
 * run decodes to fewer bytes than its characters, and a separator stands for the 3+ bytes between two runs). */
static PyObject *
decode_every_run(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t cut, n, written[4] = {0, 0, 0, 0};
    PyObject *out[4] = {NULL, NULL, NULL, NULL}, *result = NULL;
    unsigned char *dst[4];
    int k;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*n:decode_every_run", &view, &cut))
        return NULL;
    n = view.len < cut ? view.len : cut;
    if (n < MIN_RUN_CHARS)
        n = 0;
    for (k = 0; k < 4; k++) {
        out[k] = PyBytes_FromStringAndSize(NULL, n);
        if (out[k] == NULL)
            goto done;
        dst[k] = (unsigned char *)PyBytes_AS_STRING(out[k]);
    }
    if (n >= NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        decode_every_kind((const unsigned char *)view.buf, n, dst, written);
        Py_END_ALLOW_THREADS
    }
    else {
        decode_every_kind((const unsigned char *)view.buf, n, dst, written);
    }
    for (k = 0; k < 4; k++) {
        if (written[k] != n && _PyBytes_Resize(&out[k], written[k]) < 0)
            goto done;  /* out[k] is NULL now */
    }
    result = PyTuple_Pack(4, out[0], out[1], out[2], out[3]);
done:
    for (k = 0; k < 4; k++)
        Py_XDECREF(out[k]);
    PyBuffer_Release(&view);
    return result;
}

/* layer_marks(data, cut): which of phonehome.scan.layers._TRIGGERS occur in data (bit i for trigger i, in its
 * order), and bit TRIGGER_COUNT when data[:cut] holds a run of MIN_RUN_CHARS base64/base64url characters (the
 * run each of the four run decoders needs: base32 and hex runs lie inside base64 runs): what peel asks of every
 * buffer before choosing its decoders, in one call. Each trigger is tested where its first byte is, as its regex
 * reads:
 *   0 gzip   \x1f\x8b\x08             1 zlib  x[\x01\x5e\x9c\xda]      2 bzip2  BZh[1-9]1AY&SY
 *   3 lzma   \xfd7zXZ\x00             4 url   %[0-9A-Fa-f]{2}
 *   5 html   &(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});
 *   6 json   \\u[0-9A-Fa-f]{4}        7 qp    =(?:\r?\n|3D)
 *   8 utf16le (?:T\x00){8}            9 utf16be (?:\x00T){8}   T: [\t\n\r\x20-\x7e]
 * (a bounded repeat followed by ';' matches only if the maximal run of its class is within the bounds: ';' is
 * not in the class). testing/unit/test_layers.py checks it against the regexes. */
#define TRIGGER_COUNT 10
enum { T_GZIP, T_ZLIB, T_BZIP2, T_LZMA, T_URL, T_HTML, T_JSON, T_QP, T_UTF16LE, T_UTF16BE };

static unsigned char text_byte[256];
static unsigned char trigger_start[256];

static void
init_trigger_tables(void)
{
    int c;
    for (c = 0x20; c <= 0x7e; c++)
        text_byte[c] = 1;
    text_byte['\t'] = text_byte['\n'] = text_byte['\r'] = 1;
    trigger_start[0x1f] = trigger_start['x'] = trigger_start['B'] = trigger_start[0xfd] = 1;
    trigger_start['%'] = trigger_start['&'] = trigger_start['\\'] = trigger_start['='] = trigger_start[0] = 1;
}

/* the length of the run of `mask` characters (classes[]) at p[0:n], counting at most `most` + 1 */
static Py_ssize_t
class_run(const unsigned char *p, Py_ssize_t n, unsigned char mask, Py_ssize_t most)
{
    Py_ssize_t k = 0;
    while (k < n && k <= most && (classes[p[k]] & mask))
        k++;
    return k;
}

static int
is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* html: an entity at p[0] == '&' */
static int
html_entity(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t k;
    if (n < 3)
        return 0;
    if (p[1] == '#') {
        if (p[2] == 'x' || p[2] == 'X') {
            k = class_run(p + 3, n - 3, IS_HEX, 6);
            return k >= 1 && k <= 6 && 3 + k < n && p[3 + k] == ';';
        }
        for (k = 0; 2 + k < n && k <= 7 && p[2 + k] >= '0' && p[2 + k] <= '9'; k++)
            ;
        return k >= 1 && k <= 7 && 2 + k < n && p[2 + k] == ';';
    }
    if (!((p[1] >= 'A' && p[1] <= 'Z') || (p[1] >= 'a' && p[1] <= 'z')))
        return 0;
    for (k = 0; 2 + k < n && k <= 31 && is_alnum(p[2 + k]); k++)
        ;
    return k >= 1 && k <= 31 && 2 + k < n && p[2 + k] == ';';
}

/* utf16: 8 pairs from p[0] of (text, NUL) when `le`, else (NUL, text) */
static int
utf16_pairs(const unsigned char *p, Py_ssize_t n, int le)
{
    int k;
    if (n < 16)
        return 0;
    for (k = 0; k < 8; k++) {
        unsigned char a = p[2 * k], b = p[2 * k + 1];
        if (le ? (!text_byte[a] || b != 0) : (a != 0 || !text_byte[b]))
            return 0;
    }
    return 1;
}

static unsigned int
trigger_marks(const unsigned char *p, Py_ssize_t n)
{
    const unsigned int all = (1u << TRIGGER_COUNT) - 1;
    unsigned int found = 0;
    Py_ssize_t i;

    for (i = 0; i < n && found != all; i++) {
        unsigned char c;
        Py_ssize_t left;
        while (i + 4 <= n && !(trigger_start[p[i]] | trigger_start[p[i + 1]] | trigger_start[p[i + 2]] |
                               trigger_start[p[i + 3]]))
            i += 4;  /* most bytes start no trigger: skip them four at a time */
        while (i < n && !trigger_start[p[i]])
            i++;
        if (i >= n)
            break;
        c = p[i];
        left = n - i;
        switch (c) {
        case 0x1f:
            if (left >= 3 && p[i + 1] == 0x8b && p[i + 2] == 0x08)
                found |= 1u << T_GZIP;
            break;
        case 'x':
            if (left >= 2 && (p[i + 1] == 0x01 || p[i + 1] == 0x5e || p[i + 1] == 0x9c || p[i + 1] == 0xda))
                found |= 1u << T_ZLIB;
            break;
        case 'B':
            if (left >= 10 && p[i + 1] == 'Z' && p[i + 2] == 'h' && p[i + 3] >= '1' && p[i + 3] <= '9' &&
                memcmp(p + i + 4, "1AY&SY", 6) == 0)
                found |= 1u << T_BZIP2;
            break;
        case 0xfd:
            if (left >= 6 && memcmp(p + i + 1, "7zXZ\0", 5) == 0)
                found |= 1u << T_LZMA;
            break;
        case '%':
            if (left >= 3 && (classes[p[i + 1]] & IS_HEX) && (classes[p[i + 2]] & IS_HEX))
                found |= 1u << T_URL;
            break;
        case '&':
            if (!(found & (1u << T_HTML)) && html_entity(p + i, left))
                found |= 1u << T_HTML;
            break;
        case '\\':
            if (left >= 6 && p[i + 1] == 'u' && class_run(p + i + 2, 4, IS_HEX, 4) == 4)
                found |= 1u << T_JSON;
            break;
        case '=':
            if (left >= 2 && (p[i + 1] == '\n' || (left >= 3 && ((p[i + 1] == '\r' && p[i + 2] == '\n') ||
                                                                 (p[i + 1] == '3' && p[i + 2] == 'D')))))
                found |= 1u << T_QP;
            break;
        default:  /* NUL: the first pair of a UTF-16LE run ends here, or one of UTF-16BE starts here */
            if (!(found & (1u << T_UTF16LE)) && i >= 1 && utf16_pairs(p + i - 1, left + 1, 1))
                found |= 1u << T_UTF16LE;
            if (!(found & (1u << T_UTF16BE)) && utf16_pairs(p + i, left, 0))
                found |= 1u << T_UTF16BE;
            break;
        }
    }
    return found;
}

/* a base64 run in p[0:n]: a window's last byte is looked at first; outside the alphabet, no run can cover it and
   the window jumps past it */
static int
find_run(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0, j;
    while (n - i >= MIN_RUN_CHARS) {
        j = i + MIN_RUN_CHARS - 1;  /* the window p[i..j] */
        if (!(classes[p[j]] & IS_B64)) {
            i = j + 1;
            continue;
        }
        while (j > i && (classes[p[j - 1]] & IS_B64))
            j--;
        if (j == i)  /* p[i..i+MIN_RUN_CHARS-1] all in the alphabet */
            return 1;
        i = j;  /* p[j-1] is outside the alphabet: a run can only start at j */
    }
    return 0;
}

static PyObject *
layer_marks(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t cut;
    unsigned int marks;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*n:layer_marks", &view, &cut))
        return NULL;
    if (view.len >= NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        marks = trigger_marks((const unsigned char *)view.buf, view.len);
        Py_END_ALLOW_THREADS
    }
    else {
        marks = trigger_marks((const unsigned char *)view.buf, view.len);
    }
    if (find_run((const unsigned char *)view.buf, view.len < cut ? view.len : cut))
        marks |= 1u << TRIGGER_COUNT;
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(marks);
}

/* xor_differentials(data, periods, gap): for each period p of `periods` (a tuple of ints >= 1), the bytes
 * data[i] ^ data[i - p] for p <= i < len(data), the periods' differentials laid end to end with `gap` zero bytes
 * between two; a period not below len(data) gives an empty differential. What phonehome.scan.obfuscation's
 * XorFinder matches its differential needles over (its Python reference: one big-integer XOR per period). */
static PyObject *
xor_differentials(PyObject *module, PyObject *args)
{
    Py_buffer view;
    PyObject *periods, *out;
    Py_ssize_t gap, n, count, k, total, i, p, add;
    const unsigned char *src;
    unsigned char *dst;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*O!n:xor_differentials", &view, &PyTuple_Type, &periods, &gap))
        return NULL;
    n = view.len;
    count = PyTuple_GET_SIZE(periods);
    if (gap < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "gap must not be negative");
        return NULL;
    }
    total = 0;
    for (k = 0; k < count; k++) {
        p = PyLong_AsSsize_t(PyTuple_GET_ITEM(periods, k));
        if (p == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if (p < 1) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "periods must be at least 1");
            return NULL;
        }
        add = (p < n ? n - p : 0);
        if (k && add > PY_SSIZE_T_MAX - gap) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_OverflowError, "differentials too large");
            return NULL;
        }
        add += k ? gap : 0;
        if (add > PY_SSIZE_T_MAX - total) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_OverflowError, "differentials too large");
            return NULL;
        }
        total += add;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    src = (const unsigned char *)view.buf;
    dst = (unsigned char *)PyBytes_AS_STRING(out);
    for (k = 0; k < count; k++) {
        p = PyLong_AsSsize_t(PyTuple_GET_ITEM(periods, k));
        if (k) {
            memset(dst, 0, (size_t)gap);
            dst += gap;
        }
        for (i = p; i < n; i++)
            *dst++ = src[i] ^ src[i - p];
    }
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"xor_differentials", xor_differentials, METH_VARARGS,
     "xor_differentials(data, periods, gap) -> bytes\n\n"
     "For each period p: data[i] ^ data[i - p] for p <= i < len(data); the periods' differentials joined by\n"
     "`gap` zero bytes."},
    {"layer_marks", layer_marks, METH_VARARGS,
     "layer_marks(data, cut) -> int\n\n"
     "Bit i set when layers._TRIGGERS[i] occurs in data; bit TRIGGER_COUNT when data[:cut] holds a base64 run."},
    {"decode_every_run", decode_every_run, METH_VARARGS,
     "decode_every_run(data, cut) -> (base64, base64url, base32, hex)\n\n"
     "decode_runs of each kind with a budget that does not bind, in one pass over data[:cut]."},
    {"decode_runs", decode_runs, METH_VARARGS,
     "decode_runs(data, kind, budget, cut) -> (decoded, used)\n\n"
     "The runs of `kind` in data[:cut] decoded and joined by b'\\n\\x00\\n', within `budget` output bytes;\n"
     "`used` is the part of the budget taken. The same bytes as phonehome.scan.layers' Python decoders."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef runs_module = {
    PyModuleDef_HEAD_INIT, "phonehome.scan._runs",
    "The base64, base64url, base32 and hex run decoders and the trigger search of phonehome.scan.layers, and the\n"
    "XOR differentials of phonehome.scan.obfuscation, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__runs(void)
{
    PyObject *module;

    init_tables();
    init_trigger_tables();
    module = PyModule_Create(&runs_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "BASE64", KIND_BASE64) < 0 ||
        PyModule_AddIntConstant(module, "BASE64URL", KIND_BASE64URL) < 0 ||
        PyModule_AddIntConstant(module, "BASE32", KIND_BASE32) < 0 ||
        PyModule_AddIntConstant(module, "HEX", KIND_HEX) < 0 ||
        PyModule_AddIntConstant(module, "MIN_RUN_CHARS", MIN_RUN_CHARS) < 0 ||
        PyModule_AddIntConstant(module, "TRIGGER_COUNT", TRIGGER_COUNT) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
