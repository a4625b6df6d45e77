/* Values across ranks, run under `mpiexec -n 4` (CMakeLists.txt: tests/mpi/): point-to-point
 * messages with tags and wildcards, nonblocking requests, sendrecv, and the collectives
 * (bcast, scatter, gather, allgather, alltoall, reduce, allreduce), checked by the values
 * every rank ends up with; then the errors: bad arguments, a bad argument on one rank of a
 * collective reported on every rank (no hang), MPI's own errors, malformed messages. */
#include "multiproc/mpi.h"
#include "test_util.h"

#include <pthread.h>

static int g_rank, g_size;

/* repr of a value, for comparisons (static buffer: one at a time). */
static const char *repr(const mp_value *v)
{
    static char buf[4096];
    char *s = mp_value_repr(v);
    snprintf(buf, sizeof buf, "%s", s ? s : "(repr failed)");
    mp_free(s);
    return buf;
}

#define CHECK_REPR(v, want) CHECK_STR(repr(v), want)

static void test_send_recv_tags(void)
{
    /* rank 0 sends each rank its own value, tag 10 + rank */
    if (g_rank == 0) {
        for (int r = 1; r < g_size; r++) {
            mp_value *v = mp_value_pack("[i s {s:f} n y#]", r, "hello", "pi", 3.14, "\0\1", (size_t)2);
            CHECK_OK(mp_mpi_send(MPI_COMM_WORLD, v, r, 10 + r));
            mp_value_free(v);
        }
    } else {
        mp_value *v = NULL;
        mp_mpi_status st = { 0 };
        CHECK_OK(mp_mpi_recv(MPI_COMM_WORLD, 0, 10 + g_rank, &v, &st));
        char want[128];
        snprintf(want, sizeof want, "[%d, 'hello', {'pi': 3.14}, None, b'\\x00\\x01']", g_rank);
        CHECK_REPR(v, want);
        CHECK_INT(st.source, 0);
        CHECK_INT(st.tag, 10 + g_rank);
        CHECK(st.len > 10);
        mp_value_free(v);
    }
    /* every other rank sends rank**2 to rank 0 with tag 100 + rank; rank 0 takes them with
     * MPI_ANY_SOURCE / MPI_ANY_TAG and learns from the status who sent what */
    if (g_rank != 0) {
        mp_value *v = mp_value_int(g_rank * g_rank);
        CHECK_OK(mp_mpi_send(MPI_COMM_WORLD, v, 0, 100 + g_rank));
        mp_value_free(v);
    } else {
        int seen = 0;
        for (int i = 1; i < g_size; i++) {
            mp_value *v = NULL;
            mp_mpi_status st = { -5, -5, 0 };
            CHECK_OK(mp_mpi_recv(MPI_COMM_WORLD, MPI_ANY_SOURCE, MPI_ANY_TAG, &v, &st));
            CHECK(st.source >= 1 && st.source < g_size);
            CHECK_INT(st.tag, 100 + st.source);
            CHECK_INT(mp_value_get_int(v), st.source * st.source);
            seen |= 1 << st.source;
            mp_value_free(v);
        }
        CHECK_INT(seen, 0xe);
    }
    /* MPI_PROC_NULL: a send is a no-op, a receive gives None at once */
    mp_value *v = mp_value_int(1), *got = NULL;
    mp_mpi_status st;
    CHECK_OK(mp_mpi_send(MPI_COMM_WORLD, v, MPI_PROC_NULL, 0));
    CHECK_OK(mp_mpi_recv(MPI_COMM_WORLD, MPI_PROC_NULL, 0, &got, &st));
    CHECK_INT(mp_value_type(got), MP_NIL);
    CHECK_INT(st.source, MPI_PROC_NULL);
    mp_value_free(got);
    mp_value_free(v);
}

/* A big value (several MiB: past every eager limit) crosses whole. */
static mp_value *big_value(int seed, size_t n)
{
    char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)(i * 31 + (size_t)seed);
    mp_value *v = mp_value_pack("[i y#]", seed, b, n);
    free(b);
    return v;
}

static void test_sendrecv_ring(void)
{
    int next = (g_rank + 1) % g_size, prev = (g_rank + g_size - 1) % g_size;
    /* every rank sends to the next and receives from the previous at once: a ring of
     * blocking sends would deadlock once the messages pass the eager size */
    mp_value *v = big_value(g_rank, 4 << 20), *got = NULL;
    mp_mpi_status st;
    CHECK_OK(mp_mpi_sendrecv(MPI_COMM_WORLD, v, next, 5, prev, 5, &got, &st));
    mp_value *want = big_value(prev, 4 << 20);
    CHECK(mp_value_equal(got, want));
    CHECK_INT(st.source, prev);
    CHECK_INT(st.tag, 5);
    mp_value_free(want);
    mp_value_free(got);
    mp_value_free(v);
}

