/* The spawn and forkserver bootstraps engage only in a process the library started:
 * MULTIPROC_BOOTSTRAP set by anyone else (in the environment of any program linked with
 * the library) is ignored, and the program's main runs (src/process/trust.c).
 *
 * This binary is also the program under attack: run with TEST_BOOT_PROGRAM=1, its main
 * says it ran, whether the variable is still there and how many bytes wait on fd 3
 * (none consumed when the bootstrap declined), and exits 42. boot_target, which the
 * launch records the tests send name, prints "TARGET RAN" and exits 7. */
#include "test_util.h"
#include "internal/common.h"
#include "process/proc.h"

#include <fcntl.h>
#include <sys/socket.h>

#define MAIN_RAN_RC 42
#define TARGET_RC 7

int boot_target(mp_value *args);
int boot_target(mp_value *args)
{
    (void)args;
    printf("TARGET RAN\n");
    fflush(stdout);
    return TARGET_RC;
}

static int program_main(void)
{
    char buf[65536];
    printf("main ran; variable %s", getenv(MP__BOOT_ENV) ? "left" : "removed");
    ssize_t n = recv(3, buf, sizeof buf, MSG_DONTWAIT);
    if (n >= 0)
        printf("; fd 3 holds %zd bytes", n);
    printf("\n");
    return MAIN_RAN_RC;
}

/* ---- running the program ---------------------------------------------------------- */

struct run {
    char out[4096];
    int rc; /* exit code, or 128 + signal */
};

