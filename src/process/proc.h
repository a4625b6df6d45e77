/* Private contract between the files of the process module:
 *   src/process/core.h       the core's private parts: Process objects (object.c), the
 *                            children registry (registry.c), contexts (context.c), this
 *                            process's identity (self.c), at exit (atexit.c), fork (fork.c)
 *   src/process/target.c     locating a target function across exec (dladdr/phdr)
 *   src/process/launch.c     the launch record a spawn/forkserver child receives
 *   src/process/frame.c      framing of the bootstrap sockets and the child's reply
 *   src/process/trust.c      whether a bootstrap variable is really the library's
 *   src/process/boot.c       the spawn method: parent side and child bootstrap
 *   src/process/forkserver.c the forkserver method: client side and the server */
#ifndef MP_PROCESS_PROC_H
#define MP_PROCESS_PROC_H

#include "multiproc/process.h"
#include "multiproc/value.h"

#include "internal/buf.h"
#include "internal/fdpass.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* At most this many fds travel with one process's arguments. */
#define MP__PROC_MAX_FDS 128

/* The environment variable that tells a fresh exec of the program it is a spawn
 * child or a forkserver ("spawn:FD" / "forkserver:FD"). Removed once read. */
#define MP__BOOT_ENV "MULTIPROC_BOOTSTRAP"

/* Where a target function lives, in terms another exec of the program understands. */
typedef struct mp__target_loc {
    char path[4096]; /* the object's link-map name; "" for the main program */
    char sym[256];   /* its exported symbol name when it has one, else "" */
    uint64_t offset; /* from the object's load address */
} mp__target_loc;

/* In the parent: MP_EINVAL when the pointer is not inside a loaded object. */
int mp__target_locate(mp_target_fn fn, mp__target_loc *loc);
/* In the child: MP_ENOTFOUND when the object is not loaded here or the address does
 * not hold the same function. */
int mp__target_resolve(const mp__target_loc *loc, mp_target_fn *fn);
/* "name" of the function at fn (symbol or "0x..."), and its object's path. */
void mp__target_describe(mp_target_fn fn, char *name, size_t nlen, char *path, size_t plen);

/* Everything a spawn or forkserver child needs to become Process-N. On the wire it
 * is a MessagePack map (launch.c's DESIGN). */
typedef struct mp__launch {
    uint32_t method;      /* mp_start_method the child was started with */
    uint32_t daemon;
    int32_t log_level;
    int32_t log_on;       /* the parent logs to stderr */
    int32_t parent_pid;
    uint32_t nfds;        /* handle fds travelling with the record */
    mp__target_loc loc;
    const char *name;     /* borrowed: the caller's, or the strings of rec */
    const char *identity; /* "1", "1:2", ... */
    const char *args;     /* mp_value_encode bytes */
    size_t args_len;
    const char *parent_name; /* the parent's current_process().name */
    const void *authkey;  /* the child's authkey (1..MP_AUTHKEY_MAX bytes) */
    size_t authkey_len;
    mp_value *rec;        /* after unpack: the decoded record the strings point into */
} mp__launch;

/* Encode l as a record (malloc'd buffer; free()). */
int mp__launch_pack(const mp__launch *l, char **buf, size_t *len);
/* Decode an untrusted record (any fault is MP_EPROTO naming it); on success l borrows
 * from l->rec (buf need not outlive it): mp__launch_clear frees it. */
int mp__launch_unpack(const char *buf, size_t len, mp__launch *l);
void mp__launch_clear(mp__launch *l);

/* ---- the bootstrap's trust checks (trust.c) ---- */
/* A secret of one start (see trust.c's DESIGN): random bytes in the environment
 * variable and at the head of the first message on the bootstrap socket. */
#define MP__BOOT_SECRET_LEN 16
typedef struct mp__secret {
    unsigned char b[MP__BOOT_SECRET_LEN];
} mp__secret;
int mp__secret_new(mp__secret *s);
/* a == the MP__BOOT_SECRET_LEN bytes at b, in constant time. */
bool mp__secret_equal(const mp__secret *a, const void *b);

typedef enum { MP__BOOT_SPAWN = 1, MP__BOOT_SERVER } mp__boot_kind;
/* What a trusted variable asks for. */
typedef struct mp__boot_req {
    mp__boot_kind kind;
    int fd;
    bool bindnow; /* forkserver started under LD_BIND_NOW (see forkserver.c) */
    mp__secret secret;
} mp__boot_req;
/* The variable's value for a start: "spawn:FD:HEX" / "forkserver:FD:HEX[:bindnow]". */
#define MP__BOOT_VALUE_MAX 80
void mp__boot_value(char *buf, size_t n, mp__boot_kind kind, int fd, const mp__secret *s,
                    bool bindnow);
/* Parse the variable and run every check (trust.c's DESIGN): true when the bootstrap
 * may engage, with *req filled in. Consumes nothing unless it says true. */
bool mp__boot_trusted(const char *value, mp__boot_req *req);

/* ---- framing (frame.c) ---- */
/* A frame on a stream socket: u32 length, then that many bytes: the secret when the
 * frame carries one (a spawn child's launch frame), then the payload. Fds ride on its
 * first bytes (SCM_RIGHTS). */
#define MP__FRAME_MAX (1u << 30)
/* Send a frame's head (length, secret if not NULL) and as much of buf as the socket
 * takes, with the fds, in one sendmsg (flags: MSG_DONTWAIT never blocks; the head
 * always fits in an empty socket). *sent: the bytes of buf that went. */
int mp__frame_begin(int sock, const mp__secret *secret, const void *buf, size_t len,
                    const int *fds, size_t nfds, int flags, size_t *sent);