static void test_isend_irecv(void)
{
    /* every rank posts receives for the others' values first, then sends to each */
    mp_mpi_request *rq[8], *sq[8];
    int n = 0;
    for (int r = 0; r < g_size; r++) {
        if (r == g_rank)
            continue;
        CHECK_NEW(rq[n], mp_mpi_irecv(MPI_COMM_WORLD, MPI_ANY_SOURCE, 7));
        mp_value *v = r == 1 ? big_value(g_rank, 1 << 20) : mp_value_pack("[s i]", "from", g_rank);
        CHECK_NEW(sq[n], mp_mpi_isend(MPI_COMM_WORLD, v, r, 7));
        mp_value_free(v); /* isend encoded it: the caller may free it at once */
        n++;
    }
    int seen = 0;
    for (int i = 0; i < n; i++) {
        mp_value *got = NULL;
        mp_mpi_status st = { 0 };
        if (i == 0) { /* the first by polling mp_mpi_test, the others by mp_mpi_wait */
            int r;
            while ((r = mp_mpi_test(rq[i], &got, &st)) == 0)
                ;
            CHECK_INT(r, 1);
        } else {
            CHECK_OK(mp_mpi_wait(rq[i], &got, &st));
        }
        CHECK_INT(st.tag, 7);
        seen |= 1 << st.source;
        mp_value *want = g_rank == 1 ? big_value(st.source, 1 << 20)
                                     : mp_value_pack("[s i]", "from", st.source);
        CHECK(mp_value_equal(got, want));
        mp_value_free(want);
        mp_value_free(got);
    }
    CHECK_INT(seen, ((1 << g_size) - 1) & ~(1 << g_rank));
    for (int i = 0; i < n; i++) {
        mp_value *none = (mp_value *)1;
        CHECK_OK(mp_mpi_wait(sq[i], &none, NULL));
        CHECK(none == NULL);
    }
    /* an irecv never matched is simply dropped */
    mp_mpi_request *q = mp_mpi_irecv(MPI_COMM_WORLD, 0, 999);
    mp_value *got = NULL;
    CHECK_INT(mp_mpi_test(q, &got, NULL), 0);
    mp_mpi_request_free(q);
    CHECK_OK(mp_mpi_barrier(MPI_COMM_WORLD));
}

static void test_bcast_scatter_gather(void)
{
    mp_value *v = g_rank == 2 ? mp_value_pack("{s:i s:[f s]}", "answer", 42, "more", 2.5, "x") : NULL;
    mp_value *got = NULL;
    CHECK_OK(mp_mpi_bcast(MPI_COMM_WORLD, v, 2, &got));
    CHECK_REPR(got, "{'answer': 42, 'more': [2.5, 'x']}");
    mp_value_free(got);
    mp_value_free(v);

    mp_value *list = g_rank == 0 ? mp_value_pack("[i s [i i] n]", 1, "two", 3, 3) : NULL;
    CHECK_OK(mp_mpi_scatter(MPI_COMM_WORLD, list, 0, &got));
    const char *want[] = { "1", "'two'", "[3, 3]", "None" };
    CHECK_REPR(got, want[g_rank]);
    mp_value_free(got);
    mp_value_free(list);

    v = mp_value_int((g_rank + 1) * (g_rank + 1));
    got = (mp_value *)1;
    CHECK_OK(mp_mpi_gather(MPI_COMM_WORLD, v, 1, &got));
    if (g_rank == 1)
        CHECK_REPR(got, "[1, 4, 9, 16]");
    else
        CHECK(got == NULL);
    mp_value_free(got);
    mp_value_free(v);

    v = mp_value_pack("[s i]", "r", g_rank);
    CHECK_OK(mp_mpi_allgather(MPI_COMM_WORLD, v, &got));
    CHECK_REPR(got, "[['r', 0], ['r', 1], ['r', 2], ['r', 3]]");
    mp_value_free(got);
    mp_value_free(v);
}

static void test_alltoall(void)
{
    mp_value *list = mp_value_list();
    for (int j = 0; j < g_size; j++)
        mp_value_list_append(list, mp_value_int(g_rank * 10 + j));
    mp_value *got = NULL;
    CHECK_OK(mp_mpi_alltoall(MPI_COMM_WORLD, list, &got));
    char want[64];
    snprintf(want, sizeof want, "[%d, %d, %d, %d]", g_rank, 10 + g_rank, 20 + g_rank, 30 + g_rank);
    CHECK_REPR(got, want);
    mp_value_free(got);
    mp_value_free(list);
}