static int rc_of(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static _Noreturn void exec_program(const char *value, int fd0, int fd3, int out)
{
    dup2(out, 1);
    if (fd0 >= 0)
        dup2(fd0, 0);
    if (fd3 == 3)
        fcntl(3, F_SETFD, 0);
    else if (fd3 >= 0)
        dup2(fd3, 3);
    else
        close(3);
    if (value)
        setenv(MP__BOOT_ENV, value, 1);
    else
        unsetenv(MP__BOOT_ENV);
    setenv("TEST_BOOT_PROGRAM", "1", 1);
    execl("/proc/self/exe", "test_boot", (char *)NULL);
    _exit(127);
}

/* Run the program with MULTIPROC_BOOTSTRAP=value, fd0 as its stdin and fd3 as its fd 3
 * (-1: leave / closed). grandchild: through a process in between, so that its parent
 * is not the process that made fd3. */
static void run_program(const char *value, int fd0, int fd3, bool grandchild, struct run *r)
{
    int out[2];
    memset(r, 0, sizeof *r);
    CHECK_OK(pipe2(out, O_CLOEXEC));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!grandchild)
            exec_program(value, fd0, fd3, out[1]);
        pid_t g = fork();
        if (g == 0)
            exec_program(value, fd0, fd3, out[1]);
        int st = 0;
        while (waitpid(g, &st, 0) < 0 && errno == EINTR)
            ;
        _exit(rc_of(st));
    }
    close(out[1]);
    size_t len = 0;
    ssize_t n;
    while ((n = read(out[0], r->out + len, sizeof r->out - 1 - len)) > 0)
        len += (size_t)n;
    close(out[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    r->rc = rc_of(st);
}

/* ---- launch records ------------------------------------------------------------- */

/* A real launch record naming boot_target (what a spawn parent would send). */
static void make_record(char **rec, size_t *len)
{
    mp__launch l;
    memset(&l, 0, sizeof l);
    l.method = MP_START_SPAWN;
    l.parent_pid = getpid();
    l.name = "attacker";
    l.identity = "1";
    mp_value *args = mp_value_list();
    char *abuf = NULL;
    CHECK_OK(mp_value_encode(args, &abuf, &l.args_len, NULL, 0, NULL));
    mp_value_free(args);
    l.args = abuf;
    CHECK_OK(mp__target_locate(boot_target, &l.loc));
    CHECK_OK(mp__launch_pack(&l, rec, len));
    free(abuf);
}

/* The bytes of a spawn launch frame: length, secret, record. */
static char *make_frame(const mp__secret *s, size_t *len)
{
    char *rec;
    size_t rlen;
    make_record(&rec, &rlen);
    uint32_t n = (uint32_t)(MP__BOOT_SECRET_LEN + rlen);
    *len = sizeof n + n;
    char *f = malloc(*len);
    memcpy(f, &n, sizeof n);
    memcpy(f + sizeof n, s->b, MP__BOOT_SECRET_LEN);
    memcpy(f + sizeof n + MP__BOOT_SECRET_LEN, rec, rlen);
    free(rec);
    return f;
}

static void value_for(char *buf, mp__boot_kind kind, const mp__secret *s)
{
    mp__boot_value(buf, MP__BOOT_VALUE_MAX, kind, 3, s, false);
}

/* A stream socketpair made here whose [1] end holds a launch frame with secret s. */
static void socket_with_frame(int sv[2], const mp__secret *s, size_t *flen)
{
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    char *f = make_frame(s, flen);
    CHECK_OK(mp__write_full(sv[0], f, *flen));
    free(f);
}

static void expect_main(const struct run *r, const char *out)
{
    CHECK_STR(r->out, out);
    CHECK_INT(r->rc, MAIN_RAN_RC);
}

static void expect_main_holding(const struct run *r, size_t bytes)
{
    char want[128];
    snprintf(want, sizeof want, "main ran; variable removed; fd 3 holds %zu bytes\n", bytes);
    expect_main(r, want);
}

/* ---- tests ---------------------------------------------------------------------- */

/* The control: a socket from the parent with a record carrying the variable's secret
 * reaches the target, so the records the other tests send would run it too. */
static void test_right_secret_runs_target(void)
{
    mp__secret s;
    CHECK_OK(mp__secret_new(&s));
    int sv[2];
    size_t flen;
    socket_with_frame(sv, &s, &flen);
    char value[MP__BOOT_VALUE_MAX];
    value_for(value, MP__BOOT_SPAWN, &s);
    struct run r;
    run_program(value, -1, sv[1], false, &r);
    CHECK_STR(r.out, "TARGET RAN\n");
    CHECK_INT(r.rc, TARGET_RC);
    close(sv[0]);
    close(sv[1]);
}

/* The report's example: MULTIPROC_BOOTSTRAP=spawn:0 ./any_program. */
static void test_spawn_fd0(void)
{
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct run r;
    run_program("spawn:0", devnull, -1, false, &r);
    expect_main(&r, "main ran; variable removed\n");
    /* stdin a socket from the parent holding a frame: the variable has no secret. */
    mp__secret s;
    CHECK_OK(mp__secret_new(&s));
    int sv[2];
    size_t flen;
    socket_with_frame(sv, &s, &flen);
    run_program("spawn:0", sv[1], -1, false, &r);
    expect_main(&r, "main ran; variable removed\n");
    close(devnull);
    close(sv[0]);
    close(sv[1]);
}

/* fd 3 a pipe, then a regular file, each holding a frame with the right secret. */
static void test_spawn_fd3_not_a_socket(void)
{
    mp__secret s;
    CHECK_OK(mp__secret_new(&s));
    char value[MP__BOOT_VALUE_MAX];
    value_for(value, MP__BOOT_SPAWN, &s);
    size_t flen;
    char *f = make_frame(&s, &flen);
    int p[2];
    CHECK_OK(pipe2(p, O_CLOEXEC));
    CHECK_OK(mp__write_full(p[1], f, flen));
    struct run r;
    run_program(value, -1, p[0], false, &r);
    expect_main(&r, "main ran; variable removed\n");
    close(p[0]);
    close(p[1]);

    FILE *tmp = tmpfile();
    CHECK(tmp && fwrite(f, 1, flen, tmp) == flen && fflush(tmp) == 0);
    int fd = fileno(tmp);
    lseek(fd, 0, SEEK_SET);
    run_program(value, -1, fd, false, &r);
    expect_main(&r, "main ran; variable removed\n");
    fclose(tmp);
    free(f);
}

/* A socketpair holding the right frame, but made by a process that is not the
 * program's parent. */
static void test_spawn_socket_not_from_parent(void)
{
    mp__secret s;
    CHECK_OK(mp__secret_new(&s));
    int sv[2];
    size_t flen;
    socket_with_frame(sv, &s, &flen);
    char value[MP__BOOT_VALUE_MAX];
    value_for(value, MP__BOOT_SPAWN, &s);
    struct run r;
    run_program(value, -1, sv[1], true, &r);
    expect_main_holding(&r, flen);
    close(sv[0]);
    close(sv[1]);
}

/* A socket from the parent carrying a real record with another secret. */
static void test_spawn_wrong_secret(void)
{
    mp__secret s, other;
    CHECK_OK(mp__secret_new(&s));
    CHECK_OK(mp__secret_new(&other));
    int sv[2];
    size_t flen;
    socket_with_frame(sv, &other, &flen);
    char value[MP__BOOT_VALUE_MAX];
    value_for(value, MP__BOOT_SPAWN, &s);
    struct run r;
    run_program(value, -1, sv[1], false, &r);
    expect_main_holding(&r, flen);
    close(sv[0]);
    close(sv[1]);
}

/* A socket from the parent with nothing waiting on it: not ours, and no hang. */
static void test_spawn_empty_socket(void)
{
    mp__secret s;
    CHECK_OK(mp__secret_new(&s));
    int sv[2];
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    char value[MP__BOOT_VALUE_MAX];
    value_for(value, MP__BOOT_SPAWN, &s);
    struct run r;
    run_program(value, -1, sv[1], false, &r);
    CHECK_STR(r.out, "main ran; variable removed\n");
    CHECK_INT(r.rc, MAIN_RAN_RC);
    close(sv[0]);
    close(sv[1]);
}

/* Values that are not exactly what the library writes, with fd 3 a socket from the
 * parent holding a frame with the secret the well-formed variants name. */
static void test_garbage_values(void)
{
    mp__secret s;
    CHECK_OK(mp__secret_new(&s));
    char good[MP__BOOT_VALUE_MAX], hex[2 * MP__BOOT_SECRET_LEN + 1];
    value_for(good, MP__BOOT_SPAWN, &s);
    snprintf(hex, sizeof hex, "%s", strrchr(good, ':') + 1);
    char upper[sizeof hex];
    for (size_t i = 0; i < sizeof hex; i++)
        upper[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
    char values[16][128];
    int n = 0;
    const char *plain[] = {"", "spawn", "spawn:", "spawn:3", "spawn:3:", "forkserver:3",
                           "forkserver:3:bindnow", "junk", "spawn:3:bindnow"};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++)
        snprintf(values[n++], sizeof values[0], "%s", plain[i]);
    snprintf(values[n++], sizeof values[0], "spawn:-3:%s", hex);
    snprintf(values[n++], sizeof values[0], "spawn:3:%sx", hex);
    snprintf(values[n++], sizeof values[0], "spawn:3:%s", upper);
    snprintf(values[n++], sizeof values[0], "spawn:3:%.31s", hex);
    snprintf(values[n++], sizeof values[0], "spawn:99999999999:%s", hex);
    snprintf(values[n++], sizeof values[0], "spawn: 3:%s", hex);
    snprintf(values[n++], sizeof values[0], "spawn:3:%s:bindnow", hex);
    for (int i = 0; i < n; i++) {
        int sv[2];
        size_t flen;
        socket_with_frame(sv, &s, &flen);
        struct run r;
        run_program(values[i], -1, sv[1], false, &r);
        mpt_current = values[i];
        expect_main_holding(&r, flen);
        close(sv[0]);
        close(sv[1]);
    }
    mpt_current = "test_garbage_values";
}

/* forkserver:3 with fd 3 a SEQPACKET socket from the parent: a first message that is
 * not the secret leaves main to run; the right one makes a server (the control). */
static void test_forkserver_value(void)
{
    mp__secret s, other;
    CHECK_OK(mp__secret_new(&s));
    CHECK_OK(mp__secret_new(&other));
    char value[MP__BOOT_VALUE_MAX];
    value_for(value, MP__BOOT_SERVER, &s);
    int sv[2];
    CHECK_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
    CHECK_INT(send(sv[0], other.b, sizeof other.b, 0), sizeof other.b);
    struct run r;
    run_program(value, -1, sv[1], false, &r);
    CHECK_STR(r.out, "main ran; variable removed; fd 3 holds 16 bytes\n");
    CHECK_INT(r.rc, MAIN_RAN_RC);
    close(sv[0]);
    close(sv[1]);

    /* The right secret: a server, which says 'R' and exits when we close our end. */
    CHECK_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
    CHECK_INT(send(sv[0], s.b, sizeof s.b, 0), sizeof s.b);
    int out[2];
    CHECK_OK(pipe2(out, O_CLOEXEC));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        exec_program(value, -1, sv[1], out[1]);
    close(sv[1]);
    close(out[1]);
    char c = 0;
    CHECK_INT(recv(sv[0], &c, 1, 0), 1);
    CHECK_INT(c, 'R');
    close(sv[0]);
    char buf[256];
    CHECK_INT(read(out[0], buf, sizeof buf), 0); /* main never ran */
    close(out[0]);
    int st = 0;
    CHECK_INT(waitpid(pid, &st, 0), pid);
    CHECK_INT(rc_of(st), 0);
}

static int quiet_target(mp_value *args)
{
    return (int)mp_value_get_int(mp_value_list_get(args, 0));
}

/* The library's own spawn and forkserver children still start (this also links the
 * bootstrap in, as in any program that uses the process module). */
static void test_library_children_still_start(void)
{
    const char *methods[] = {"spawn", "forkserver"};
    for (int i = 0; i < 2; i++) {
        mp_value *args = mp_value_pack("[i]", 5);
        mp_process_opts o = {.target = quiet_target, .ctx = mp_get_context(methods[i]),
                             .args = args};
        mp_process *p;
        int code = -1;
        CHECK_NEW(p, mp_process_new(&o));
        CHECK_OK(mp_process_start(p));
        CHECK_OK(mp_process_join(p, -1));
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 5);
        mp_process_free(p);
        mp_value_free(args);
    }
}

