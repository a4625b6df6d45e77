/**
 * @file shared.h
 * @brief Typed shared memory between processes: Value, Array, raw variants and any C
 *        struct (Python's multiprocessing.Value / Array / RawValue / RawArray and
 *        sharedctypes), plus named SharedMemory and ShareableList
 *        (multiprocessing.shared_memory).
 *
 * Python mapping:
 * - `Value('d', 0.0)` -> `double x = 0; mp_shared_value_new('d', &x, NULL)`;
 *   `v.value` -> `*(double *)mp_shared_ptr(v)` (no lock) or mp_shared_get_float() /
 *   mp_shared_set_float() (under the lock, as Python's property does).
 * - `Array('i', range(10))` -> mp_shared_array_new('i', 10, initial, NULL);
 *   `arr[i]` -> `((int *)mp_shared_ptr(a))[i]`; `arr[:]` -> mp_shared_read().
 * - `lock=False` / RawValue / RawArray -> `opts.raw = true`;
 *   `lock=some_lock` -> `opts.lock`; `get_lock()` -> mp_shared_get_lock().
 * - sharedctypes with a ctypes Structure -> mp_shared_struct_new(sizeof(struct s), ...).
 * - `sharedctypes.copy(obj)` -> mp_shared_copy() (a raw copy);
 *   `sharedctypes.synchronized(obj, lock)` -> mp_shared_synchronized() (a handle with a
 *   lock on a raw object's memory).
 * - `Array('c', ...)`: `.value` -> mp_shared_chars_value() / mp_shared_chars_set_value()
 *   (stops at the first NUL; setting adds one when there is room); `.raw` ->
 *   mp_shared_chars_raw() / mp_shared_chars_set_raw() (every byte).
 * - `SharedMemory(name, create, size)` -> mp_shm_create() / mp_shm_attach();
 *   `.buf` -> mp_shm_buf(), `.close()` -> mp_shm_close(), `.unlink()` -> mp_shm_unlink().
 * - `ShareableList([...])` -> mp_sl_create() with mp_sl_item items.
 *
 * Typecodes (Python's array module, Linux x86-64 sizes): b int8, B uint8, h int16,
 * H uint16, i int32, I uint32, l int64, L uint64, q int64, Q uint64, f float,
 * d double, c char (Python's c_char).
 *
 * Locks: a Value/Array made with a lock carries an RLock (Python's default) stored in
 * its own segment; it is robust (see sync.h): a process killed while holding it does
 * not block the others, the next acquirer gets MP_EOWNERDEAD.
 *
 * Where we differ from Python (on purpose): storing an out-of-range integer is
 * MP_ERANGE instead of silently wrapping; attaching to a SharedMemory never registers
 * it with the resource tracker (only its creator does), so a process that merely
 * attached cannot get it unlinked behind the creator's back; ShareableList keeps
 * trailing NUL bytes of str/bytes items and counts UTF-8 lengths in bytes.
 *
 * Passing to other processes: under fork, handles are inherited. Under every start
 * method they travel inside process arguments (`mp_value_pack("[h]",
 * &mp_kind_shared, v)`; kinds mp_kind_shared, mp_kind_shm, mp_kind_sl). A named
 * segment can also be attached by name from any process.
 *
 * Thread safety: the data is plain shared memory - use the lock (or atomics) to
 * coordinate; the get/set helpers take the lock when there is one. A handle must not
 * be freed while another thread uses it. Fork: mappings are inherited (MAP_SHARED).
 */
#ifndef MULTIPROC_SHARED_H
#define MULTIPROC_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "multiproc/sync.h"
#include "multiproc/value.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/* ---- Value, Array, raw variants, structs ----------------------------------------- */

/** A block of typed shared memory (a Value is an Array of length 1). */
typedef struct mp_shared mp_shared;