static void test_reduce_numbers(void)
{
    mp_value *v = mp_value_int(g_rank), *got = NULL;
    CHECK_OK(mp_mpi_reduce(MPI_COMM_WORLD, v, MP_MPI_SUM, 3, &got));
    if (g_rank == 3)
        CHECK_REPR(got, "6");
    else
        CHECK(got == NULL);
    mp_value_free(got);
    CHECK_OK(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_MAX, &got));
    CHECK_REPR(got, "3");
    mp_value_free(got);
    CHECK_OK(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_MIN, &got));
    CHECK_REPR(got, "0");
    mp_value_free(got);
    mp_value_free(v);

    /* ints and a float: the float wins, as in Python (0 + 1 + 2.5 + 3 == 6.5) */
    v = g_rank == 2 ? mp_value_float(2.5) : mp_value_int(g_rank);
    CHECK_OK(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_SUM, &got));
    CHECK_REPR(got, "6.5");
    mp_value_free(got);
    mp_value_free(v);
    v = mp_value_int(g_rank + 1);
    CHECK_OK(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_PROD, &got));
    CHECK_REPR(got, "24");
    mp_value_free(got);
    mp_value_free(v);
    /* strs join in rank order */
    char s[2] = { (char)('a' + g_rank), 0 };
    v = mp_value_str(s);
    CHECK_OK(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_SUM, &got));
    CHECK_REPR(got, "'abcd'");
    mp_value_free(got);
    CHECK_OK(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_MAX, &got));
    CHECK_REPR(got, "'d'");
    mp_value_free(got);
    mp_value_free(v);
}

static void test_reduce_errors_everywhere(void)
{
    /* past 64 bits: Python's int would grow; ours is MP_ERANGE, on every rank */
    mp_value *v = mp_value_int(INT64_MAX / 2), *got = (mp_value *)1;
    CHECK_ERR(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_SUM, &got), MP_ERANGE);
    CHECK(got == NULL);
    if (g_rank == 0)
        CHECK_CONTAINS(mp_last_error(), "does not fit a 64-bit int");
    else
        CHECK_CONTAINS(mp_last_error(), "rank 0 failed (MP_ERANGE)");
    /* reduce: only the root computes, so only the root fails */
    int r = mp_mpi_reduce(MPI_COMM_WORLD, v, MP_MPI_SUM, 1, &got);
    CHECK_INT(r, g_rank == 1 ? MP_ERANGE : 0);
    mp_value_free(v);
    /* 'str' + int: MP_ETYPE naming the types */
    v = g_rank == 3 ? mp_value_str("x") : mp_value_int(1);
    CHECK_ERR(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_SUM, &got), MP_ETYPE);
    if (g_rank == 0)
        CHECK_CONTAINS(mp_last_error(), "unsupported operand types for sum: 'int' and 'str'");
    mp_value_free(v);
}

/* A reduction that does not commute: [a, b], so the result shows the order of folding. */
static int pair_up(const mp_value *a, const mp_value *b, mp_value **out, void *arg)
{
    (*(int *)arg)++;
    *out = mp_value_pack("[O O]", a, b);
    return *out ? 0 : mp_last_error_code();
}

static int refuse(const mp_value *a, const mp_value *b, mp_value **out, void *arg)
{
    (void)a, (void)b, (void)out, (void)arg;
    return -EDOM;
}

static void test_reduce_user_function(void)
{
    mp_value *v = mp_value_int(g_rank), *got = NULL;
    int calls = 0;
    CHECK_OK(mp_mpi_reduce_with(MPI_COMM_WORLD, v, pair_up, &calls, 0, &got));
    if (g_rank == 0) {
        CHECK_REPR(got, "[[0, 1], [2, 3]]");
        CHECK_INT(calls, 3);
    } else {
        CHECK(got == NULL);
        CHECK_INT(calls, 0);
    }
    mp_value_free(got);
    CHECK_OK(mp_mpi_allreduce_with(MPI_COMM_WORLD, v, pair_up, &calls, &got));
    CHECK_REPR(got, "[[0, 1], [2, 3]]");
    mp_value_free(got);
    CHECK_ERR(mp_mpi_allreduce_with(MPI_COMM_WORLD, v, refuse, NULL, &got), -EDOM);
    CHECK(got == NULL);
    mp_value_free(v);
}

/* On a communicator of 3 ranks (MPI_Comm_split), the grouping of a tree of three:
 * (v0 op v1) op v2, as mpi4py's; values travel on any communicator. */
static void test_reduce_three_ranks(void)
{
    MPI_Comm three;
    CHECK_INT(MPI_Comm_split(MPI_COMM_WORLD, g_rank < 3 ? 0 : MPI_UNDEFINED, g_rank, &three),
              MPI_SUCCESS);
    if (g_rank == 3) {
        CHECK(three == MPI_COMM_NULL);
        mp_value *got = NULL;
        CHECK_ERR(mp_mpi_allreduce(three, NULL, MP_MPI_SUM, &got), MP_EINVAL);
        return;
    }
    MPI_Comm_set_errhandler(three, MPI_ERRORS_RETURN);
    mp_value *v = mp_value_int(g_rank), *got = NULL;
    int calls = 0;
    CHECK_OK(mp_mpi_allreduce_with(three, v, pair_up, &calls, &got));
    CHECK_REPR(got, "[[0, 1], 2]");
    mp_value_free(got);
    CHECK_OK(mp_mpi_allgather(three, v, &got));
    CHECK_REPR(got, "[0, 1, 2]");
    mp_value_free(got);
    mp_value_free(v);
    MPI_Comm_free(&three);
}

