/* Python-style printing of values: what repr() prints for the same data. */
#define _GNU_SOURCE
#include "internal/buf.h"
#include "internal/common.h"
#include "internal/value.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Output goes to a growable buffer whose `failed` sticks after the first allocation
 * failure, so the printers below need not check each append. */
static void put(mp__buf *b, const char *s, size_t n) { mp__buf_append(b, s, n); }

static void puts_(mp__buf *b, const char *s) { mp__buf_puts(b, s); }

static void putf(mp__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(mp__buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put(b, tmp, n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- handles --------------------------------------------------------------------- */

static struct {
    const mp_kind *kind;
    mp__kind_repr_fn fn;
} kind_reprs[8];

void mp__kind_set_repr(const mp_kind *kind, mp__kind_repr_fn fn)
{
    for (size_t i = 0; i < sizeof kind_reprs / sizeof kind_reprs[0]; i++)
        if (!kind_reprs[i].kind || kind_reprs[i].kind == kind) {
            kind_reprs[i].kind = kind;
            kind_reprs[i].fn = fn;
            return;
        }
}

static void handle_repr(mp__buf *b, const mp_kind *kind, const void *obj)
{
    for (size_t i = 0; i < sizeof kind_reprs / sizeof kind_reprs[0] && kind_reprs[i].kind; i++)
        if (kind_reprs[i].kind == kind) {
            char tmp[160];
            kind_reprs[i].fn(obj, tmp, sizeof tmp);
            puts_(b, tmp);
            return;
        }
    puts_(b, "<");
    puts_(b, kind->name);
    putf(b, " object at %p>", obj);
}

/* ---- floats --------------------------------------------------------------------- */

/* Python's repr(float): the shortest digits that read back as the same double,
 * positional when the decimal point falls in -4 < decpt <= 16, else exponent form. */
static void float_repr(mp__buf *b, double d)
{
    if (isnan(d)) {
        puts_(b, "nan");
        return;
    }
    if (isinf(d)) {
        puts_(b, d > 0 ? "inf" : "-inf");
        return;
    }
    char tmp[40];
    for (int p = 0; p <= 16; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    /* tmp is [-]D[.DDD]e[+-]XX: gather the digits and the exponent */
    const char *q = tmp;
    if (*q == '-') {
        puts_(b, "-");
        q++;
    }
    char digits[24];
    size_t nd = 0;
    for (; *q && *q != 'e'; q++)
        if (*q != '.')
            digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    int decpt = digits[0] == '0' ? 1 : exp10 + 1;
    if (decpt <= -4 || decpt > 16) {
        put(b, digits, 1);
        if (nd > 1) {
            puts_(b, ".");
            put(b, digits + 1, nd - 1);
        }
        putf(b, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (decpt <= 0) {
        puts_(b, "0.");
        for (int i = 0; i < -decpt; i++)
            puts_(b, "0");
        put(b, digits, nd);
    } else if ((size_t)decpt >= nd) {
        put(b, digits, nd);
        for (size_t i = nd; i < (size_t)decpt; i++)
            puts_(b, "0");
        puts_(b, ".0");
    } else {
        put(b, digits, (size_t)decpt);
        puts_(b, ".");
        put(b, digits + decpt, nd - (size_t)decpt);
    }
}

/* ---- strings and bytes ---------------------------------------------------------- */

/* Decode one UTF-8 sequence; returns its length, or 0 if it is not valid UTF-8. */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp)
{
    size_t len = p[0] < 0x80 ? 1 : p[0] < 0xc2 ? 0 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3
               : p[0] < 0xf5 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    uint32_t c = len == 1 ? p[0] : p[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static char pick_quote(const char *s, size_t n)
{
    /* single quotes unless the text has ' and no " (Python's rule) */
    return memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
}

/* Escapes common to str and bytes for an ASCII byte; false if printed as is. */
static bool escape_ascii(mp__buf *b, unsigned char c, char quote)
{
    if (c == '\\' || c == (unsigned char)quote) {
        char e[2] = {'\\', (char)c};
        put(b, e, 2);
    } else if (c == '\n') {
        puts_(b, "\\n");
    } else if (c == '\r') {
        puts_(b, "\\r");
    } else if (c == '\t') {
        puts_(b, "\\t");
    } else if (c < 0x20 || c >= 0x7f) {
        putf(b, "\\x%02x", c);
    } else {
        return false;
    }
    return true;
}

static void str_repr(mp__buf *b, const char *s, size_t n)
{
    char quote = pick_quote(s, n);
    put(b, &quote, 1);
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t len = p[i] < 0x80 ? 1 : utf8_next(p + i, n - i, &c);
        if (len == 0) { /* not UTF-8: show the byte, as Python's surrogateescape would */
            putf(b, "\\x%02x", p[i]);
            len = 1;
        } else if (len == 1) {
            if (!escape_ascii(b, p[i], quote))
                put(b, s + i, 1);
        } else if (mp__unicode_printable(c)) {
            put(b, s + i, len);
        } else {
            putf(b, c < 0x100 ? "\\x%02x" : c < 0x10000 ? "\\u%04x" : "\\U%08x", (unsigned)c);
        }
        i += len;
    }
    put(b, &quote, 1);
}

static void bytes_repr(mp__buf *b, const char *s, size_t n)
{
    char quote = pick_quote(s, n);
    puts_(b, "b");
    put(b, &quote, 1);
    for (size_t i = 0; i < n; i++)
        if (!escape_ascii(b, (unsigned char)s[i], quote))
            put(b, s + i, 1);
    put(b, &quote, 1);
}

/* ---- values --------------------------------------------------------------------- */

static void repr(mp__buf *b, const mp_value *v)
{
    switch (v->type) {
    case MP_NIL:
        puts_(b, "None");
        break;
    case MP_BOOL:
        puts_(b, v->u.b ? "True" : "False");
        break;
    case MP_INT:
        putf(b, "%" PRId64, v->u.i);
        break;
    case MP_FLOAT:
        float_repr(b, v->u.d);
        break;
    case MP_STR:
        str_repr(b, v->u.s.data, v->u.s.len);
        break;
    case MP_BYTES:
        bytes_repr(b, v->u.s.data, v->u.s.len);
        break;
    case MP_LIST:
        puts_(b, "[");
        for (size_t i = 0; i < v->u.list.len; i++) {
            if (i)
                puts_(b, ", ");
            repr(b, v->u.list.items[i]);
        }
        puts_(b, "]");
        break;
    case MP_MAP:
        puts_(b, "{");
        for (size_t i = 0; i < v->u.map.len; i++) {
            if (i)
                puts_(b, ", ");
            repr(b, v->u.map.keys[i]);
            puts_(b, ": ");
            repr(b, v->u.map.vals[i]);
        }
        puts_(b, "}");
        break;
    case MP_HANDLE:
        handle_repr(b, v->u.h.kind, v->u.h.obj);
        break;
    }
}

char *mp_value_repr(const mp_value *v)
{
    mp__buf b = {0};
    if (!v)
        puts_(&b, "NULL");
    else
        repr(&b, v);
    if (b.failed) {
        mp__buf_free(&b);
        mp__error(-ENOMEM, "mp_value_repr: out of memory");
        return NULL;
    }
    return mp__buf_take(&b, NULL);
}
