/* Whether the MULTIPROC_BOOTSTRAP a program finds in its environment is the library's:
 * the spawn and forkserver bootstraps engage only in a process the library itself
 * started.
 *
 * DESIGN
 * - The threat: the variable makes a fresh program run, before main, code that a
 *   launch record names (an offset into the program). Whoever can set a program's
 *   environment must not get that: the user of a setuid program, a client whose
 *   variables a service passes on, a variable inherited by accident.
 * - The variable is "spawn:FD:SECRET" or "forkserver:FD:SECRET[:bindnow]" (SECRET: 32
 *   hex digits), read with secure_getenv and removed from the environment whatever the
 *   verdict. Every check below must pass; otherwise the variable is ignored and the
 *   program starts normally (main runs).
 * - AT_SECURE (setuid, setgid, file capabilities): never engaged (secure_getenv says
 *   nothing): such a program's environment is chosen by a less privileged user. The
 *   spawn and forkserver start methods therefore do not work in such programs; fork
 *   does.
 * - The socket check: FD must be an AF_UNIX socket of the method's type (a stream for
 *   spawn, SEQPACKET for the forkserver) whose peer credentials (SO_PEERCRED) name our
 *   parent process (getppid) with our real and effective uid and gid. The kernel
 *   records those credentials when the socket pair is made, and nobody can connect to
 *   a socketpair afterwards. What this guarantees: the socket was made by the process
 *   that started us, under our own identity. A stranger who controls only our
 *   environment, or fds we inherited from elsewhere, cannot produce such a socket; a
 *   parent that forges one on purpose could as well run that code itself.
 * - The secret: 16 random bytes (getrandom) per start, in the variable and at the head
 *   of the first message on the socket, which the parent writes before it starts us.
 *   The socket check cannot tell a bootstrap socket from another socket our parent
 *   made for its own purposes and handed us (a Connection end given to a helper
 *   program, say). The secret ties the variable to the socket of the very start that
 *   set it: a variable that reached us another way (leaked, inherited, copied) finds
 *   no message with its secret and is ignored, unless whoever set it also chose the
 *   first bytes our parent wrote on that socket. It is no defence against our parent
 *   (trusted by the socket check) or other processes of our uid (they can read our
 *   environment in /proc and ptrace us anyway): it is an unguessable name for one
 *   start, not a key.
 * - Nothing is consumed from an fd that turns out not to be ours, and we never block
 *   on it: the first message is looked at with MSG_PEEK | MSG_DONTWAIT (it is there
 *   before we run, so a socket with nothing waiting is not ours). A spawn child reads
 *   it later as the head of the launch frame (mp__frame_recv checks the secret again);
 *   the forkserver's first message, the secret alone, is taken here once it matched. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "process/proc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int mp__secret_new(mp__secret *s)
{
    size_t got = 0;
    while (got < sizeof s->b) {
        ssize_t r = getrandom(s->b + got, sizeof s->b - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return mp__errno("getrandom for a bootstrap secret");
        got += (size_t)r;
    }
    return 0;
}

bool mp__secret_equal(const mp__secret *a, const void *b)
{
    const unsigned char *p = b;
    unsigned diff = 0; /* constant time: no early exit on the first difference */
    for (size_t i = 0; i < sizeof a->b; i++)
        diff |= (unsigned)(a->b[i] ^ p[i]);
    return diff == 0;
}

void mp__boot_value(char *buf, size_t n, mp__boot_kind kind, int fd, const mp__secret *s,
                    bool bindnow)
{
    char hex[2 * MP__BOOT_SECRET_LEN + 1];
    for (size_t i = 0; i < MP__BOOT_SECRET_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", s->b[i]);
    snprintf(buf, n, "%s:%d:%s%s", kind == MP__BOOT_SPAWN ? "spawn" : "forkserver", fd, hex,
             bindnow ? ":bindnow" : "");
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The exact shape mp__boot_value writes, nothing else. */
static bool parse_value(const char *v, mp__boot_req *req)
{
    const char *p = v;
    memset(req, 0, sizeof *req);
    if (strncmp(p, "spawn:", 6) == 0) {
        req->kind = MP__BOOT_SPAWN;
        p += 6;
    } else if (strncmp(p, "forkserver:", 11) == 0) {
        req->kind = MP__BOOT_SERVER;
        p += 11;
    } else {
        return false;
    }
    long fd = 0;
    const char *digits = p;
    while (*p >= '0' && *p <= '9' && p - digits < 9)
        fd = fd * 10 + (*p++ - '0');
    if (p == digits || *p++ != ':')
        return false;
    req->fd = (int)fd;
    for (size_t i = 0; i < MP__BOOT_SECRET_LEN; i++) {
        int hi = hex_digit(p[0]), lo = hi < 0 ? -1 : hex_digit(p[1]);
        if (lo < 0)
            return false;
        req->secret.b[i] = (unsigned char)(hi << 4 | lo);
        p += 2;
    }
    if (req->kind == MP__BOOT_SERVER && strcmp(p, ":bindnow") == 0)
        req->bindnow = true;
    else if (*p)
        return false;
    return true;
}

/* An AF_UNIX socket of this type made by our parent under our identity (see DESIGN). */
static bool made_by_parent(int fd, int type)
{
    struct stat st;
    int got = 0, domain = 0;
    socklen_t len = sizeof got;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &got, &len) < 0 || got != type)
        return false;
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
        return false;
    struct ucred c;
    len = sizeof c;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) < 0 || len != sizeof c)
        return false;
    /* pid 0: the peer is outside our pid namespace, where getppid() may say 0 too. */
    return c.pid > 0 && c.pid == getppid() && c.uid == getuid() && c.uid == geteuid() &&
           c.gid == getgid() && c.gid == getegid();
}

static ssize_t peek(int fd, void *buf, size_t n, int flags)
{
    ssize_t r;
    do
        r = recv(fd, buf, n, flags | MSG_PEEK | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    return r;
}

/* A spawn child's socket starts with the launch frame's head: length, then the secret. */
static bool spawn_frame_waits(const mp__boot_req *req)
{
    unsigned char head[sizeof(uint32_t) + MP__BOOT_SECRET_LEN];
    if (peek(req->fd, head, sizeof head, 0) != (ssize_t)sizeof head)
        return false;
    uint32_t n;
    memcpy(&n, head, sizeof n);
    return n >= MP__BOOT_SECRET_LEN && n <= MP__FRAME_MAX &&
           mp__secret_equal(&req->secret, head + sizeof n);
}

/* The forkserver's first message is the secret alone: taken once it matched. */
static bool server_hello_waits(const mp__boot_req *req)
{
    unsigned char msg[MP__BOOT_SECRET_LEN + 1];
    ssize_t r = peek(req->fd, msg, sizeof msg, MSG_TRUNC);
    if (r != MP__BOOT_SECRET_LEN || !mp__secret_equal(&req->secret, msg))
        return false;
    do
        r = recv(req->fd, msg, sizeof msg, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    return r == MP__BOOT_SECRET_LEN;
}

bool mp__boot_trusted(const char *value, mp__boot_req *req)
{
    if (!value || !parse_value(value, req))
        return false;
    bool spawn = req->kind == MP__BOOT_SPAWN;
    if (!made_by_parent(req->fd, spawn ? SOCK_STREAM : SOCK_SEQPACKET))
        return false;
    return spawn ? spawn_frame_waits(req) : server_hello_waits(req);
}
