/**
 * @file connection.h
 * @brief Message connections between processes: Pipe, Listener/Client, wait().
 *
 * Python mapping (multiprocessing.connection):
 *   - `Pipe(duplex)`                  -> mp_pipe(duplex, &a, &b)
 *   - `conn.send(obj)` / `recv()`     -> mp_connection_send / mp_connection_recv (mp_value,
 *                                        MessagePack between multiproc programs; with the
 *                                        pickle codec, Python objects: see mp_codec)
 *   - `send_bytes(buf, offset, size)` -> mp_connection_send_bytes
 *   - `recv_bytes(maxlength)`         -> mp_connection_recv_bytes
 *   - `recv_bytes_into(buf, offset)`  -> mp_connection_recv_bytes_into; BufferTooShort ->
 *                                        MP_ETOOSHORT, the message stays pending and the next
 *                                        receive (or mp_connection_take_pending) returns it
 *   - `poll(timeout)`, `fileno()`, `close()`
 *   - EOFError -> MP_EEOF, AuthenticationError -> MP_EAUTH, "bad message length" -> MP_EPROTO
 *   - `Listener(address, authkey=)`, `accept()`, `Client(address, authkey=)` -> mp_listener_*,
 *     mp_client (Unix paths, abstract names "@name", TCP "host:port")
 *   - `listener.last_accepted`        -> mp_listener_last_accepted ("host:port" of a TCP
 *                                        peer; "" for a Unix-socket peer, which is unnamed)
 *   - `wait(object_list, timeout)`    -> mp_wait
 *
 * Wire format: exactly Python's (a 4-byte big-endian signed length, or -1 followed by an
 * 8-byte big-endian length for messages over 0x7fffffff bytes), and the same HMAC
 * challenge/response as Python's multiprocessing (the legacy HMAC-MD5 form of Python <= 3.11
 * and the "{sha256}"-prefixed form of 3.12+), so Python peers talk to ours with
 * send_bytes/recv_bytes. Values travel as MessagePack (mp_value_encode).
 *
 * Beyond Python: a value holding handles (queues, locks, shared memory, connection ends) can be
 * sent over a Unix-socket connection to a running process (fds by SCM_RIGHTS), where Python's
 * pickler refuses them; see mp_connection_send.
 *
 * Pitfalls fixed: writing to a pipe whose reader is gone returns -EPIPE instead of killing
 * the program with SIGPIPE; a message over maxlength is refused before anything is
 * allocated; the authentication handshake reads at most 256 bytes per message and has one
 * deadline for the whole exchange (not per read), and a listener authenticates several
 * peers at once, so a slow or silent one delays nobody else.
 *
 * Maximum message size: every connection refuses, before allocating anything, a message
 * announced longer than its maximum (default MP_CONNECTION_DEFAULT_MAX_MESSAGE, 64 MiB;
 * mp_connection_set_max_message_size; MP_CONNECTION_UNLIMITED on request): -EMSGSIZE with
 * a message naming both sizes, and the connection is closed (its stream cannot be
 * resynchronised without reading the body). This applies to mp_connection_recv, to
 * mp_connection_recv_bytes with maxlength 0 (an explicit maxlength is the bound instead,
 * Python's way: MP_EPROTO) and to mp_connection_recv_bytes_into when the message does not
 * fit the caller's buffer (a message that fits is read into it whatever its size).
 * Why 64 MiB: far above any control message or value a program sends over a connection
 * (a decoded mp_value takes several times its encoded size), yet low enough that a buggy
 * or hostile peer cannot make a receiver commit gigabytes; bulk data belongs in shared
 * memory, or raise the limit on that connection. Python has no such bound: a Python peer
 * sending more than 64 MiB needs the limit raised here.
 *
 * Thread safety: a connection may be used by one sending thread and one receiving thread at
 * once (like Python); two threads sending (or receiving) on the same connection at once
 * interleave messages. A listener accepts from one thread at a time.
 *
 * Fork behaviour: a connection is an fd plus a little state. After fork both processes hold
 * the fd; close the end you do not use, as in Python. A connection can travel to another
 * process inside a value, under every start method: `mp_value_pack("[h]",
 * &mp_kind_connection, c)` in the parent, `mp_value_unpack(args, "[h]", &mp_kind_connection,
 * &c)` in the child, which gets its own connection object (released with the value).
 */
#ifndef MULTIPROC_CONNECTION_H
#define MULTIPROC_CONNECTION_H

#include <stdbool.h>
#include <stddef.h>

#include "multiproc/process.h"
#include "multiproc/value.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** One end of a connection (Python's Connection): a socket or pipe fd with message framing. */
typedef struct mp_connection mp_connection;