static void test_op_apply(void)
{
    struct { mp_mpi_op op; const char *a, *b, *want; } cases[] = {
        { MP_MPI_SUM, "[i]", "[f]", "3.5" },   /* 1 + 2.5 */
        { MP_MPI_SUM, "[b]", "[i]", "2" },     /* True + 1 */
        { MP_MPI_PROD, "[i]", "[f]", "2.5" },
        { MP_MPI_MIN, "[i]", "[f]", "1" },     /* min(1, 2.5) */
        { MP_MPI_MAX, "[i]", "[f]", "2.5" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mp_value *a = cases[i].a[1] == 'i' ? mp_value_int(1)
                      : cases[i].a[1] == 'b' ? mp_value_bool(true) : mp_value_float(2.5);
        mp_value *b = cases[i].b[1] == 'i' ? mp_value_int(1) : mp_value_float(2.5);
        mp_value *out = NULL;
        CHECK_OK(mp_mpi_op_apply(cases[i].op, a, b, &out));
        CHECK_REPR(out, cases[i].want);
        mp_value_free(out);
        mp_value_free(a);
        mp_value_free(b);
    }
    /* min keeps the first of equals, as mpi4py's `y if y < x else x`: min(1, 1.0) is 1 */
    mp_value *one = mp_value_int(1), *onef = mp_value_float(1.0), *out = NULL;
    CHECK_OK(mp_mpi_op_apply(MP_MPI_MIN, one, onef, &out));
    CHECK_REPR(out, "1");
    mp_value_free(out);
    CHECK_OK(mp_mpi_op_apply(MP_MPI_MAX, onef, one, &out));
    CHECK_REPR(out, "1.0");
    mp_value_free(out);
    mp_value *s = mp_value_str("a"), *l = mp_value_pack("[i]", 1);
    CHECK_ERR(mp_mpi_op_apply(MP_MPI_SUM, s, one, &out), MP_ETYPE);
    CHECK_CONTAINS(mp_last_error(), "unsupported operand types for sum: 'str' and 'int'");
    CHECK_ERR(mp_mpi_op_apply(MP_MPI_MIN, s, l, &out), MP_ETYPE);
    CHECK_ERR(mp_mpi_op_apply(MP_MPI_PROD, s, s, &out), MP_ETYPE);
    CHECK_OK(mp_mpi_op_apply(MP_MPI_SUM, l, l, &out));
    CHECK_REPR(out, "[1, 1]");
    mp_value_free(out);
    mp_value *big = mp_value_int(INT64_MAX / 2 + 1), *two = mp_value_int(2);
    CHECK_ERR(mp_mpi_op_apply(MP_MPI_PROD, big, two, &out), MP_ERANGE);
    CHECK_ERR(mp_mpi_op_apply((mp_mpi_op)9, one, one, &out), MP_EINVAL);
    CHECK_ERR(mp_mpi_op_apply(MP_MPI_SUM, NULL, one, &out), MP_EINVAL);
    CHECK(out == NULL);
    mp_value_free(big);
    mp_value_free(two);
    mp_value_free(s);
    mp_value_free(l);
    mp_value_free(one);
    mp_value_free(onef);
}

static void test_collective_errors_reach_every_rank(void)
{
    mp_value *got = (mp_value *)1;
    /* the root's list has the wrong length: an error on every rank, not a hang */
    mp_value *list = g_rank == 0 ? mp_value_pack("[i i]", 1, 2) : NULL;
    CHECK_ERR(mp_mpi_scatter(MPI_COMM_WORLD, list, 0, &got), MP_EINVAL);
    CHECK(got == NULL);
    if (g_rank == 0)
        CHECK_CONTAINS(mp_last_error(), "expected a list of 4 items (one per rank), got 2");
    else
        CHECK_CONTAINS(mp_last_error(), "rank 0 failed (MP_EINVAL)");
    mp_value_free(list);
    /* the root of a bcast has nothing to send */
    CHECK_ERR(mp_mpi_bcast(MPI_COMM_WORLD, NULL, 1, &got), MP_EINVAL);
    /* one rank of a gather passes NULL: every rank hears it */
    mp_value *v = g_rank == 2 ? NULL : mp_value_int(g_rank);
    CHECK_ERR(mp_mpi_gather(MPI_COMM_WORLD, v, 0, &got), MP_EINVAL);
    if (g_rank != 2)
        CHECK_CONTAINS(mp_last_error(), "rank 2 failed");
    CHECK_ERR(mp_mpi_allgather(MPI_COMM_WORLD, v, &got), MP_EINVAL);
    CHECK_ERR(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_SUM, &got), MP_EINVAL);
    mp_value_free(v);
    /* one rank's alltoall list is short */
    list = mp_value_list();
    for (int j = 0; j < (g_rank == 1 ? 3 : 4); j++)
        mp_value_list_append(list, mp_value_int(j));
    CHECK_ERR(mp_mpi_alltoall(MPI_COMM_WORLD, list, &got), MP_EINVAL);
    if (g_rank != 1)
        CHECK_CONTAINS(mp_last_error(), "rank 1 failed (MP_EINVAL)");
    mp_value_free(list);
    /* after all that, the communicator still works */
    v = mp_value_int(1);
    CHECK_OK(mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_SUM, &got));
    CHECK_REPR(got, "4");
    mp_value_free(got);
    mp_value_free(v);
}

