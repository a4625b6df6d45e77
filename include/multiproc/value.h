/**
 * @file value.h
 * @brief Dynamic values: what crosses processes when the data is not plain bytes.
 *
 * An `mp_value` is nil, bool, int, float, str, bytes, list, map (keys of any type,
 * as in Python's `{0.25: None, 1: '1', '2': 2}`) or a handle to a library object
 * (a connection end, a queue, a lock, shared memory). Values are built and read with
 * Jansson-style format strings, printed the way Python prints the same data, and
 * encoded as MessagePack with msgpack-c.
 *
 * Python mapping: pickling -> mp_value_encode/decode; None -> nil; tuples -> lists.
 * Python's own pickles (to talk to Python programs) -> mp_value_pickle/unpickle.
 *
 * Ownership: a function returning `mp_value *` gives the caller a value to free with
 * mp_value_free(). Container setters *adopt* the item passed in (even on failure).
 * Getters returning `mp_value *` (list items, map entries) return a borrowed pointer
 * valid while the container lives.
 *
 * Handles: a module makes its objects passable by registering an `mp_kind`.
 * mp_value_handle() wraps an object *borrowed* from the caller (freeing the value does
 * not free the object). A decoded handle value *owns* the imported object: freeing the
 * value releases it, unless mp_value_take_handle() took it out first.
 *
 * Thread safety: a value may be read from several threads; modifying it needs
 * exclusive access. Kind registration is done by library constructors before main
 * (mp_kind_register/mp_kind_find themselves are thread-safe).
 *
 * Fork behaviour: values are plain heap memory, copied by fork like any other; an
 * owned handle in both parent and child is released in each (the kind's release
 * closes that process's copy of the fds). spawn/forkserver children receive values
 * through mp_value_encode/decode.
 *
 * Errors: constructors return NULL with the code in mp_last_error_code() (-ENOMEM,
 * MP_EINVAL for NULL input); int functions return 0 or a negative code.
 */
#ifndef MULTIPROC_VALUE_H
#define MULTIPROC_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** The type of a value. */
typedef enum mp_type {
    MP_NIL,
    MP_BOOL,
    MP_INT,
    MP_FLOAT,
    MP_STR,
    MP_BYTES,
    MP_LIST,
    MP_MAP,
    MP_HANDLE
} mp_type;

/** A dynamic value (see the file comment); free with mp_value_free(). */
typedef struct mp_value mp_value;

/** At most this many fds travel with one handle. */
#define MP_KIND_MAX_FDS 8

/**
 * A kind of library object that can travel inside a value to another process,
 * under every start method. The kind describes the object as bytes plus fds; the
 * receiving process rebuilds it. Registered once per process by the module that owns
 * the kind (a constructor).
 *
 * Each module exports its kinds as data, `extern const mp_kind mp_kind_<x>` (mp_kind_lock,
 * mp_kind_queue, mp_kind_connection, ...), and a handle is matched by that pointer: the
 * `h` format code and mp_value_get_handle compare `&mp_kind_<x>`. The name is only what
 * crosses processes: decoding looks it up in the registry, which gives back the same
 * pointer.
 */
typedef struct mp_kind {
    const char *name; /**< unique, e.g. "connection", "queue", "lock" */
    /**
     * Describe @p obj: set *data (malloc'd, the caller frees it) and *len, and copy
     * up to MP_KIND_MAX_FDS fds (still owned by the object) into @p fds, *nfds.
     * Returns 0 or a negative code.
     */
    int (*export_obj)(void *obj, void **data, size_t *len, int *fds, size_t *nfds);
    /**
     * Rebuild an object from what export_obj produced, in the receiving process.
     * Adopts @p fds (closes them on failure). Returns 0 or a negative code.
     */
    int (*import_obj)(const void *data, size_t len, int *fds, size_t nfds, void **obj);
    /** Release an imported object (called by mp_value_free on an owned handle). */
    void (*release_obj)(void *obj);
} mp_kind;

/**
 * Register @p kind (the struct must outlive the process), from a constructor with
 * priority 200 (`__attribute__((constructor(200)))`) so the spawn-child bootstrap,
 * which runs later, finds every library kind. Returns 0; -EEXIST if the name is
 * taken; MP_EINVAL without name/export/import; -ENOSPC past 64 kinds.
 */