/**
 * Create a connected pair (Python's Pipe). Duplex: a socketpair, both ends send and receive.
 * One-way (@p duplex false): a pipe; @p *a only receives and @p *b only sends (Python's
 * order), the wrong call is MP_ESTATE. Both ends are close-on-exec.
 * Returns 0 or -errno; the caller owns both ends (mp_connection_free).
 */
int mp_pipe(bool duplex, mp_connection **a, mp_connection **b);

/**
 * Wrap an existing connected fd (socket or pipe end), adopted: the connection closes it.
 * @p readable / @p writable say which calls are allowed. NULL with -ENOMEM / MP_EINVAL.
 */
mp_connection *mp_connection_from_fd(int fd, bool readable, bool writable);

/**
 * Send @p size bytes starting at @p offset of @p buf as one message.
 * Errors: MP_ESTATE on a receive-only end, MP_ECLOSED after close, -EPIPE/-ECONNRESET when
 * the peer is gone, MP_EINTERRUPTED if a signal handler interrupted the call before any
 * byte was sent.
 */
int mp_connection_send_bytes(mp_connection *c, const void *buf, size_t offset, size_t size);

/**
 * Receive one message into a new buffer (*buf, mp_free; a 0-byte message gives a non-NULL
 * buffer of length 0). Blocks until a message arrives. @p maxlength 0 means no limit;
 * a longer message is MP_EPROTO ("bad message length") and the connection is closed, as in
 * Python. MP_EEOF once the peer closed and everything was read.
 */
int mp_connection_recv_bytes(mp_connection *c, size_t maxlength, void **buf, size_t *len);

/**
 * Receive one message into @p buf at @p offset (@p bufsize is the whole buffer's size).
 * Stores the message size in *len. If the message does not fit, returns MP_ETOOSHORT with
 * *len = the message size; the message stays pending: the next receive call returns it
 * (mp_connection_recv_bytes, mp_connection_recv_bytes_into with a larger buffer, or
 * mp_connection_take_pending). MP_EINVAL if @p offset > @p bufsize.
 */
int mp_connection_recv_bytes_into(mp_connection *c, void *buf, size_t bufsize, size_t offset,
                                  size_t *len);

/**
 * Take the message kept after MP_ETOOSHORT (Python's BufferTooShort.args[0]): *buf (mp_free)
 * and *len. MP_ESTATE if there is none.
 */
int mp_connection_take_pending(mp_connection *c, void **buf, size_t *len);

/**
 * How mp_connection_send / mp_connection_recv encode values on a connection.
 * MP_CODEC_MSGPACK (the default) between multiproc programs: handles travel, compact.
 * MP_CODEC_PICKLE to talk to Python's `multiprocessing.connection` send()/recv(): values
 * are written as pickles of protocol 4 (mp_value_pickle) and received pickles are decoded
 * as data only (mp_value_unpickle: a pickle that names or calls code is MP_EPROTO and
 * nothing runs); handles cannot travel (MP_EUNSUPPORTED). See docs/python.md.
 */
typedef enum mp_codec {
    MP_CODEC_MSGPACK = 0, /**< MessagePack (mp_value_encode), the default */
    MP_CODEC_PICKLE       /**< Python's pickle (mp_value_pickle / mp_value_unpickle) */
} mp_codec;

/** Choose how @p c encodes values (see mp_codec). Travels with the connection to other
 * processes. 0 or MP_EINVAL (NULL, unknown codec). */
int mp_connection_set_codec(mp_connection *c, mp_codec codec);
/** The codec of @p c (MP_CODEC_MSGPACK for NULL). */
mp_codec mp_connection_codec(const mp_connection *c);

/** At most this many fds travel with one value over a connection. */
#define MP_CONNECTION_MAX_FDS 64

/**
 * Send a value (MessagePack). A value may hold handles (queues, locks, shared memory,
 * connection ends: any mp_kind) over a Unix-socket connection (a duplex Pipe, a
 * Listener/Client on a path or an abstract "@name"): their fds travel as SCM_RIGHTS on the
 * message's first byte, so the bytes are still Python's framing. The objects stay the
 * sender's; the receiver gets its own. Over TCP or a one-way pipe a value holding handles
 * is MP_EUNSUPPORTED; more than MP_CONNECTION_MAX_FDS fds in one value is -E2BIG.
 * Errors as mp_connection_send_bytes, plus the encoder's (a kind's export error, e.g.
 * MP_ECLOSED for a closed connection end).
 */
int mp_connection_send(mp_connection *c, const mp_value *v);

