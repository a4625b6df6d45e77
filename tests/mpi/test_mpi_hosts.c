/* Where each rank runs, and messages between them. Run by ctest as `mpiexec -n 4` (one
 * host) and by tests/mpi/test_netns_mpi.sh with one rank per network namespace ("host").
 *
 * Every rank finds its IPv4 address (the first non-loopback interface's) and its network
 * namespace (/proc/self/ns/net); rank 0 gathers them and prints one line per rank. A
 * token goes round the ring, each rank appending its address, and a 1 MiB buffer goes
 * from every rank to rank 0 (large enough for the TCP transport's rendezvous protocol);
 * the contents are checked.
 *
 * With MPT_EXPECT_ADDRS="a0 a1 ..." rank i must have address a<i>, and with
 * MPT_EXPECT_NETNS=distinct every rank must be in a namespace of its own: the check that
 * the ranks really ran "on" different hosts. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include "multiproc/mpi.h"
#include "test_util.h"

#define MPT_ADDR 64
#define MPT_BIG (1 << 20)

typedef struct where {
    char addr[MPT_ADDR];  /* first non-loopback IPv4 address, or "-" */
    char netns[MPT_ADDR]; /* "net:[inode]" */
} where;

static void where_am_i(where *w)
{
    struct ifaddrs *ifa = NULL;
    snprintf(w->addr, sizeof w->addr, "-");
    if (getifaddrs(&ifa) == 0) {
        for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK))
                continue;
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, w->addr,
                      sizeof w->addr);
            break;
        }
        freeifaddrs(ifa);
    }
    ssize_t n = readlink("/proc/self/ns/net", w->netns, sizeof w->netns - 1);
    w->netns[n > 0 ? n : 0] = '\0';
}

/* RUN without the fd leak check: MPI's TCP transport opens its connections lazily, on a
 * rank pair's first message, and keeps them until MPI_Finalize. */
#define RUN_MPI(fn)                                                                      \
    do {                                                                                 \
        mpt_current = #fn;                                                               \
        int mpt_before = mpt_failures;                                                   \
        fn();                                                                            \
        printf("%-4s %s (rank %d)\n", mpt_failures == mpt_before ? "ok" : "FAIL", #fn, rank); \
        fflush(stdout);                                                                  \
    } while (0)

static int rank, size;
static where all[64];

static void test_where(void)
{
    where me;
    memset(&me, 0, sizeof me);
    where_am_i(&me);
    CHECK(size <= 64);
    CHECK_INT(MPI_Gather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, 0,
                         MPI_COMM_WORLD), MPI_SUCCESS);
    CHECK_INT(MPI_Bcast(all, (int)sizeof(where) * size, MPI_BYTE, 0, MPI_COMM_WORLD), MPI_SUCCESS);
    if (rank == 0)
        for (int r = 0; r < size; r++)
            printf("rank %d on %s %s\n", r, all[r].addr, all[r].netns);
    const char *expect = getenv("MPT_EXPECT_ADDRS");
    if (expect) {
        char buf[1024], *save = NULL;
        snprintf(buf, sizeof buf, "%s", expect);
        char *tok = strtok_r(buf, " ", &save);
        for (int r = 0; r < rank && tok; r++)
            tok = strtok_r(NULL, " ", &save);
        CHECK(tok != NULL);
        if (tok)
            CHECK_STR(me.addr, tok);
    }
    const char *ns = getenv("MPT_EXPECT_NETNS");
    if (ns && strcmp(ns, "distinct") == 0)
        for (int r = 0; r < size; r++)
            if (r != rank)
                CHECK(strcmp(all[r].netns, me.netns) != 0);
}

/* dst += sep + s, within cap bytes (truncated) */
static void append(char *dst, size_t cap, const char *sep, const char *s)
{
    size_t n = strlen(dst), a = strlen(sep), b = strlen(s);
    if (n + a + b + 1 > cap)
        return;
    memcpy(dst + n, sep, a);
    memcpy(dst + n + a, s, b + 1);
}

/* a token goes 0 -> 1 -> ... -> size-1 -> 0, each rank appending its address */
static void test_ring(void)
{
    char token[1024] = "";
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    if (rank == 0) {
        append(token, sizeof token, "", all[0].addr);
        CHECK_INT(MPI_Send(token, (int)strlen(token) + 1, MPI_CHAR, next, 7, MPI_COMM_WORLD), MPI_SUCCESS);
        CHECK_INT(MPI_Recv(token, sizeof token, MPI_CHAR, prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE), MPI_SUCCESS);
        char want[1024] = "";
        for (int r = 0; r < size; r++)
            append(want, sizeof want, r ? "," : "", all[r].addr);
        CHECK_STR(token, want);
        printf("ring: %s\n", token);
    } else {
        CHECK_INT(MPI_Recv(token, sizeof token, MPI_CHAR, prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE), MPI_SUCCESS);
        append(token, sizeof token, ",", all[rank].addr);
        CHECK_INT(MPI_Send(token, (int)strlen(token) + 1, MPI_CHAR, next, 7, MPI_COMM_WORLD), MPI_SUCCESS);
    }
}

/* 1 MiB from every rank to rank 0, each byte a function of the sender and the offset */
static void test_big(void)
{
    unsigned char *buf = malloc(MPT_BIG);
    CHECK(buf != NULL);
    if (!buf)
        return;
    if (rank == 0) {
        for (int r = 1; r < size; r++) {
            memset(buf, 0, MPT_BIG);
            CHECK_INT(MPI_Recv(buf, MPT_BIG, MPI_BYTE, r, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE), MPI_SUCCESS);
            int bad = 0;
            for (int i = 0; i < MPT_BIG; i++)
                bad += buf[i] != (unsigned char)(i * 7 + r);
            CHECK_INT(bad, 0);
        }
    } else {
        for (int i = 0; i < MPT_BIG; i++)
            buf[i] = (unsigned char)(i * 7 + rank);
        CHECK_INT(MPI_Send(buf, MPT_BIG, MPI_BYTE, 0, 9, MPI_COMM_WORLD), MPI_SUCCESS);
    }
    free(buf);
}

int main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    rank = mp_mpi_rank(MPI_COMM_WORLD);
    size = mp_mpi_size(MPI_COMM_WORLD);
    RUN_MPI(test_where);
    RUN_MPI(test_ring);
    RUN_MPI(test_big);
    int failed = mpt_failures > 0, any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    CHECK_OK(mp_mpi_finalize());
    return any ? 1 : mpt_done();
}