int mp_kind_register(const mp_kind *kind);
/** The registered kind called @p name, or NULL. Thread-safe. */
const mp_kind *mp_kind_find(const char *name);

/* ---- construction (NULL with -ENOMEM in mp_last_error on allocation failure) ---- */
/** A new nil (Python None). Free with mp_value_free. */
mp_value *mp_value_nil(void);
/** A new bool. */
mp_value *mp_value_bool(bool b);
/** A new int (64-bit signed). */
mp_value *mp_value_int(int64_t i);
/** A new float (double; printed like Python's repr). */
mp_value *mp_value_float(double d);
/** A new str copying a NUL-terminated UTF-8 string; NULL -> NULL with MP_EINVAL. */
mp_value *mp_value_str(const char *s);
/** A new str copying @p len bytes (may hold NULs; kept NUL-terminated). */
mp_value *mp_value_strn(const char *s, size_t len);
/** New bytes copying @p len bytes of @p data (NULL only with len 0). */
mp_value *mp_value_bytes(const void *data, size_t len);
/** A new empty list. */
mp_value *mp_value_list(void);
/** A new empty map (keys of any type, insertion order kept). */
mp_value *mp_value_map(void);
/** Wrap a library object, borrowed: the value does not free it. NULL kind -> NULL. */
mp_value *mp_value_handle(const mp_kind *kind, void *obj);

/** Append @p item (adopted, freed on failure) to @p list. MP_ETYPE if not a list,
 * MP_EINVAL for a NULL item, -ENOMEM. */
int mp_value_list_append(mp_value *list, mp_value *item);
/** Set map[@p key] = @p val (both adopted, freed on failure). An equal key (1 and
 * 1.0 are equal) keeps its first key object and gets the new value, as in Python.
 * MP_ETYPE if not a map, MP_EINVAL for NULL key/val, -ENOMEM. Average O(1). */
int mp_value_map_set(mp_value *map, mp_value *key, mp_value *val);
/** map[@p key] = @p val (val adopted) with a string key (copied). */
int mp_value_map_set_str(mp_value *map, const char *key, mp_value *val);

/* ---- reuse: setting a value to new content -------------------------------------- */
/*
 * For loops that move many values (a producer putting items, mp_queue_get_into and
 * mp_queue_get_many_into decoding them): one value set again and again instead of a new
 * one and a free per item. The value must be the caller's own, not a map's key (its hash
 * would go stale). What it held is released first (a list's or map's items, an owned
 * handle's object): as mp_value_free would, but the value itself stays.
 */
/** Make @p v nil, in place (the pointer stays valid). 0, or MP_EINVAL for NULL. */
int mp_value_set_nil(mp_value *v);
/** Make @p v the bool @p b, in place. 0, or MP_EINVAL for NULL. */
int mp_value_set_bool(mp_value *v, bool b);
/** Make @p v the int @p i, in place. 0, or MP_EINVAL for NULL. */
int mp_value_set_int(mp_value *v, int64_t i);
/** Make @p v the float @p d, in place. 0, or MP_EINVAL for NULL. */
int mp_value_set_float(mp_value *v, double d);
/**
 * Make *@p v bytes copying @p len bytes of @p data (NULL only with len 0; it may point
 * into *v's own bytes). In place when they fit the memory *v already has (a value keeps
 * its bytes in its own allocation: a value made by a constructor has room for 15, a str
 * or bytes value for as many as it held); otherwise *v is freed and replaced by a new value
 * (a value taken from a list or map must not be passed then). *v NULL: a new value.
 * 0, MP_EINVAL (NULL v, NULL data with len > 0) or -ENOMEM (then *v is unchanged).
 */
int mp_value_set_bytes(mp_value **v, const void *data, size_t len);
/** mp_value_set_bytes making a str (@p len bytes of @p s, kept NUL-terminated). */
int mp_value_set_strn(mp_value **v, const char *s, size_t len);

