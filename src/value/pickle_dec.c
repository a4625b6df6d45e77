/* A data-only pickle decoder (protocols 2 to 5, what Python's Connection.send writes).
 *
 * The pickle machine of Lib/pickle.py restricted to data: a stack of values with marks,
 * and a memo. Every opcode that names or calls code (GLOBAL, STACK_GLOBAL, REDUCE, BUILD,
 * INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4, PERSID, BINPERSID, out-of-band buffers) is
 * refused, so a peer can send data but never make us run anything.
 *
 * Bounds: every length is checked against the bytes that remain before anything is
 * allocated; each opcode pushes at most one value, so the stack, the marks and the memo
 * (indices above the input length are refused) are proportional to the input; nesting is
 * capped at MP__PICKLE_MAX_DEPTH (the depth of each value on the stack is tracked).
 *
 * Shared references: an mp_value is a tree, so a memo reference (GET) pushes a deep copy.
 * The copies are charged against a budget proportional to the input (a 100-byte pickle
 * cannot ask for 2^40 copies). A container modified after it was copied this way is a
 * recursive structure (Python's pickler only refers back to a container under
 * construction when it contains itself): refused, since a tree cannot hold it.
 * Values dropped by POP or replaced in a dict may still be in the memo, so they are kept
 * (the "grave") until decoding ends.
 *
 * Speed: the stack, marks and memo start in arrays inside the decoder (no allocation for
 * a small pickle; the memo is zeroed only up to its highest index, which Python keeps
 * dense); scalars and short str/bytes take their block from value.c's per-thread cache
 * inline; a container's storage is sized from the item count its APPENDS/SETITEMS/TUPLE
 * brings, in one allocation (the block cache for small ones). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/pickle.h"
#include "internal/value.h"

#include <endian.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    mp_value *v;
    unsigned depth; /* levels of containers in v (0 for a scalar) */
} slot;

/* The stack, marks and memo start in the decoder itself (on the C stack): a small
 * pickle allocates nothing but its values. */
#define STACK0 128
#define MARKS0 32
#define MEMO0 128

typedef struct pdec {
    const unsigned char *p, *end;
    size_t input_len;
    slot *stack;
    size_t sp, scap;
    size_t *marks; /* stack positions */
    size_t nmarks, mcap;
    mp_value **memo;
    size_t memo_cap, memo_n;
    size_t memo_hi; /* memo[0..memo_hi) are set or NULL; the rest is uninitialised */
    mp_value **grave;
    size_t ngrave, gcap;
    const mp_value **copied; /* containers a GET or DUP copied (open-addressing set) */
    size_t ncopied, ccap;
    size_t budget; /* bytes shared references may still expand to */
    slot stack0[STACK0];
    size_t marks0[MARKS0];
    mp_value *memo0[MEMO0];
} pdec;

static int bad(const char *what) { return mp__error(MP_EPROTO, "pickle: %s", what); }

/* Grow *arr (inline0: its initial array inside the decoder, never freed) to hold `need`. */
static int grow_array(void **arr, size_t *cap, size_t need, size_t size, void *inline0)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need)
        ncap *= 2;
    void *p;
    if (*arr == inline0 && inline0) {
        p = malloc(ncap * size);
        if (p)
            memcpy(p, *arr, *cap * size);
    } else {
        p = realloc(*arr, ncap * size);
    }
    if (!p)
        return mp__error(-ENOMEM, "pickle: %zu stack entries", ncap);
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ---- input -------------------------------------------------------------------------- */

static int need(pdec *d, size_t n)
{
    return (size_t)(d->end - d->p) >= n ? 0 : bad("truncated input");
}

static uint64_t rd_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* A little-endian length of n bytes that must fit the remaining input. */
static int rd_len(pdec *d, int n, size_t *len)
{
    int r = need(d, (size_t)n);
    if (r < 0)
        return r;
    uint64_t v = rd_le(d->p, n);
    d->p += n;
    if (v > (uint64_t)(d->end - d->p))
        return mp__error(MP_EPROTO, "pickle: a length of %llu bytes beyond the %zu that remain",
                         (unsigned long long)v, (size_t)(d->end - d->p));
    *len = (size_t)v;
    return 0;
}