/** Options; all-zero means "with a new RLock". */
typedef struct mp_shared_opts {
    bool raw;      /**< no lock at all (RawValue / RawArray / lock=False) */
    mp_lock *lock; /**< use this Lock/RLock (borrowed; the object keeps a reference) */
} mp_shared_opts;

/**
 * A shared value of type @p typecode, initialised from @p initial (a pointer to one
 * item of that C type; NULL means zero). NULL on failure: MP_EINVAL for an unknown
 * typecode. Free with mp_shared_free().
 */
mp_shared *mp_shared_value_new(char typecode, const void *initial, const mp_shared_opts *opts);

/**
 * A shared array of @p length items of type @p typecode (at least 1), initialised
 * from @p initial (length items; NULL means zeros).
 */
mp_shared *mp_shared_array_new(char typecode, size_t length, const void *initial,
                               const mp_shared_opts *opts);

/** RawValue: mp_shared_value_new without a lock. NULL on failure. */
mp_shared *mp_raw_value_new(char typecode, const void *initial);
/** RawArray: mp_shared_array_new without a lock. NULL on failure. */
mp_shared *mp_raw_array_new(char typecode, size_t length, const void *initial);

/**
 * Any C struct (or byte block) of @p size bytes in shared memory, copied from
 * @p initial (NULL: zeros). Its typecode is 0 and its length 1. Put only plain data
 * in it (no pointers: other processes map it at other addresses).
 */
mp_shared *mp_shared_struct_new(size_t size, const void *initial, const mp_shared_opts *opts);

/** The data (borrowed, valid while the handle lives). Aligned to 64 bytes, except
 * data of at most 8 bytes (a Value), which sits next to its lock in one cache line
 * (aligned to 8). */
void *mp_shared_ptr(const mp_shared *s);
/** Number of items (1 for a Value or struct). */
size_t mp_shared_len(const mp_shared *s);
/** Bytes per item. */
size_t mp_shared_itemsize(const mp_shared *s);
/** The typecode ('d', 'i', ...), 0 for a struct. */
char mp_shared_typecode(const mp_shared *s);
/** Bytes per item for @p typecode, 0 if unknown. */
size_t mp_typecode_size(char typecode);

/** The lock (borrowed), NULL for a raw object (Python's get_lock()). */
mp_lock *mp_shared_get_lock(const mp_shared *s);
/** Acquire the object's lock (0 with no effect for a raw object); codes as
 * mp_lock_acquire, MP_EOWNERDEAD included. */
int mp_shared_acquire(mp_shared *s, double timeout);
/** Release the object's lock (0 with no effect for a raw object); codes as
 * mp_lock_release. */
int mp_shared_release(mp_shared *s);

/**
 * Read item @p i as an integer (floats are truncated), under the lock if any.
 * Returns 0 for an index out of range (MP_ERANGE recorded).
 */
int64_t mp_shared_get_int(mp_shared *s, size_t i);
/** Read item @p i as a double, under the lock if any (0 if out of range). */
double mp_shared_get_float(mp_shared *s, size_t i);
/** Store @p v in item @p i, under the lock if any. MP_ERANGE for an index out of range
 * or a value the type cannot hold, MP_ETYPE for a struct. */
int mp_shared_set_int(mp_shared *s, size_t i, int64_t v);
/** Store @p v in item @p i (float types only; MP_ETYPE for integer types, as Python's
 * TypeError). */
int mp_shared_set_float(mp_shared *s, size_t i, double v);
/** Copy @p n items from @p start into @p out under the lock (Python's arr[a:b]).
 * MP_ERANGE if the range does not fit. */
int mp_shared_read(mp_shared *s, size_t start, size_t n, void *out);
/** Copy @p n items from @p in to @p start under the lock. */
int mp_shared_write(mp_shared *s, size_t start, size_t n, const void *in);

/**
 * sharedctypes.copy: a new raw object (no lock) with the same typecode, length and
 * contents (read under @p s's lock if it has one). NULL on failure.
 */