/* ---- reading ------------------------------------------------------------------- */
/** The type of @p v (MP_NIL for NULL). */
mp_type mp_value_type(const mp_value *v);
/** Name of a type: "nil", "bool", ... */
const char *mp_type_name(mp_type t);
/** Items in a list or map, bytes in str/bytes; 0 otherwise. */
size_t mp_value_len(const mp_value *v);
bool mp_value_get_bool(const mp_value *v);      /**< false if not a bool */
int64_t mp_value_get_int(const mp_value *v);    /**< 0 if not an int */
double mp_value_get_float(const mp_value *v);   /**< ints convert; 0 otherwise */
/** The string (NUL-terminated; embedded NULs allowed with *len) or NULL. Borrowed. */
const char *mp_value_get_str(const mp_value *v, size_t *len);
/** The bytes or NULL. Borrowed. */
const void *mp_value_get_bytes(const mp_value *v, size_t *len);
/** Borrowed item @p i of a list, or NULL. */
mp_value *mp_value_list_get(const mp_value *v, size_t i);
/** Borrowed key / value of entry @p i of a map (insertion order), or NULL. */
mp_value *mp_value_map_key(const mp_value *v, size_t i);
/** Borrowed value of entry @p i of a map, or NULL. */
mp_value *mp_value_map_val(const mp_value *v, size_t i);
/** Borrowed value for a key equal to @p key, or NULL. */
mp_value *mp_value_map_get(const mp_value *map, const mp_value *key);
/** Borrowed value for the str key @p key, or NULL. */
mp_value *mp_value_map_get_str(const mp_value *map, const char *key);
/** The object behind a handle (borrowed) and its kind, or NULL if not a handle. */
void *mp_value_get_handle(const mp_value *v, const mp_kind **kind);
/** Take ownership of an imported handle's object out of the value (the value keeps
 * a borrowed pointer). NULL if not a handle. */
void *mp_value_take_handle(mp_value *v, const mp_kind **kind);

/* ---- format strings -------------------------------------------------------------- */
/**
 * Build a value from a format string. Codes: `n` nil, `b` bool (int arg), `i` int,
 * `I` int64_t, `f` double, `s` const char * (NULL -> nil), `s#` string + size_t length,
 * `y#` bytes + size_t length, `o` mp_value * (adopted), `O` mp_value * (copied),
 * `h` handle: const mp_kind * + void * (borrowed), `[...]` list, `{...}` map of
 * alternating keys and values. Whitespace, ',' and ':' are ignored.
 * Example: mp_value_pack("[i n s]", 42, "hello") -> [42, None, 'hello'].
 * Returns NULL on a bad format (MP_EINVAL in mp_last_error, naming the offset).
 * `o` values consumed before an error are freed; later varargs are not looked at.
 */
mp_value *mp_value_pack(const char *fmt, ...);
/**
 * Read a value with a format string: `i` int *, `I` int64_t *, `f` double *,
 * `b` bool *, `s` const char ** (borrowed), `s#`/`y#` + size_t *, `n` (checks nil),
 * `o` mp_value ** (borrowed), `h` const mp_kind * expected + void ** out,
 * `[...]` list (exact length), `{s:...}` map lookup by string key,
 * `?` makes the next item optional in a map (`{s?i}`: a missing key leaves the
 * output untouched). `f` also accepts an int. Returns 0, MP_ETYPE (wrong type or list
 * length), MP_ENOTFOUND (missing key), MP_ERANGE (`i` of an int that does not fit an
 * int) or MP_EINVAL (bad format), with a message naming the path
 * ("item 2: expected str, got int", "item 3 / key 'pi': expected str, got float").
 * Outputs before the failing item may have been written.
 */
int mp_value_unpack(const mp_value *v, const char *fmt, ...);

/* ---- whole values ---------------------------------------------------------------- */
/** Python repr: `[42, None, 'hello']`, `{0.25: None, 1: '1', '2': 2}`, bytes as `b'...'`
 * with Python's hex escapes, True/False, floats as Python's shortest round-trip repr
 * (`0.1`, `1e+16`, `inf`), strings with Python's quoting and escapes; a handle as
 * `<kind object at 0x...>`. Returns a malloc'd string (mp_free) or NULL (-ENOMEM). */