/* ---- stack -------------------------------------------------------------------------- */

static size_t fence(const pdec *d) { return d->nmarks ? d->marks[d->nmarks - 1] : 0; }

static __attribute__((noinline)) int push_grow(pdec *d, mp_value *v, unsigned depth)
{
    if (!v)
        return mp_last_error_code();
    int r = grow_array((void **)&d->stack, &d->scap, d->sp + 1, sizeof *d->stack, d->stack0);
    if (r < 0) {
        mp_value_free(v);
        return r;
    }
    d->stack[d->sp++] = (slot){v, depth};
    return 0;
}

static inline int push(pdec *d, mp_value *v, unsigned depth)
{
    if (!v || d->sp == d->scap)
        return push_grow(d, v, depth);
    d->stack[d->sp++] = (slot){v, depth};
    return 0;
}

static int underflow(void) { return bad("stack underflow (an opcode needs more items)"); }

/* The top item above the current mark. */
static slot *top(pdec *d) { return d->sp > fence(d) ? &d->stack[d->sp - 1] : NULL; }

static int bury(pdec *d, mp_value *v)
{
    int r = grow_array((void **)&d->grave, &d->gcap, d->ngrave + 1, sizeof *d->grave, NULL);
    if (r < 0) {
        mp_value_free(v); /* out of memory: decoding fails, the memo is not read again */
        return r;
    }
    d->grave[d->ngrave++] = v;
    return 0;
}

static int pop_mark(pdec *d, size_t *mark)
{
    if (!d->nmarks)
        return bad("no MARK before an opcode that needs one");
    *mark = d->marks[--d->nmarks];
    return 0;
}

/* ---- recursive structures ------------------------------------------------------------- */

static size_t ptr_hash(const void *p, size_t mask)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & mask;
}

static bool was_copied(const pdec *d, const mp_value *v)
{
    if (!d->ncopied)
        return false;
    size_t mask = d->ccap - 1;
    for (size_t i = ptr_hash(v, mask); d->copied[i]; i = (i + 1) & mask)
        if (d->copied[i] == v)
            return true;
    return false;
}

static void set_insert(const mp_value **set, size_t cap, const mp_value *v)
{
    size_t mask = cap - 1;
    size_t i = ptr_hash(v, mask);
    while (set[i] && set[i] != v)
        i = (i + 1) & mask;
    set[i] = v;
}

static int mark_copied(pdec *d, const mp_value *v)
{
    if (v->type != MP_LIST && v->type != MP_MAP)
        return 0;
    if (was_copied(d, v))
        return 0;
    if ((d->ncopied + 1) * 2 > d->ccap) {
        size_t cap = d->ccap ? d->ccap * 2 : 16;
        const mp_value **set = calloc(cap, sizeof *set);
        if (!set)
            return mp__error(-ENOMEM, "pickle: memo reference set");
        for (size_t i = 0; i < d->ccap; i++)
            if (d->copied[i])
                set_insert(set, cap, d->copied[i]);
        free(d->copied);
        d->copied = set;
        d->ccap = cap;
    }
    set_insert(d->copied, d->ccap, v);
    d->ncopied++;
    return 0;
}

/* The container an opcode is about to modify. */
static int check_target(pdec *d, const slot *t, mp_type type, const char *op)
{
    if (t->v->type != type)
        return mp__error(MP_EPROTO, "pickle: %s on a %s", op, mp_type_name(t->v->type));
    if (was_copied(d, t->v))
        return bad("a recursive structure (a container that contains itself) has no mp_value "
                   "equivalent");
    return 0;
}

static int deepen(slot *t, unsigned item_depth)
{
    if (item_depth + 1 > t->depth)
        t->depth = item_depth + 1;
    if (t->depth > MP__PICKLE_MAX_DEPTH)
        return mp__error(MP_EPROTO, "pickle: nesting deeper than %d levels",
                         MP__PICKLE_MAX_DEPTH);
    return 0;
}

/* ---- scalars ------------------------------------------------------------------------ */