mp_shared *mp_shared_copy(mp_shared *s);
/**
 * sharedctypes.synchronized: a new handle on a raw object's memory that carries a lock
 * (@p lock, referenced; NULL: a new RLock). The get/set/read/write helpers of the new
 * handle take it; the raw handle stays lock-free (free each handle on its own). The
 * lock travels with the handle to other processes. NULL with MP_EINVAL if @p s already
 * has a lock ("object already synchronized", as Python's assertion).
 */
mp_shared *mp_shared_synchronized(mp_shared *s, mp_lock *lock);

/**
 * Array('c').value: the bytes up to the first NUL (all of them if there is none), under
 * the lock. Returns a malloc'd copy with a NUL after them (mp_free) and stores their
 * count in @p len (may be NULL). NULL with MP_ETYPE for another typecode.
 */
char *mp_shared_chars_value(mp_shared *s, size_t *len);
/** Array('c').raw: every byte of the array, as mp_shared_chars_value (a NUL added after
 * them; *len is the array's length). */
char *mp_shared_chars_raw(mp_shared *s, size_t *len);
/** Set Array('c').value: copy @p len bytes and a NUL after them when there is room.
 * MP_ERANGE "byte string too long" beyond the array's length (Python's ValueError),
 * MP_ETYPE for another typecode. */
int mp_shared_chars_set_value(mp_shared *s, const void *bytes, size_t len);
/** Set Array('c').raw: copy @p len bytes; the rest of the array is left as it was. */
int mp_shared_chars_set_raw(mp_shared *s, const void *bytes, size_t len);

/** Free this process's handle; the memory lives on while other processes hold it.
 * NULL is fine. */
void mp_shared_free(mp_shared *s);

/* ---- SharedMemory (named, in /dev/shm) ------------------------------------------------ */

/** A named shared memory block. */
typedef struct mp_shm mp_shm;

/** Options for mp_shm_create; all-zero means defaults. */
typedef struct mp_shm_opts {
    /** Do not register the segment with the resource tracker: it is deliberately kept
     * when the program ends (Python 3.13's track=False). */
    bool untracked;
    unsigned mode; /**< permission bits, 0: 0600 */
} mp_shm_opts;

/**
 * Create a new named segment of @p size bytes (> 0; zero-filled). @p name NULL
 * generates a unique one ("mp-<pid>-<random>"); the environment variable
 * MULTIPROC_SHM_PREFIX (1..64 of [A-Za-z0-9._], read at each creation, ignored in
 * setuid programs or when invalid) replaces "mp", so one program and its children can
 * tell their generated segments from everyone else's (the test suite gives each test
 * process its own). Otherwise a leading '/' is optional.
 * -EEXIST if the name exists, MP_EINVAL for size 0 or a bad name. The segment is
 * registered with the resource tracker: if every process of the program dies before
 * mp_shm_unlink(), it is unlinked and a warning is printed. NULL on failure.
 */
mp_shm *mp_shm_create(const char *name, size_t size, const mp_shm_opts *opts);
/** Attach to an existing segment by name (-ENOENT if none). NULL on failure. */
mp_shm *mp_shm_attach(const char *name);
/** The name, without a leading '/' (Python's .name). */
const char *mp_shm_name(const mp_shm *m);
/** The mapped memory (Python's .buf); valid until mp_shm_close(). */
void *mp_shm_buf(const mp_shm *m);
/** The size in bytes (of the segment, as mapped). */
size_t mp_shm_size(const mp_shm *m);
/** Unmap and close this handle (the segment stays; others may still use it). Frees
 * the handle. NULL is fine. */
void mp_shm_close(mp_shm *m);
/**
 * Remove the name (the memory lives on while mapped). Call it once, from one process
 * (-ENOENT if it is already gone). Unregisters it from the tracker.
 */
int mp_shm_unlink(mp_shm *m);

/* ---- ShareableList -------------------------------------------------------------------- */