/* ---- the launch record: a value, decoded as untrusted input -------------------- */

static void expect_malformed(const char *buf, size_t len, const char *what)
{
    mp__launch l;
    int r = mp__launch_unpack(buf, len, &l);
    CHECK_INT(r, MP_EPROTO);
    if (r == MP_EPROTO)
        CHECK_CONTAINS(mp_last_error(), what);
    CHECK(l.rec == NULL && l.name == NULL);
}

/* A record is a map of the library's values: it round-trips and reads as one. */
static void test_record_is_a_value(void)
{
    char *rec;
    size_t len;
    make_record(&rec, &len);
    mp_value *v = NULL;
    CHECK_OK(mp_value_decode(rec, len, NULL, 0, &v));
    const char *name = NULL;
    int method = 0;
    CHECK_OK(mp_value_unpack(v, "{s:s, s:i}", "name", &name, "method", &method));
    CHECK_STR(name, "attacker");
    CHECK_INT(method, MP_START_SPAWN);
    mp__launch l;
    CHECK_OK(mp__launch_unpack(rec, len, &l));
    CHECK_STR(l.name, "attacker");
    CHECK_STR(l.identity, "1");
    CHECK_INT(l.method, MP_START_SPAWN);
    CHECK_INT(l.parent_pid, getpid());
    mp__target_loc loc;
    CHECK_OK(mp__target_locate(boot_target, &loc));
    CHECK_INT(l.loc.offset, loc.offset);
    CHECK_STR(l.loc.path, loc.path);
    mp__launch_clear(&l);

    /* Fields of the wrong type, missing or out of range are named. */
    const struct {
        const char *key, *fmt, *what;
        int64_t i;
    } bad[] = {{"method", "i", "'method' is not a start method", 9},
               {"nfds", "i", "'nfds' is out of range", 100000},
               {"offset", "i", "'offset' is negative", -1},
               {"name", "i", "name", 3},
               {"args", "s", "args", 0},
               {"path", "b", "path", 1}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mp_value *c = mp_value_copy(v), *x;
        if (bad[i].fmt[0] == 's')
            x = mp_value_str("not bytes");
        else if (bad[i].fmt[0] == 'b')
            x = mp_value_bool(true);
        else
            x = mp_value_int(bad[i].i);
        CHECK_OK(mp_value_map_set_str(c, bad[i].key, x));
        char *b;
        size_t n;
        CHECK_OK(mp_value_encode(c, &b, &n, NULL, 0, NULL));
        expect_malformed(b, n, bad[i].what);
        free(b);
        mp_value_free(c);
    }
    /* A key missing; a path too long for the target's location. */
    mp_value *c = mp_value_pack("{s:i}", "method", 2);
    char *b;
    size_t n;
    CHECK_OK(mp_value_encode(c, &b, &n, NULL, 0, NULL));
    expect_malformed(b, n, "malformed launch record");
    free(b);
    mp_value_free(c);
    char longpath[5000];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    c = mp_value_copy(v);
    CHECK_OK(mp_value_map_set_str(c, "path", mp_value_str(longpath)));
    CHECK_OK(mp_value_encode(c, &b, &n, NULL, 0, NULL));
    expect_malformed(b, n, "'path' is too long");
    free(b);
    mp_value_free(c);
    /* Not a map. */
    c = mp_value_pack("[i i]", 1, 2);
    CHECK_OK(mp_value_encode(c, &b, &n, NULL, 0, NULL));
    expect_malformed(b, n, "not a map");
    free(b);
    mp_value_free(c);
    mp_value_free(v);
    free(rec);
}