/* Scalars built inline from the block cache (value.c's constructors without a call). */
static inline mp_value *new_int(int64_t i)
{
    mp_value *v = mp__value_new_scalar(MP_INT);
    if (v)
        v->u.i = i;
    return v;
}

static inline mp_value *new_float(double x)
{
    mp_value *v = mp__value_new_scalar(MP_FLOAT);
    if (v)
        v->u.d = x;
    return v;
}

static inline mp_value *new_bool(bool b)
{
    mp_value *v = mp__value_new_scalar(MP_BOOL);
    if (v)
        v->u.b = b;
    return v;
}

static int op_long(pdec *d, int lenbytes)
{
    size_t n = 0;
    int r = rd_len(d, lenbytes, &n);
    if (r < 0)
        return r;
    const unsigned char *p = d->p;
    d->p += n;
    if (n == 0)
        return push(d, mp_value_int(0), 0);
    bool neg = p[n - 1] & 0x80;
    /* Bytes beyond the eighth must only extend the sign. */
    for (size_t i = 8; i < n; i++)
        if (p[i] != (neg ? 0xff : 0x00))
            return mp__error(MP_ERANGE, "pickle: an int of %zu bytes does not fit in 64 bits "
                                        "(mp_value ints are int64)", n);
    size_t k = n < 8 ? n : 8;
    uint64_t u = rd_le(p, (int)k);
    if (k < 8 && neg)
        u |= ~0ull << (8 * k);
    if (n > 8 && ((u >> 63) != 0) != neg)
        return mp__error(MP_ERANGE, "pickle: an int of %zu bytes does not fit in 64 bits "
                                    "(mp_value ints are int64)", n);
    return push(d, mp_value_int((int64_t)u), 0);
}