static void test_bad_arguments(void)
{
    mp_value *v = mp_value_int(1), *got = NULL;
    CHECK_ERR(mp_mpi_send(MPI_COMM_WORLD, v, 0, -3), MP_EINVAL);
    CHECK_ERR(mp_mpi_send(MPI_COMM_WORLD, NULL, 0, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_send(MPI_COMM_NULL, v, 0, 0), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "MPI_COMM_NULL");
    CHECK_ERR(mp_mpi_recv(MPI_COMM_WORLD, 0, 0, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_recv(MPI_COMM_WORLD, 0, -7, &got, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_mpi_isend(MPI_COMM_WORLD, NULL, 0, 0), MP_EINVAL);
    CHECK_NULL_ERR(mp_mpi_irecv(MPI_COMM_NULL, 0, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_wait(NULL, &got, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_test(NULL, &got, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_bcast(MPI_COMM_WORLD, v, 4, &got), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "root 4 is not a rank of a communicator of size 4");
    CHECK_ERR(mp_mpi_gather(MPI_COMM_WORLD, v, -1, &got), MP_EINVAL);
    CHECK_ERR(mp_mpi_reduce(MPI_COMM_WORLD, v, MP_MPI_SUM, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_reduce_with(MPI_COMM_WORLD, v, NULL, NULL, 0, &got), MP_EINVAL);
    /* a handle that owns fds cannot leave this host: refused before anything is sent */
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    mp_value *h = mp_value_pack("[h]", &mp_kind_connection, a);
    CHECK_ERR(mp_mpi_send(MPI_COMM_WORLD, h, (g_rank + 1) % g_size, 0), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "mp_mpi_send");
    CHECK_NULL_ERR(mp_mpi_isend(MPI_COMM_WORLD, h, (g_rank + 1) % g_size, 0), MP_EUNSUPPORTED);
    mp_value_free(h);
    mp_connection_free(a);
    mp_connection_free(b);
    /* MPI's own refusal: MP_EMPI with MPI's message */
    CHECK_ERR(mp_mpi_send(MPI_COMM_WORLD, v, 99, 0), MP_EMPI);
    CHECK_CONTAINS(mp_last_error(), "mp_mpi_send: MPI_Send: MPI_ERR_RANK: invalid rank");
    mp_value_free(v);
}

static void test_malformed_messages(void)
{
    /* rank 0 sends rank 1 bytes that are not a value's encoding: 0xc1 (never used by
     * MessagePack), a truncated list, an empty message, a value followed by junk; each is
     * MP_EPROTO on rank 1, and a good value after them still arrives */
    static const unsigned char bad[][4] = { { 0xc1 }, { 0x93, 0x01 }, { 0 }, { 0x01, 0x02 } };
    static const int lens[] = { 1, 2, 0, 2 };
    if (g_rank == 0) {
        for (int i = 0; i < 4; i++)
            CHECK_INT(MPI_Send(bad[i], lens[i], MPI_BYTE, 1, 50, MPI_COMM_WORLD), MPI_SUCCESS);
        mp_value *ok = mp_value_str("still fine");
        CHECK_OK(mp_mpi_send(MPI_COMM_WORLD, ok, 1, 50));
        mp_value_free(ok);
    } else if (g_rank == 1) {
        mp_value *got = (mp_value *)1;
        for (int i = 0; i < 3; i++) {
            CHECK_ERR(mp_mpi_recv(MPI_COMM_WORLD, 0, 50, &got, NULL), MP_EPROTO);
            CHECK(got == NULL);
            CHECK_CONTAINS(mp_last_error(), "from rank 0 is not a value");
        }
        mp_mpi_request *q = mp_mpi_irecv(MPI_COMM_WORLD, 0, 50);
        CHECK_ERR(mp_mpi_wait(q, &got, NULL), MP_EPROTO);
        CHECK_OK(mp_mpi_recv(MPI_COMM_WORLD, 0, 50, &got, NULL));
        CHECK_REPR(got, "'still fine'");
        mp_value_free(got);
    }
    CHECK_OK(mp_mpi_barrier(MPI_COMM_WORLD));
}

static void test_arrays(void)
{
    /* the cookbook's Alltoall on numbers: rank r sends (r+1)*[0, 1, 2, 3] */
    long send[4], recv[4];
    for (int j = 0; j < 4; j++)
        send[j] = (g_rank + 1) * j;
    CHECK_OK(mp_mpi_array_alltoall(MPI_COMM_WORLD, send, recv, 1, MPI_LONG));
    for (int j = 0; j < 4; j++)
        CHECK_INT(recv[j], (j + 1) * g_rank);
    /* elementwise sums, on the root and everywhere */
    double d[3] = { g_rank, 0.5, -g_rank }, sum[3] = { 0 };
    CHECK_OK(mp_mpi_array_allreduce(MPI_COMM_WORLD, d, sum, 3, MPI_DOUBLE, MP_MPI_SUM));
    CHECK(sum[0] == 6.0 && sum[1] == 2.0 && sum[2] == -6.0);
    int mx = g_rank * 7, got = -1;
    CHECK_OK(mp_mpi_array_reduce(MPI_COMM_WORLD, &mx, &got, 1, MPI_INT, MP_MPI_MAX, 0));
    CHECK_INT(got, g_rank == 0 ? 21 : -1);
    int b[2] = { g_rank, g_rank };
    CHECK_OK(mp_mpi_array_bcast(MPI_COMM_WORLD, b, 2, MPI_INT, 3));
    CHECK(b[0] == 3 && b[1] == 3);
    int all[8];
    CHECK_OK(mp_mpi_array_allgather(MPI_COMM_WORLD, b, all, 2, MPI_INT));
    int one = -1, src[4] = { 10, 11, 12, 13 };
    CHECK_OK(mp_mpi_array_scatter(MPI_COMM_WORLD, src, &one, 1, MPI_INT, 0));
    CHECK_INT(one, 10 + g_rank);
    int gathered[4] = { 0 };
    CHECK_OK(mp_mpi_array_gather(MPI_COMM_WORLD, &one, gathered, 1, MPI_INT, 2));
    if (g_rank == 2)
        CHECK(gathered[0] == 10 && gathered[3] == 13);
    /* point to point, and a message larger than the buffer: MP_ETOOSHORT, consumed */
    if (g_rank == 0) {
        int five[5] = { 1, 2, 3, 4, 5 };
        CHECK_OK(mp_mpi_array_send(MPI_COMM_WORLD, five, 5, MPI_INT, 1, 3));
        CHECK_OK(mp_mpi_array_send(MPI_COMM_WORLD, five, 3, MPI_INT, 1, 3));
    } else if (g_rank == 1) {
        int four[4] = { 0 };
        mp_mpi_status st;
        CHECK_ERR(mp_mpi_array_recv(MPI_COMM_WORLD, four, 4, MPI_INT, 0, 3, &st), MP_ETOOSHORT);
        CHECK_INT(mp_mpi_array_recv(MPI_COMM_WORLD, four, 4, MPI_INT, 0, 3, &st), 3);
        CHECK(four[0] == 1 && four[2] == 3 && four[3] == 0);
        CHECK_INT(st.len, 12);
    }
    CHECK_ERR(mp_mpi_array_reduce(MPI_COMM_WORLD, &mx, &got, 1, MPI_INT, (mp_mpi_op)7, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_send(MPI_COMM_WORLD, &mx, (size_t)1 << 33, MPI_INT, 1, 0), -E2BIG);
}

static void test_cartesian(void)
{
    /* the cookbook's 2 x 2 grid, not periodic: neighbours past an edge are MPI_PROC_NULL */
    MPI_Comm cart;
    int dims[2] = { 2, 2 };
    CHECK_OK(mp_mpi_cart_create(MPI_COMM_WORLD, 2, dims, NULL, false, &cart));
    int me = mp_mpi_rank(cart), c[2], up, down, left, right;
    CHECK_OK(mp_mpi_cart_coords(cart, me, 2, c));
    CHECK_INT(c[0], me / 2);
    CHECK_INT(c[1], me % 2);
    CHECK_OK(mp_mpi_cart_shift(cart, 0, 1, &up, &down));
    CHECK_OK(mp_mpi_cart_shift(cart, 1, 1, &left, &right));
    CHECK_INT(up, c[0] == 0 ? MPI_PROC_NULL : me - 2);
    CHECK_INT(down, c[0] == 1 ? MPI_PROC_NULL : me + 2);
    CHECK_INT(left, c[1] == 0 ? MPI_PROC_NULL : me - 1);
    CHECK_INT(right, c[1] == 1 ? MPI_PROC_NULL : me + 1);
    /* values travel on the new communicator too: each rank sends right, receives left */
    mp_value *v = mp_value_int(me), *got = NULL;
    CHECK_OK(mp_mpi_sendrecv(cart, v, right, 0, left, 0, &got, NULL));
    CHECK_INT(mp_value_type(got), left == MPI_PROC_NULL ? MP_NIL : MP_INT);
    if (left != MPI_PROC_NULL)
        CHECK_INT(mp_value_get_int(got), left);
    mp_value_free(got);
    mp_value_free(v);
    MPI_Comm_free(&cart);
    /* periodic (a torus): every neighbour exists; dims of 0 let MPI choose (2 x 2) */
    int free_dims[2] = { 0, 0 };
    bool periods[2] = { true, true };
    CHECK_OK(mp_mpi_cart_create(MPI_COMM_WORLD, 2, free_dims, periods, true, &cart));
    CHECK_OK(mp_mpi_cart_shift(cart, 1, 1, &left, &right));
    CHECK(left >= 0 && right >= 0 && left == right);
    MPI_Comm_free(&cart);
    /* a 1 x 3 grid leaves one rank out: it gets MPI_COMM_NULL */
    int line[2] = { 1, 3 };
    CHECK_OK(mp_mpi_cart_create(MPI_COMM_WORLD, 2, line, NULL, false, &cart));
    CHECK_INT(cart == MPI_COMM_NULL, g_rank == 3);
    if (cart != MPI_COMM_NULL)
        MPI_Comm_free(&cart);
    int too_big[2] = { 3, 3 }, neg[1] = { -1 };
    CHECK_ERR(mp_mpi_cart_create(MPI_COMM_WORLD, 2, too_big, NULL, false, &cart), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_create(MPI_COMM_WORLD, 1, neg, NULL, false, &cart), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_create(MPI_COMM_WORLD, 0, dims, NULL, false, &cart), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_coords(MPI_COMM_WORLD, 0, 2, c), MP_EMPI); /* not a grid */
}

struct receiver {
    int got[16], n;
};

static void *receive_three(void *arg)
{
    struct receiver *r = arg;
    for (int i = 0; i < 3; i++) {
        mp_value *v = NULL;
        if (mp_mpi_recv(MPI_COMM_WORLD, MPI_ANY_SOURCE, 77, &v, NULL) == 0)
            r->got[r->n++] = (int)mp_value_get_int(v);
        mp_value_free(v);
    }
    return NULL;
}

/* Two threads of rank 0 receive from MPI_ANY_SOURCE at once while the others send: every
 * value arrives whole, exactly once (the matched probe gives a message to one receive). */
static void test_threads_receive(void)
{
    if (g_rank != 0) {
        for (int i = 0; i < 2; i++) {
            mp_value *v = mp_value_int(g_rank * 10 + i);
            CHECK_OK(mp_mpi_send(MPI_COMM_WORLD, v, 0, 77));
            mp_value_free(v);
        }
        return;
    }
    struct receiver r[2] = { { { 0 }, 0 }, { { 0 }, 0 } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, receive_three, &r[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(r[0].n + r[1].n, 6);
    int seen = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < r[i].n; j++)
            seen |= 1 << ((r[i].got[j] / 10 - 1) * 2 + r[i].got[j] % 10);
    CHECK_INT(seen, 0x3f);
}

static void *serve(void *s)
{
    mp_manager_server_serve_forever(s);
    return NULL;
}

/* A manager proxy is a value that carries no fd: rank 0 broadcasts a proxy of its
 * manager's dict, every rank gets a connected proxy of its own out of it and adds 1. */
static void test_proxy_across_ranks(void)
{
    mp_manager_server *srv = NULL;
    mp_manager *m = NULL;
    mp_proxy *d = NULL;
    pthread_t t;
    mp_value *v = NULL, *got = NULL;
    if (g_rank == 0) {
        mp_manager_opts o = {.address = "127.0.0.1:0", .authkey = "k", .authkey_len = 1};
        CHECK_NEW(srv, mp_manager_server_new(&o));
        pthread_create(&t, NULL, serve, srv);
        CHECK_NEW(m, mp_manager_connect(mp_manager_server_address(srv), "k", 1, 10));
        CHECK_NEW(d, mp_manager_dict(m, NULL));
        v = mp_value_pack("[h]", &mp_kind_proxy, d);
    }
    CHECK_OK(mp_mpi_bcast(MPI_COMM_WORLD, v, 0, &got));
    mp_proxy *mine = NULL;
    CHECK_OK(mp_value_unpack(got, "[h]", &mp_kind_proxy, &mine));
    mp_value *n = NULL;
    CHECK_OK(mp_proxy_callf(mine, "add", &n, "[s i]", "hits", 1));
    mp_value_free(n);
    mp_value_free(got); /* releases this rank's proxy */
    CHECK_OK(mp_mpi_barrier(MPI_COMM_WORLD));
    if (g_rank == 0) {
        CHECK_OK(mp_proxy_callf(d, "get", &n, "[s]", "hits"));
        CHECK_REPR(n, "4");
        mp_value_free(n);
        mp_value_free(v);
        mp_proxy_free(d);
        CHECK_OK(mp_manager_shutdown(m));
        mp_manager_free(m);
        pthread_join(t, NULL);
        mp_manager_server_free(srv);
    }
}

/* Every call of the module with all-zero arguments (a zeroed communicator, NULL
 * pointers, zero counts): an error code, never a crash, and no rank waits for another
 * (each is refused before any communication). tests/api_sweep.py does this for the other
 * headers, which need no MPI. */
static void test_zero_arguments(void)
{
    MPI_Comm z;
    memset(&z, 0, sizeof z);
    MPI_Datatype zt;
    memset(&zt, 0, sizeof zt);
    CHECK_ERR(mp_mpi_send(z, NULL, 0, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_recv(z, 0, 0, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_sendrecv(z, NULL, 0, 0, 0, 0, NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_mpi_isend(z, NULL, 0, 0), MP_EINVAL);
    CHECK_NULL_ERR(mp_mpi_irecv(z, 0, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_wait(NULL, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_test(NULL, NULL, NULL), MP_EINVAL);
    mp_mpi_request_free(NULL);
    CHECK_ERR(mp_mpi_barrier(z), MP_EINVAL);
    CHECK_ERR(mp_mpi_bcast(z, NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_scatter(z, NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_gather(z, NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_allgather(z, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_alltoall(z, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_op_apply(0, NULL, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_reduce(z, NULL, 0, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_allreduce(z, NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_reduce_with(z, NULL, NULL, NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_allreduce_with(z, NULL, NULL, NULL, NULL), MP_EINVAL);
    mp_value *out = NULL;
    CHECK_ERR(mp_mpi_reduce(z, NULL, 0, 0, &out), MP_EINVAL);
    CHECK_ERR(mp_mpi_allreduce(z, NULL, 0, &out), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_send(z, NULL, 0, zt, 0, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_recv(z, NULL, 0, zt, 0, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_bcast(z, NULL, 0, zt, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_scatter(z, NULL, NULL, 0, zt, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_gather(z, NULL, NULL, 0, zt, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_allgather(z, NULL, NULL, 0, zt), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_alltoall(z, NULL, NULL, 0, zt), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_reduce(z, NULL, NULL, 0, zt, 0, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_array_allreduce(z, NULL, NULL, 0, zt, 0), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_create(z, 0, NULL, NULL, false, NULL), MP_EINVAL);
    MPI_Comm c;
    CHECK_ERR(mp_mpi_cart_create(z, 0, NULL, NULL, false, &c), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_coords(z, 0, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_shift(z, 0, 0, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_shift(MPI_COMM_WORLD, 0, 0, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_mpi_cart_coords(MPI_COMM_WORLD, 0, 0, NULL), MP_EINVAL);
}

/* Open MPI opens its connections and shared segments on first use: one round of every
 * kind of exchange before the tests, so their fd leak checks see only the tests' own. */
static void warm_up(void)
{
    int x = 1, y = 0;
    MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    mp_value *v = big_value(0, 1 << 20), *got = NULL;
    for (int d = 1; d < g_size; d++) {
        mp_mpi_sendrecv(MPI_COMM_WORLD, v, (g_rank + d) % g_size, 1,
                        (g_rank + g_size - d) % g_size, 1, &got, NULL);
        mp_value_free(got);
    }
    mp_value_free(v);
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Before mp_mpi_init: MP_ESTATE with a message, not a call into an MPI that is not up. */
static void test_before_init(void)
{
    mp_value *v = mp_value_int(1), *got = NULL;
    CHECK_ERR(mp_mpi_send(MPI_COMM_WORLD, v, 0, 0), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "mp_mpi_send: MPI is not initialised");
    CHECK_ERR(mp_mpi_bcast(MPI_COMM_WORLD, v, 0, &got), MP_ESTATE);
    CHECK_NULL_ERR(mp_mpi_irecv(MPI_COMM_WORLD, 0, 0), MP_ESTATE);
    CHECK_ERR(mp_mpi_barrier(MPI_COMM_WORLD), MP_ESTATE);
    mp_value_free(v);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_before_init);
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    g_rank = mp_mpi_rank(MPI_COMM_WORLD);
    g_size = mp_mpi_size(MPI_COMM_WORLD);
    if (g_size != 4) {
        fprintf(stderr, "run me as mpiexec -n 4\n");
        return 1;
    }
    warm_up();
    RUN_IF(argc, argv, test_send_recv_tags);
    RUN_IF(argc, argv, test_sendrecv_ring);
    RUN_IF(argc, argv, test_isend_irecv);
    RUN_IF(argc, argv, test_bcast_scatter_gather);
    RUN_IF(argc, argv, test_alltoall);
    RUN_IF(argc, argv, test_reduce_numbers);
    RUN_IF(argc, argv, test_reduce_errors_everywhere);
    RUN_IF(argc, argv, test_reduce_user_function);
    RUN_IF(argc, argv, test_reduce_three_ranks);
    RUN_IF(argc, argv, test_op_apply);
    RUN_IF(argc, argv, test_collective_errors_reach_every_rank);
    RUN_IF(argc, argv, test_bad_arguments);
    RUN_IF(argc, argv, test_malformed_messages);
    RUN_IF(argc, argv, test_arrays);
    RUN_IF(argc, argv, test_cartesian);
    RUN_IF(argc, argv, test_zero_arguments);
    RUN_IF(argc, argv, test_proxy_across_ranks);
    RUN_IF(argc, argv, test_threads_receive);
    CHECK_OK(mp_mpi_finalize());
    return mpt_done();
}