char *mp_value_repr(const mp_value *v);
/** Total order (-1, 0, 1): by type first (nil < bool < numbers < str < bytes <
 * list < map < handle), then by content. Numbers compare exactly by value across int
 * and float (NaN sorts after every number and equals NaN). Maps compare as sets of
 * entries: insertion order does not matter. Handles compare by kind and object. */
int mp_value_compare(const mp_value *a, const mp_value *b);
/** mp_value_compare(a, b) == 0 (faster for maps). */
bool mp_value_equal(const mp_value *a, const mp_value *b);
/** Deep copy (handles stay borrowed pointers to the same objects). */
mp_value *mp_value_copy(const mp_value *v);
/** Free a value and everything in it; releases owned handles. NULL is fine. */
void mp_value_free(mp_value *v);

/* ---- encoding -------------------------------------------------------------------- */
/**
 * Encode as MessagePack into a malloc'd buffer (*buf, *len; free with mp_free).
 * Handles are exported through their kind; their fds are appended to @p fds
 * (borrowed from the objects: send them before the objects go away) and counted in
 * *nfds, at most @p max_fds (-E2BIG beyond). Pass fds = NULL when the value holds no
 * handles (a handle is then MP_EUNSUPPORTED). A handle is MessagePack ext type 1
 * whose payload is the MessagePack array [kind name, kind bytes (bin), [fd index...]].
 * Nesting deeper than 512 levels is MP_EINVAL (decode would refuse it).
 */
int mp_value_encode(const mp_value *v, char **buf, size_t *len, int *fds, size_t max_fds,
                    size_t *nfds);
/**
 * Decode MessagePack bytes (untrusted: a malformed or truncated buffer, trailing
 * bytes, nesting deeper than 512, a bad fd index is MP_EPROTO, never a crash;
 * allocation is bounded by the input size). An unsigned integer above INT64_MAX is
 * MP_ERANGE; a handle of an unregistered kind MP_ENOTFOUND; a kind's import error
 * is returned as is. Handles are imported with @p fds (adopted: every fd is either
 * owned by an imported object or closed, on success and on every error). On success
 * *out is a new value (mp_value_free), on failure NULL.
 */
int mp_value_decode(const void *buf, size_t len, int *fds, size_t nfds, mp_value **out);

/* ---- pickle (Python's own format, for talking to Python programs) ----------------- */
/** The protocol mp_value_pickle writes when asked for 0: 4, what Python 3.8+ writes by
 * default (pickle.DEFAULT_PROTOCOL) and reads back. */
#define MP_PICKLE_DEFAULT_PROTOCOL 4
/**
 * Encode as a pickle of protocol @p protocol (4 or 5; 0 means 4) into a malloc'd buffer
 * (*buf, *len; free with mp_free) that Python's pickle.loads reads back to the equal
 * object: nil -> None, bool, int, float, str, bytes, list, map -> dict (a list used as a
 * map key becomes a tuple, since Python keys must be hashable). Only data opcodes are
 * written. Errors: MP_EUNSUPPORTED for a handle or a map used as a map key, MP_EINVAL for
 * a str that is not UTF-8 or nesting deeper than 512, -ENOMEM. See docs/python.md.
 */
int mp_value_pickle(const mp_value *v, int protocol, char **buf, size_t *len);
/**
 * Decode a pickle (protocols 2 to 5; untrusted input) holding only data: None, bool, int,
 * float, str, bytes, bytearray (-> bytes), tuple, list, set and frozenset (-> list), dict,
 * with memo references (shared objects become copies). Every opcode that names or calls
 * code (GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4,
 * PERSID, BINPERSID, out-of-band buffers) is MP_EPROTO naming the opcode: nothing is ever
 * run. Malformed, truncated or hostile input (a length beyond the input, nesting deeper
 * than 512, a recursive structure, trailing bytes after STOP, shared references expanding
 * beyond 16 MiB + 16 bytes per input byte) is MP_EPROTO, never a crash or an allocation
 * larger than the input warrants; an int outside int64 is MP_ERANGE. On success *out is a
 * new value (mp_value_free), on failure NULL.
 */
int mp_value_unpickle(const void *buf, size_t len, mp_value **out);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