/* Write the rest of buf after mp__frame_begin (blocking). */
int mp__frame_finish(int sock, const void *buf, size_t len, size_t sent);
/* Both at once. The sender writes nothing after a frame until it has read the reply
 * (recv may read past the head in one go). */
int mp__frame_send(int sock, const mp__secret *secret, const void *buf, size_t len,
                   const int *fds, size_t nfds);
/* Receive a frame into out (emptied first), adopting up to max_fds fds. With secret,
 * the frame must start with it (MP_EPROTO otherwise); it is not part of out. MP_EEOF
 * when the socket ends before a whole frame. */
int mp__frame_recv(int sock, const mp__secret *secret, mp__buf *out, int *fds,
                   size_t max_fds, size_t *nfds);
/* The child's verdict after bootstrapping: 0, or a code with a message, with the
 * child's pid (0: not told) and optionally a pidfd of itself (-1: none). recv sets
 * *pid and *pidfd when given (a pidfd only on success; else it is closed). */
int mp__reply_send(int sock, int code, const char *msg, pid_t pid, int pidfd);
int mp__reply_recv(int sock, const char *what, pid_t *pid, int *pidfd);

/* Child side, shared by every method: become the process described by l (identity,
 * registry reset, stdin -> /dev/null). */
void mp__proc_become_child(const char *name, const char *identity, pid_t parent_pid,
                           bool daemon, mp_start_method method);
/* ... and its parent's name and its authkey (keylen 0: keep the one it has). */
void mp__proc_become_child_of(const char *parent_name, const void *key, size_t keylen);
/* Decode a launch's arguments with its fds (adopted). Records the error. */
int mp__proc_decode_args(const char *buf, size_t len, int *fds, size_t nfds, mp_value **out);
/* Run the target and exit with its code; never returns. */
_Noreturn void mp__proc_run(mp_target_fn fn, mp_value *args);

/* ---- spawn (boot.c) ---- */
/* Start a spawn child for the launch record with the handle fds; on success sets
 * *pid and *pidfd. */
int mp__spawn_child(const mp__launch *l, const int *fds, size_t nfds, pid_t *pid,
                    int *pidfd);

/* ---- forkserver (forkserver.c) ---- */
/* Ask the server (starting it on first use) for a child: sets *pid, *pidfd (for
 * signals) and *statfd (readable when the exit status arrives: mp__fs_read_status). */
int mp__fs_start_child(const mp__launch *l, const int *fds, size_t nfds, pid_t *pid,
                       int *pidfd, int *statfd);
/* Read the exit status the server sent on statfd; 0 with *rc, or MP_EEOF if the
 * server went away without one. */
int mp__fs_read_status(int statfd, int *rc);
/* The server's main loop (in a fresh exec, from the bootstrap); never returns. */
_Noreturn void mp__fs_server_main(int ctl);
/* At exit: close this process's control connection and reap a server we started. */
void mp__fs_shutdown(void);
/* The running server's pid (0 if none) — for tests. */
pid_t mp__fs_server_pid(void);

/* ---- child bootstrap (boot.c) ---- */
/* Receive the launch record (and its fds) on sock (its frame starting with secret when
 * not NULL), find the target, decode the
 * arguments, tell the parent (0 or the error), then run the target. Shared by spawn
 * children and the children the forkserver forks; those (tell_pid) add their pid
 * and a pidfd of themselves to the reply, as the client has neither. Never returns. */
_Noreturn void mp__boot_child(int sock, const mp__secret *secret, bool tell_pid);
/* The rest of it, once the record is unpacked (cleared here) and the target found:
 * become the child, decode the arguments with their fds (adopted), reply, run. */
_Noreturn void mp__boot_launch(int sock, mp__launch *l, mp_target_fn fn, int *fds, size_t nfds,
                               bool tell_pid);
/* Apply the parent's logger settings in a fresh exec. */
void mp__proc_log_inherit(int level, bool on);

/* fd passing (mp__sendmsg_fds, mp__recvmsg_fds): internal/fdpass.h */

/* Environment with MP__BOOT_ENV=value added (array malloc'd; strings borrowed except
 * the one added, stored in *owned). When tracker_fd >= 0 it also names
 * MP__BOOT_TRACKER_FD as the resource tracker's pipe (MP_TRACKER_FD=4). extra, if not
 * NULL, is one more "NAME=value" entry (borrowed). */
char **mp__boot_env(const char *value, char **owned, int tracker_fd, const char *extra);

/* Spawn and forkserver children get the program's resource-tracker pipe as this fd,
 * so segments created anywhere in the program tree share the one tracker (fork
 * children simply inherit it). */
#define MP__BOOT_TRACKER_FD 4
/* A forkserver started with LD_BIND_NOW gets its stderr as this fd (its fd 2 is
 * /dev/null until the bootstrap moves it back, after ld.so is done). */
#define MP__FS_STDERR_FD 5
/* The tracker's pipe, started on first use, or -1 if it cannot run (the child then
 * starts its own on demand). */
int mp__boot_tracker_fd(void);

/* The program spawn children and the forkserver exec (exec.c). */
const char *mp__proc_executable(void);
#define MP__FS_PRELOAD_ENV "MULTIPROC_FS_PRELOAD"
/* "MULTIPROC_FS_PRELOAD=a:b" for the forkserver's environment (malloc'd), or NULL when
 * there is nothing to preload; the server side dlopen()s them (mp__fs_preload). */
char *mp__fs_preload_env(void);
void mp__fs_preload(void);

/* For the pool module (object.c): name an unstarted process "<prefix>-<identity>". */
int mp__process_rename(mp_process *p, const char *prefix);

#endif