/** The type of a ShareableList item. */
typedef enum mp_sl_type {
    MP_SL_NONE,
    MP_SL_INT,
    MP_SL_FLOAT,
    MP_SL_BOOL,
    MP_SL_STR,   /**< UTF-8 text (trailing NULs are lost, as in Python) */
    MP_SL_BYTES  /**< bytes (trailing NULs are lost, as in Python) */
} mp_sl_type;

/** One item, in or out. For STR/BYTES, data/len point into the list's memory when read
 * (borrowed: copy before the slot changes). */
typedef struct mp_sl_item {
    mp_sl_type type;  /**< which of the fields below holds the item */
    int64_t i;        /**< MP_SL_INT */
    double f;         /**< MP_SL_FLOAT */
    bool b;           /**< MP_SL_BOOL */
    const char *data; /**< MP_SL_STR / MP_SL_BYTES */
    size_t len;       /**< bytes of data */
} mp_sl_item;

/** An int item. */
mp_sl_item mp_sl_int(int64_t i);
/** A float item. */
mp_sl_item mp_sl_float(double f);
/** A bool item. */
mp_sl_item mp_sl_bool(bool b);
/** A None item. */
mp_sl_item mp_sl_none(void);
/** A str item from a NUL-terminated UTF-8 string (borrowed until the list is built or
 * the item is set). */
mp_sl_item mp_sl_str(const char *s);
/** A bytes item of @p len bytes (borrowed until the list is built or the item is set). */
mp_sl_item mp_sl_bytes(const void *data, size_t len);

/** A fixed-length list in a named SharedMemory block. */
typedef struct mp_sl mp_sl;

/**
 * A new list holding copies of @p items (n may be 0), in a new segment named @p name
 * (NULL: generated), laid out exactly as Python's ShareableList: Python attaches to it
 * with `ShareableList(name=...)`, and mp_sl_attach reads a list Python made. Each slot
 * keeps the capacity of its initial item (8 bytes; a str/bytes of len bytes gets
 * 8 * (len / 8 + 1), Python's rule): a later longer str/bytes is MP_ERANGE. A str/bytes
 * item holds at most 9999991 bytes (Python's 8-character format field): MP_ERANGE.
 */
mp_sl *mp_sl_create(const mp_sl_item *items, size_t n, const char *name,
                    const mp_shm_opts *opts);
/** Attach to an existing list by name (made by mp_sl_create or by Python). MP_EPROTO if
 * the segment's length and offsets do not describe a list that fits it. */
mp_sl *mp_sl_attach(const char *name);
/** Number of items. */
size_t mp_sl_len(const mp_sl *l);
/** Read item @p i (negative counts from the end, as in Python). MP_ERANGE if out of
 * range; MP_EPROTO if the item's format or type code is not one Python writes. */
int mp_sl_get(const mp_sl *l, long i, mp_sl_item *out);
/** Replace item @p i (any type that fits the slot). MP_ERANGE if out of range or too
 * long for the slot ("item exceeds available storage"). */
int mp_sl_set(mp_sl *l, long i, const mp_sl_item *item);
/** Index of the first item equal to @p item, or MP_ENOTFOUND. Ints and floats compare
 * by value; bools are not ints here. */
int mp_sl_index(const mp_sl *l, const mp_sl_item *item);
/** Number of items equal to @p item. */
int mp_sl_count(const mp_sl *l, const mp_sl_item *item);
/** The underlying SharedMemory (borrowed): name, unlink. */
mp_shm *mp_sl_shm(const mp_sl *l);
/** Unmap and free the handle (mp_shm_close of the block). NULL is fine. */
void mp_sl_close(mp_sl *l);

/** Kinds for passing handles inside values. */
extern const mp_kind mp_kind_shared; /**< mp_shared * */
extern const mp_kind mp_kind_shm;    /**< mp_shm * (travels by fd and name) */
extern const mp_kind mp_kind_sl;     /**< mp_sl * */

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