/**
 * Receive a value sent with mp_connection_send (*out, mp_value_free). Handles in it are
 * imported: the value owns the new objects (and their fds); free it, or take one out with
 * mp_value_take_handle. MP_EPROTO if the message is not valid MessagePack, names fds that
 * did not come, or came with more than MP_CONNECTION_MAX_FDS fds; every fd that came with
 * a failed message is closed and the connection stays usable. fds sent with a message read
 * by the bytes calls are dropped (the kernel closes them). Errors as recv_bytes.
 */
int mp_connection_recv(mp_connection *c, mp_value **out);

/**
 * Whether a message (or EOF) can be received without blocking, waiting up to @p timeout
 * seconds (0: just check; negative: forever). Returns 1 (ready), 0 (not ready),
 * MP_ESTATE on a send-only end, MP_ECLOSED, MP_EINTERRUPTED.
 */
int mp_connection_poll(mp_connection *c, double timeout);

/** The underlying fd (borrowed), or -1 once closed. */
int mp_connection_fileno(const mp_connection *c);
/** Whether this end may receive (false for the send-only end of a one-way pipe). */
bool mp_connection_readable(const mp_connection *c);
/** Whether this end may send (false for the receive-only end of a one-way pipe). */
bool mp_connection_writable(const mp_connection *c);
/** Default maximum message size of a connection (see the file comment): 64 MiB. */
#define MP_CONNECTION_DEFAULT_MAX_MESSAGE ((size_t)64 << 20)
/** A maximum message size meaning "no limit". */
#define MP_CONNECTION_UNLIMITED ((size_t)-1)

/**
 * Set the largest message @p c accepts (bytes; 0: the default, 64 MiB;
 * MP_CONNECTION_UNLIMITED: no limit). A longer announced message is -EMSGSIZE and closes the
 * connection, before anything is allocated. Travels with the connection to other
 * processes. 0 or MP_EINVAL.
 */
int mp_connection_set_max_message_size(mp_connection *c, size_t max);
/** The largest message @p c accepts (the default resolved: never 0 for a connection). */
size_t mp_connection_max_message_size(const mp_connection *c);

/** Whether mp_connection_close was called. */
bool mp_connection_closed(const mp_connection *c);

/** Close the fd now (the object stays valid; calls return MP_ECLOSED). 0 or -errno. Idempotent. */
int mp_connection_close(mp_connection *c);
/** Close and free. NULL is fine. */
void mp_connection_free(mp_connection *c);

/** The kind of a connection handle in a value (`h` format code, mp_value_handle): an
 * imported connection is released by freeing the value that holds it. */
extern const mp_kind mp_kind_connection; /**< mp_connection * */

/* ---- Listener and Client -------------------------------------------------------------- */

/** What our side sends as its challenge (we accept either form from the peer). */
typedef enum mp_auth_digest {
    MP_AUTH_DEFAULT = 0, /**< legacy HMAC-MD5: interoperates with every Python 3 */
    MP_AUTH_LEGACY_MD5,  /**< "#CHALLENGE#" + 20 random bytes, raw HMAC-MD5 reply (Python <= 3.11) */
    MP_AUTH_SHA256,      /**< "#CHALLENGE#{sha256}" + 40 random bytes (Python 3.12+ default) */
    MP_AUTH_SHA384,
    MP_AUTH_SHA3_256,
    MP_AUTH_SHA3_384,
    MP_AUTH_MD5          /**< prefixed "{md5}" form */
} mp_auth_digest;

/**
 * Addresses: "/path" or "./path" or "unix:path" (Unix socket path), "@name" (Linux abstract
 * socket), "host:port" or "tcp:host:port" (TCP; "[::1]:port" for IPv6; port 0 picks a free
 * port for a listener).
 */
typedef struct mp_listener_opts {
    const char *address;   /**< NULL: a fresh Unix socket path under $TMPDIR or /tmp */
    int backlog;           /**< 0: 16 */
    const void *authkey;   /**< NULL: no authentication */
    size_t authkey_len;    /**< bytes of authkey */
    mp_auth_digest digest; /**< the challenge we send */
    double handshake_limit;   /**< seconds a peer has to complete the whole handshake;
                                   0: 20 s; MP_NO_LIMIT: none (Python's, which lets a
                                   silent peer hold a slot forever) */
    size_t max_message_size;  /**< of each accepted connection; 0: 64 MiB (see above) */
    mp_codec codec;           /**< of each accepted connection: MP_CODEC_PICKLE to serve
                                   Python clients that use send()/recv() */
} mp_listener_opts;

/** A listening socket that accepts authenticated connections (Python's Listener). */
typedef struct mp_listener mp_listener;