static inline int op_binint(pdec *d, int n)
{
    if (d->end - d->p < n)
        return bad("truncated input");
    const unsigned char *p = d->p;
    d->p += n;
    int64_t i = n == 1   ? p[0]
                : n == 2 ? p[0] | p[1] << 8
                         : (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                                     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    return push(d, new_int(i), 0);
}

static int op_binfloat(pdec *d)
{
    int r = need(d, 8);
    if (r < 0)
        return r;
    uint64_t bits;
    memcpy(&bits, d->p, 8);
    bits = be64toh(bits);
    d->p += 8;
    double x;
    memcpy(&x, &bits, 8);
    return push(d, new_float(x), 0);
}

static int op_buffer(pdec *d, int lenbytes, mp_type type)
{
    size_t n = 0;
    if (lenbytes == 1 && d->p < d->end && *d->p < d->end - d->p) {
        n = *d->p++; /* the short forms, inline */
    } else {
        int r = rd_len(d, lenbytes, &n);
        if (r < 0)
            return r;
    }
    const char *s = (const char *)d->p;
    d->p += n;
    if (type == MP_STR) {
        if (!mp__utf8_valid_inline(s, n))
            return bad("a str that is not valid UTF-8");
        return push(d, mp__value_new_buffer(MP_STR, s, n), 0);
    }
    return push(d, mp__value_new_buffer(MP_BYTES, s, n), 0);
}

/* ---- containers ----------------------------------------------------------------------- */

/* Move the items above stack position `from` into a new list pushed in their place. */
static int collect(pdec *d, size_t from)
{
    mp_value *l = mp_value_list();
    if (!l)
        return mp_last_error_code();
    size_t n = d->sp - from;
    slot t = {l, 1};
    int r = mp__value_list_reserve(l, n);
    unsigned sub = 0;
    for (size_t i = 0; i < n; i++)
        sub = d->stack[from + i].depth > sub ? d->stack[from + i].depth : sub;
    if (r == 0)
        r = deepen(&t, sub);
    if (r < 0) {
        mp_value_free(l);
        return r;
    }
    for (size_t i = 0; i < n; i++)
        l->u.list.items[i] = d->stack[from + i].v;
    l->u.list.len = n;
    d->sp = from;
    d->stack[d->sp++] = t; /* room: n >= 1, or the push below */
    return 0;
}

static int op_tuple_n(pdec *d, size_t n)
{
    if (d->sp - fence(d) < n)
        return underflow();
    if (n == 0)
        return push(d, mp_value_list(), 1);
    return collect(d, d->sp - n);
}

static int op_tuple_mark(pdec *d)
{
    size_t m = 0;
    int r = pop_mark(d, &m);
    if (r < 0)
        return r;
    if (d->sp == m)
        return push(d, mp_value_list(), 1);
    return collect(d, m);
}

/* Append the items above `from` to the list (or set) at from - 1. */
static int append_from(pdec *d, size_t from, const char *op)
{
    if (from == 0 || from - 1 < fence(d))
        return underflow();
    slot *t = &d->stack[from - 1];
    int r = check_target(d, t, MP_LIST, op);
    unsigned sub = 0;
    for (size_t i = from; i < d->sp; i++)
        sub = d->stack[i].depth > sub ? d->stack[i].depth : sub;
    if (r == 0 && d->sp > from)
        r = deepen(t, sub);
    if (r == 0 && d->sp > from) {
        mp_value *l = t->v;
        size_t n = d->sp - from;
        /* the count is known here: one allocation of the list's size (or a doubling) */
        r = mp__value_list_reserve(l, l->u.list.len + n);
        if (r < 0)
            return r;
        for (size_t i = 0; i < n; i++)
            l->u.list.items[l->u.list.len + i] = d->stack[from + i].v;
        l->u.list.len += n;
        d->sp = from;
    }
    return r;
}

static int op_append(pdec *d)
{
    if (d->sp - fence(d) < 2)
        return underflow();
    return append_from(d, d->sp - 1, "APPEND");
}

static int op_appends(pdec *d, const char *op)
{
    size_t m = 0;
    int r = pop_mark(d, &m);
    return r < 0 ? r : append_from(d, m, op);
}

/* map[key] = val without freeing anything the memo may still point to. */
static int map_put(pdec *d, mp_value *map, mp_value *key, mp_value *val)
{
    long e = mp__value_map_index(map, key);
    if (e < 0) {
        int r = mp__value_map_add(map, key, val);
        if (r < 0) {
            mp_value_free(key);
            mp_value_free(val);
        }
        return r;
    }
    mp_value *old = map->u.map.vals[e];
    map->u.map.vals[e] = val;
    int r = bury(d, old);
    int rk = bury(d, key); /* each is buried or freed, whatever happened to the other */
    return r < 0 ? r : rk;
}

static int setitems_from(pdec *d, size_t from, const char *op)
{
    if (from == 0 || from - 1 < fence(d))
        return underflow();
    if ((d->sp - from) % 2)
        return mp__error(MP_EPROTO, "pickle: %s with an odd number of items", op);
    slot *t = &d->stack[from - 1];
    int r = check_target(d, t, MP_MAP, op);
    unsigned sub = 0;
    for (size_t i = from; i < d->sp; i++)
        sub = d->stack[i].depth > sub ? d->stack[i].depth : sub;
    if (r == 0 && d->sp > from)
        r = deepen(t, sub);
    size_t i = from;
    for (; i < d->sp && r == 0; i += 2) {
        r = map_put(d, t->v, d->stack[i].v, d->stack[i + 1].v);
        d->stack[i].v = d->stack[i + 1].v = NULL; /* adopted (or freed) by map_put */
    }
    for (size_t k = i; k < d->sp; k++) /* after a failure: the rest are still ours */
        mp_value_free(d->stack[k].v);
    d->sp = from;
    return r;
}

static int op_setitem(pdec *d)
{
    if (d->sp - fence(d) < 3)
        return underflow();
    return setitems_from(d, d->sp - 2, "SETITEM");
}

static int op_setitems(pdec *d)
{
    size_t m = 0;
    int r = pop_mark(d, &m);
    return r < 0 ? r : setitems_from(d, m, "SETITEMS");
}

/* DICT: MARK k v ... DICT builds a new dict from the items. */
static int op_dict(pdec *d)
{
    size_t m = 0;
    int r = pop_mark(d, &m);
    if (r < 0)
        return r;
    mp_value *map = mp_value_map();
    if (!map)
        return mp_last_error_code();
    /* insert the new dict below the items, then set them into it */
    r = push(d, map, 1);
    if (r < 0)
        return r;
    memmove(&d->stack[m + 1], &d->stack[m], (d->sp - 1 - m) * sizeof *d->stack);
    d->stack[m] = (slot){map, 1};
    return setitems_from(d, m + 1, "DICT");
}

/* LIST: MARK items LIST. */
static int op_list(pdec *d)
{
    size_t m = 0;
    int r = pop_mark(d, &m);
    if (r < 0)
        return r;
    mp_value *l = mp_value_list();
    if (!l)
        return mp_last_error_code();
    r = push(d, l, 1);
    if (r < 0)
        return r;
    memmove(&d->stack[m + 1], &d->stack[m], (d->sp - 1 - m) * sizeof *d->stack);
    d->stack[m] = (slot){l, 1};
    return append_from(d, m + 1, "LIST");
}

/* ---- memo ------------------------------------------------------------------------------ */

static int memo_put(pdec *d, uint64_t idx)
{
    slot *t = top(d);
    if (!t)
        return underflow();
    if (idx > d->input_len)
        return mp__error(MP_EPROTO, "pickle: memo index %llu (a %zu-byte pickle has fewer)",
                         (unsigned long long)idx, d->input_len);
    if (idx >= d->memo_hi) {
        int r = grow_array((void **)&d->memo, &d->memo_cap, (size_t)idx + 1, sizeof *d->memo,
                           d->memo0);
        if (r < 0)
            return r;
        /* Python's indices are dense: usually nothing between memo_hi and idx */
        memset(d->memo + d->memo_hi, 0, ((size_t)idx + 1 - d->memo_hi) * sizeof *d->memo);
        d->memo_hi = (size_t)idx + 1;
    }
    if (!d->memo[idx])
        d->memo_n++;
    d->memo[idx] = t->v;
    return 0;
}

/* Depth and size of a value (its depth is at most MP__PICKLE_MAX_DEPTH: only such
 * values are built). */
static size_t measure(const mp_value *v, unsigned *depth)
{
    size_t cost = sizeof *v;
    unsigned sub = 0, dd;
    *depth = 0;
    switch (v->type) {
    case MP_STR:
    case MP_BYTES:
        return cost + v->u.s.len + 1;
    case MP_LIST:
        for (size_t i = 0; i < v->u.list.len; i++) {
            cost += sizeof(mp_value *) + measure(v->u.list.items[i], &dd);
            sub = dd > sub ? dd : sub;
        }
        *depth = sub + 1;
        return cost;
    case MP_MAP:
        for (size_t i = 0; i < v->u.map.len; i++) {
            cost += 2 * sizeof(mp_value *) + measure(v->u.map.keys[i], &dd);
            sub = dd > sub ? dd : sub;
            cost += measure(v->u.map.vals[i], &dd);
            sub = dd > sub ? dd : sub;
        }
        *depth = sub + 1;
        return cost;
    default:
        return cost;
    }
}

static int push_copy(pdec *d, const mp_value *v)
{
    unsigned depth;
    size_t cost = measure(v, &depth);
    if (cost > d->budget)
        return mp__error(MP_EPROTO, "pickle: shared references expand beyond the decode "
                                    "limit (16 MiB + 16 bytes per input byte)");
    d->budget -= cost;
    int r = mark_copied(d, v);
    return r < 0 ? r : push(d, mp_value_copy(v), depth);
}

static int memo_get(pdec *d, uint64_t idx)
{
    if (idx >= d->memo_hi || !d->memo[idx])
        return mp__error(MP_EPROTO, "pickle: memo index %llu was never stored",
                         (unsigned long long)idx);
    return push_copy(d, d->memo[idx]);
}

/* PUT/GET with a decimal index and a newline (protocol 0 style, still accepted by every
 * unpickler). */
static int rd_decimal_line(pdec *d, uint64_t *out)
{
    const unsigned char *nl = memchr(d->p, '\n', (size_t)(d->end - d->p));
    if (!nl || nl == d->p || nl - d->p > 19)
        return bad("a bad decimal memo index");
    uint64_t v = 0;
    for (const unsigned char *q = d->p; q < nl; q++) {
        if (*q < '0' || *q > '9')
            return bad("a bad decimal memo index");
        v = v * 10 + (uint64_t)(*q - '0');
    }
    d->p = nl + 1;
    *out = v;
    return 0;
}

static int op_memo(pdec *d, unsigned char op)
{
    uint64_t idx = 0;
    int r = 0;
    switch (op) {
    case PK_BINPUT:
    case PK_BINGET:
        r = need(d, 1);
        idx = r < 0 ? 0 : d->p[0];
        d->p += r < 0 ? 0 : 1;
        break;
    case PK_LONG_BINPUT:
    case PK_LONG_BINGET:
        r = need(d, 4);
        idx = r < 0 ? 0 : rd_le(d->p, 4);
        d->p += r < 0 ? 0 : 4;
        break;
    case PK_MEMOIZE:
        idx = d->memo_n;
        break;
    default: /* PUT, GET */
        r = rd_decimal_line(d, &idx);
        break;
    }
    if (r < 0)
        return r;
    bool get = op == PK_BINGET || op == PK_LONG_BINGET || op == PK_GET;
    return get ? memo_get(d, idx) : memo_put(d, idx);
}

/* ---- the machine ---------------------------------------------------------------------- */

static const char *code_opcode_name(unsigned char op)
{
    switch (op) {
    case PK_GLOBAL: return "GLOBAL";
    case PK_STACK_GLOBAL: return "STACK_GLOBAL";
    case PK_REDUCE: return "REDUCE";
    case PK_BUILD: return "BUILD";
    case PK_INST: return "INST";
    case PK_OBJ: return "OBJ";
    case PK_NEWOBJ: return "NEWOBJ";
    case PK_NEWOBJ_EX: return "NEWOBJ_EX";
    case PK_EXT1: return "EXT1";
    case PK_EXT2: return "EXT2";
    case PK_EXT4: return "EXT4";
    case PK_PERSID: return "PERSID";
    case PK_BINPERSID: return "BINPERSID";
    case PK_NEXT_BUFFER: return "NEXT_BUFFER";
    case PK_READONLY_BUFFER: return "READONLY_BUFFER";
    default: return NULL;
    }
}

static int op_misc(pdec *d, unsigned char op)
{
    slot *t;
    size_t m = 0;
    switch (op) {
    case PK_MARK: {
        int r = grow_array((void **)&d->marks, &d->mcap, d->nmarks + 1, sizeof *d->marks,
                           d->marks0);
        if (r == 0)
            d->marks[d->nmarks++] = d->sp;
        return r;
    }
    case PK_POP:
        if ((t = top(d)) != NULL) {
            d->sp--;
            return bury(d, t->v);
        }
        return pop_mark(d, &m); /* Python's POP drops a mark when no item is above it */
    case PK_POP_MARK: {
        int r = pop_mark(d, &m);
        while (r == 0 && d->sp > m)
            r = bury(d, d->stack[--d->sp].v);
        return r;
    }
    case PK_DUP:
        if (!(t = top(d)))
            return underflow();
        return push_copy(d, t->v);
    case PK_FRAME: {
        size_t n = 0;
        return rd_len(d, 8, &n); /* frames only group opcodes: read straight through */
    }
    case PK_PROTO: {
        int r = need(d, 1);
        if (r == 0 && d->p[0] > 5)
            r = mp__error(MP_EPROTO, "pickle: protocol %d (at most 5 is known)", d->p[0]);
        d->p += r == 0 ? 1 : 0;
        return r;
    }
    default:
        break;
    }
    const char *code = code_opcode_name(op);
    if (code)
        return mp__error(MP_EPROTO, "pickle: opcode %s (0x%02x) names or calls code: refused "
                                    "(only data is decoded)", code, op);
    if (op == PK_INT || op == PK_LONG || op == PK_FLOAT || op == PK_STRING ||
        op == PK_UNICODE || op == PK_BINSTRING || op == PK_SHORT_BINSTRING)
        return mp__error(MP_EPROTO, "pickle: protocol 0/1 opcode '%c' is not supported (use "
                                    "protocol 2 or later)", op);
    return mp__error(MP_EPROTO, "pickle: unknown opcode 0x%02x", op);
}

static int step(pdec *d, unsigned char op)
{
    switch (op) {
    case PK_NONE: return push(d, mp__value_new_scalar(MP_NIL), 0);
    case PK_NEWTRUE: return push(d, new_bool(true), 0);
    case PK_NEWFALSE: return push(d, new_bool(false), 0);
    case PK_BININT: return op_binint(d, 4);
    case PK_BININT1: return op_binint(d, 1);
    case PK_BININT2: return op_binint(d, 2);
    case PK_LONG1: return op_long(d, 1);
    case PK_LONG4: {
        /* LONG4's length is signed: a negative one is an error in Python */
        int r = need(d, 4);
        if (r == 0 && (d->p[3] & 0x80))
            r = bad("LONG4 with a negative length");
        return r < 0 ? r : op_long(d, 4);
    }
    case PK_BINFLOAT: return op_binfloat(d);
    case PK_SHORT_BINUNICODE: return op_buffer(d, 1, MP_STR);
    case PK_BINUNICODE: return op_buffer(d, 4, MP_STR);
    case PK_BINUNICODE8: return op_buffer(d, 8, MP_STR);
    case PK_SHORT_BINBYTES: return op_buffer(d, 1, MP_BYTES);
    case PK_BINBYTES: return op_buffer(d, 4, MP_BYTES);
    case PK_BINBYTES8:
    case PK_BYTEARRAY8: return op_buffer(d, 8, MP_BYTES);
    case PK_EMPTY_LIST:
    case PK_EMPTY_SET:
    case PK_EMPTY_TUPLE: return push(d, mp__value_new_scalar(MP_LIST), 1);
    case PK_EMPTY_DICT: return push(d, mp__value_new_scalar(MP_MAP), 1);
    case PK_TUPLE1: return op_tuple_n(d, 1);
    case PK_TUPLE2: return op_tuple_n(d, 2);
    case PK_TUPLE3: return op_tuple_n(d, 3);
    case PK_TUPLE:
    case PK_FROZENSET: return op_tuple_mark(d);
    case PK_LIST: return op_list(d);
    case PK_DICT: return op_dict(d);
    case PK_APPEND: return op_append(d);
    case PK_APPENDS: return op_appends(d, "APPENDS");
    case PK_ADDITEMS: return op_appends(d, "ADDITEMS");
    case PK_SETITEM: return op_setitem(d);
    case PK_SETITEMS: return op_setitems(d);
    case PK_PUT:
    case PK_BINPUT:
    case PK_LONG_BINPUT:
    case PK_MEMOIZE:
    case PK_GET:
    case PK_BINGET:
    case PK_LONG_BINGET: return op_memo(d, op);
    default: return op_misc(d, op);
    }
}

static void pdec_free(pdec *d)
{
    for (size_t i = 0; i < d->sp; i++)
        mp_value_free(d->stack[i].v);
    for (size_t i = 0; i < d->ngrave; i++)
        mp_value_free(d->grave[i]);
    if (d->stack != d->stack0)
        free(d->stack);
    if (d->marks != d->marks0)
        free(d->marks);
    if (d->memo != d->memo0)
        free(d->memo);
    free(d->grave);
    free(d->copied);
}

/* The common scalar opcodes, with the input position and stack pointer in locals (not
 * reloaded from *d after every store): 0 and *handled, a code, or 0 and !*handled for
 * step(). Their checks are step()'s. */
static inline int fast_op(pdec *d, unsigned char op, const unsigned char **pp, size_t *spp,
                          bool *handled)
{
    const unsigned char *p = *pp;
    size_t left = (size_t)(d->end - p);
    mp_value *v;
    unsigned depth = 0;
    switch (op) {
    case PK_NONE:
        v = mp__value_new_scalar(MP_NIL);
        break;
    case PK_NEWTRUE:
    case PK_NEWFALSE:
        v = new_bool(op == PK_NEWTRUE);
        break;
    case PK_BININT1:
        if (left < 1)
            return bad("truncated input");
        v = new_int(p[0]);
        p += 1;
        break;
    case PK_BININT2:
        if (left < 2)
            return bad("truncated input");
        v = new_int(p[0] | p[1] << 8);
        p += 2;
        break;
    case PK_BININT:
        if (left < 4)
            return bad("truncated input");
        v = new_int((int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                              (uint32_t)p[3] << 24));
        p += 4;
        break;
    case PK_BINFLOAT: {
        if (left < 8)
            return bad("truncated input");
        uint64_t bits;
        memcpy(&bits, p, 8);
        bits = be64toh(bits);
        double x;
        memcpy(&x, &bits, 8);
        v = new_float(x);
        p += 8;
        break;
    }
    case PK_SHORT_BINUNICODE:
    case PK_SHORT_BINBYTES: {
        if (left < 1 || p[0] > left - 1) {
            *handled = false; /* step() words the error */
            return 0;
        }
        size_t n = p[0];
        const char *str = (const char *)p + 1;
        p += 1 + n;
        if (op == PK_SHORT_BINUNICODE && !mp__utf8_valid_inline(str, n))
            return bad("a str that is not valid UTF-8");
        v = mp__value_new_buffer(op == PK_SHORT_BINUNICODE ? MP_STR : MP_BYTES, str, n);
        break;
    }
    case PK_EMPTY_LIST:
    case PK_EMPTY_TUPLE:
    case PK_EMPTY_SET:
        v = mp__value_new_scalar(MP_LIST);
        depth = 1;
        break;
    case PK_EMPTY_DICT:
        v = mp__value_new_scalar(MP_MAP);
        depth = 1;
        break;
    default:
        *handled = false;
        return 0;
    }
    *handled = true;
    *pp = p;
    if (!v || *spp == d->scap) {
        d->sp = *spp;
        int r = push_grow(d, v, depth);
        *spp = d->sp;
        return r;
    }
    d->stack[(*spp)++] = (slot){v, depth};
    return 0;
}

static int run(pdec *d, mp_value **out)
{
    const unsigned char *p = d->p;
    size_t sp = d->sp;
    int r = 0;
    while (p < d->end) {
        unsigned char op = *p++;
        if (op == PK_STOP) {
            d->p = p;
            d->sp = sp;
            if (d->p != d->end)
                return mp__error(MP_EPROTO, "pickle: %zu bytes after STOP",
                                 (size_t)(d->end - d->p));
            if (d->sp != 1 || d->nmarks)
                return mp__error(MP_EPROTO, "pickle: STOP with %zu items and %zu marks on the "
                                            "stack (1 item expected)", d->sp, d->nmarks);
            *out = d->stack[--d->sp].v;
            return 0;
        }
        bool handled = false;
        r = fast_op(d, op, &p, &sp, &handled);
        if (!handled && r == 0) {
            d->p = p;
            d->sp = sp;
            r = step(d, op);
            p = d->p;
            sp = d->sp;
        }
        if (r < 0)
            break;
    }
    d->p = p;
    d->sp = sp; /* what is on the stack is freed by pdec_free */
    return r < 0 ? r : bad("truncated input (no STOP)");
}

int mp_value_unpickle(const void *buf, size_t len, mp_value **out)
{
    if (!out)
        return mp__error(MP_EINVAL, "mp_value_unpickle: NULL output pointer");
    *out = NULL;
    if (!buf && len)
        return mp__error(MP_EINVAL, "mp_value_unpickle: NULL buffer of %zu bytes", len);
    if (len == 0)
        return bad("empty input");
    pdec d; /* not an initialiser: the inline arrays stay uninitialised */
    memset(&d, 0, offsetof(pdec, stack0));
    d.p = buf;
    d.end = (const unsigned char *)buf + len;
    d.input_len = len;
    d.budget = ((size_t)16 << 20) + (len < SIZE_MAX / 32 ? 16 * len : SIZE_MAX / 2);
    d.stack = d.stack0;
    d.scap = STACK0;
    d.marks = d.marks0;
    d.mcap = MARKS0;
    d.memo = d.memo0;
    d.memo_cap = MEMO0;
    int r = run(&d, out);
    pdec_free(&d);
    return r;
}