/* A handle inside a record is refused without importing anything (the forkserver
 * reads records and must not import objects). */
static void test_record_refuses_handles(void)
{
    char *rec;
    size_t len;
    make_record(&rec, &len);
    mp_value *v = NULL;
    CHECK_OK(mp_value_decode(rec, len, NULL, 0, &v));
    mp_barrier *bar = NULL;
    mp_barrier_opts bo = {.parties = 2};
    CHECK_NEW(bar, mp_barrier_new(&bo));
    CHECK_OK(mp_value_map_set_str(v, "extra", mp_value_handle(&mp_kind_barrier, bar)));
    char *b;
    size_t n, nfds = 0;
    int fds[8];
    CHECK_OK(mp_value_encode(v, &b, &n, fds, 8, &nfds));
    expect_malformed(b, n, "a handle where plain data is expected");
    free(b);
    mp_value_free(v);
    mp_barrier_free(bar);
    free(rec);
}

/* Every truncation and every single-byte change of a record: a clear error or a
 * record, never a crash (ASan/valgrind builds check the memory side). */
static void test_record_fuzz(void)
{
    char *rec;
    size_t len;
    make_record(&rec, &len);
    for (size_t cut = 0; cut < len; cut++)
        expect_malformed(rec, cut, "malformed launch record");
    char *m = malloc(len);
    int decoded = 0;
    for (size_t i = 0; i < len; i++) {
        for (int x = 1; x < 256; x += 37) {
            memcpy(m, rec, len);
            m[i] = (char)(m[i] ^ x);
            mp__launch l;
            int r = mp__launch_unpack(m, len, &l);
            CHECK(r == 0 || r == MP_EPROTO);
            if (r == 0) {
                decoded++;
                CHECK(l.name && l.identity && l.args && l.nfds <= MP__PROC_MAX_FDS);
                mp__launch_clear(&l);
            }
        }
    }
    CHECK(decoded > 0); /* some changes only alter a value */
    free(m);
    free(rec);
}