/** Bind and listen. NULL on error (mp_last_error() says why, with the address). */
mp_listener *mp_listener_new(const mp_listener_opts *opts);
/**
 * Accept one connection, authenticating it if the listener has an authkey (our challenge
 * first, then the peer's, as Python's Listener.accept). Waits up to @p timeout (negative:
 * forever): MP_ETIMEOUT. With an authkey, every pending connection is authenticated at once
 * (up to 64 in progress) and the first to complete is returned; the others stay in
 * progress for the next accept. A peer that fails is closed and reported by the accept
 * that sees it: MP_EAUTH (wrong key, protocol error), or MP_ETIMEOUT with "did not complete
 * the handshake" once handshake_limit has passed since it connected; the listener stays
 * usable. On success *out is the new connection (caller owns it).
 */
int mp_listener_accept(mp_listener *l, double timeout, mp_connection **out);
/** The bound address in the same syntax as the options ("127.0.0.1:40123" after port 0).
 * Borrowed, valid while the listener lives. */
const char *mp_listener_address(const mp_listener *l);
/**
 * The address of the peer of the last connection accepted (Python's
 * Listener.last_accepted): "127.0.0.1:51234" for TCP, "" for a Unix-socket peer (its
 * end is unnamed, as Python's ''), NULL before the first accept. Borrowed: valid until
 * the next accept or free.
 */
const char *mp_listener_last_accepted(const mp_listener *l);
/** The listening socket (borrowed), for poll/mp_wait. */
int mp_listener_fileno(const mp_listener *l);
/** Stop listening and remove the Unix socket path. Idempotent. */
int mp_listener_close(mp_listener *l);
/** Close and free. NULL is fine. */
void mp_listener_free(mp_listener *l);

/** Client options; all-zero (or NULL) means the defaults. */
typedef struct mp_client_opts {
    const void *authkey;   /**< NULL: no authentication */
    size_t authkey_len;    /**< bytes of authkey */
    mp_auth_digest digest; /**< the challenge we send */
    double time_limit;     /**< seconds for connect + the whole handshake; 0: 20 s;
                                MP_NO_LIMIT: none */
    size_t max_message_size; /**< of the connection; 0: 64 MiB (see above) */
    mp_codec codec;          /**< MP_CODEC_PICKLE to talk to a Python Listener's send()/recv() */
} mp_client_opts;

/**
 * Connect to @p address (syntax as mp_listener_opts) and authenticate (answer the
 * listener's challenge, then challenge it, as Python's Client). Returns the connection, or
 * NULL with the code in mp_last_error_code(): -ECONNREFUSED / -ENOENT (with the address),
 * MP_EAUTH, MP_ETIMEOUT, MP_EPROTO, MP_EINVAL (NULL or malformed address).
 */
mp_connection *mp_client(const char *address, const mp_client_opts *opts);

/* ---- wait ----------------------------------------------------------------------------- */

/** What an mp_waitable watches. */
typedef enum mp_wait_kind {
    MP_WAIT_FD = 0,     /**< an fd: ready when readable (or hung up) */
    MP_WAIT_CONNECTION, /**< ready when a message or EOF can be received */
    MP_WAIT_PROCESS,    /**< ready when the process has ended (its sentinel pidfd) */
    MP_WAIT_LISTENER    /**< ready when accept would not block */
} mp_wait_kind;

/** One object for mp_wait; build with mp_wait_fd / mp_wait_conn / mp_wait_proc. */
typedef struct mp_waitable {
    mp_wait_kind kind; /**< which member of u is set */
    /** The watched object (borrowed). */
    union {
        int fd;                 /**< MP_WAIT_FD */
        mp_connection *conn;    /**< MP_WAIT_CONNECTION */
        mp_process *proc;       /**< MP_WAIT_PROCESS */
        mp_listener *listener;  /**< MP_WAIT_LISTENER */
    } u;
    bool ready; /**< set by mp_wait */
} mp_waitable;

static inline mp_waitable mp_wait_fd(int fd)
{
    mp_waitable w = {MP_WAIT_FD, {.fd = fd}, false};
    return w;
}
static inline mp_waitable mp_wait_conn(mp_connection *c)
{
    mp_waitable w = {MP_WAIT_CONNECTION, {.conn = c}, false};
    return w;
}
static inline mp_waitable mp_wait_proc(mp_process *p)
{
    mp_waitable w = {MP_WAIT_PROCESS, {.proc = p}, false};
    return w;
}
static inline mp_waitable mp_wait_listener(mp_listener *l)
{
    mp_waitable w = {MP_WAIT_LISTENER, {.listener = l}, false};
    return w;
}

/**
 * Wait until at least one of @p items is ready or @p timeout passes (negative: forever;
 * 0: check). Sets each item's `ready` and returns how many are ready (0 on timeout, like
 * Python's empty list). Errors: MP_EINVAL (a closed connection, an unstarted process, a bad
 * fd), MP_EINTERRUPTED, -errno.
 */
int mp_wait(mp_waitable *items, size_t n, double timeout);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