/* Frames: a wrong secret, a length past the limit, a frame cut short. */
static void test_frame_errors(void)
{
    mp__secret s, other;
    CHECK_OK(mp__secret_new(&s));
    CHECK_OK(mp__secret_new(&other));
    int sv[2];
    mp__buf b = {0};
    int fds[4];
    size_t nfds;
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    CHECK_OK(mp__frame_send(sv[0], &other, "abc", 3, NULL, 0));
    CHECK_ERR(mp__frame_recv(sv[1], &s, &b, fds, 4, &nfds), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "secret");
    close(sv[0]);
    close(sv[1]);

    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    uint32_t huge = MP__FRAME_MAX + 1;
    CHECK_OK(mp__write_full(sv[0], &huge, sizeof huge));
    CHECK_ERR(mp__frame_recv(sv[1], NULL, &b, fds, 4, &nfds), MP_EPROTO);
    close(sv[0]);
    close(sv[1]);

    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    uint32_t ten = 10;
    CHECK_OK(mp__write_full(sv[0], &ten, sizeof ten));
    CHECK_OK(mp__write_full(sv[0], "abc", 3));
    close(sv[0]);
    CHECK_ERR(mp__frame_recv(sv[1], NULL, &b, fds, 4, &nfds), MP_EEOF);
    close(sv[1]);

    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    CHECK_OK(mp__frame_send(sv[0], NULL, "hello", 5, NULL, 0));
    CHECK_OK(mp__frame_recv(sv[1], NULL, &b, fds, 4, &nfds));
    CHECK_INT(b.len, 5);
    CHECK_STR(b.data, "hello");
    close(sv[0]);
    close(sv[1]);
    mp__buf_free(&b);
}

/* The target gets its arguments back: 1 + (bytes of item 0 that are 'x') % 200. */
static int count_target(mp_value *args)
{
    size_t n = 0, x = 0;
    const unsigned char *b = mp_value_get_bytes(mp_value_list_get(args, 0), &n);
    for (size_t i = 0; b && i < n; i++)
        x += b[i] == 'x';
    return 1 + (int)(x % 200);
}

/* Records much bigger than a socket buffer and than the forkserver's inline limit: the
 * spawn parent queues what fits before the exec and writes the rest after; the
 * forkserver sends the record on the child's socket. */
static void test_big_arguments(void)
{
    size_t n = 3 * 1024 * 1024 + 7;
    char *big = malloc(n);
    memset(big, 'x', n);
    mp_value *args = mp_value_pack("[y#]", big, n);
    const char *methods[] = {"spawn", "forkserver"};
    for (int i = 0; i < 2; i++) {
        mp_process_opts o = {.target = count_target, .ctx = mp_get_context(methods[i]),
                             .args = args};
        mp_process *p;
        int code = -1;
        CHECK_NEW(p, mp_process_new(&o));
        CHECK_OK(mp_process_start(p));
        CHECK_OK(mp_process_join(p, -1));
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 1 + (int)(n % 200));
        mp_process_free(p);
    }
    mp_value_free(args);
    free(big);
}

/* No variable: main runs (the harness itself). */
static void test_no_variable(void)
{
    struct run r;
    run_program(NULL, -1, -1, false, &r);
    expect_main(&r, "main ran; variable removed\n");
}

int main(int argc, char **argv)
{
    if (getenv("TEST_BOOT_PROGRAM"))
        return program_main();
    /* The forkserver and the resource tracker hold fds for the program's life: start
     * them before the leak checks count. */
    CHECK_OK(mp_forkserver_ensure_running());
    RUN_IF(argc, argv, test_no_variable);
    RUN_IF(argc, argv, test_library_children_still_start);
    RUN_IF(argc, argv, test_big_arguments);
    RUN_IF(argc, argv, test_right_secret_runs_target);
    RUN_IF(argc, argv, test_spawn_fd0);
    RUN_IF(argc, argv, test_spawn_fd3_not_a_socket);
    RUN_IF(argc, argv, test_spawn_socket_not_from_parent);
    RUN_IF(argc, argv, test_spawn_wrong_secret);
    RUN_IF(argc, argv, test_spawn_empty_socket);
    RUN_IF(argc, argv, test_garbage_values);
    RUN_IF(argc, argv, test_forkserver_value);
    RUN_IF(argc, argv, test_record_is_a_value);
    RUN_IF(argc, argv, test_record_refuses_handles);
    RUN_IF(argc, argv, test_record_fuzz);
    RUN_IF(argc, argv, test_frame_errors);
    return mpt_done();
}
