// The best C/C++ peer of the queue rows: Boost.Interprocess message_queue (Debian
// libboost-dev), the same work as bench_queue.c's queue cases, one line per case:
//   case<TAB>unit<TAB>peer_rate
// 8-byte items (the int itself) between fork()ed processes, np producers and nc
// consumers on one queue. Boost's queue moves raw bytes (no values) and is not robust: a
// process killed inside it can leave the queue locked for good. It has no batch
// operation, so the batch row's peer is its item-at-a-time rate. Processes are not pinned
// (as in bench_queue.c) and each row is the median of RUNS runs of 1M items, as there.
#include <boost/interprocess/ipc/message_queue.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace bip = boost::interprocess;

static double now()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double boost_ints(int np, int nc, long n)
{
    std::string name = "mp_bench_peer_" + std::to_string(getpid());
    bip::message_queue::remove(name.c_str());
    // 65536 slots of 8 bytes plus Boost's index (mp_queue's default ring: 4 MiB).
    bip::message_queue mq(bip::create_only, name.c_str(), 65536, sizeof(uint64_t));
    pid_t pids[16];
    double t0 = now();
    for (int i = 0; i < nc; i++)
        if ((pids[i] = fork()) == 0) {
            bip::message_queue q(bip::open_only, name.c_str());
            uint64_t v, sum = 0;
            bip::message_queue::size_type got;
            unsigned prio;
            for (long k = 0; k < n / nc; k++) {
                q.receive(&v, sizeof v, got, prio);
                sum += v;
            }
            _exit(sum == 1); // keeps the sum alive
        }
    for (int i = 0; i < np; i++)
        if ((pids[nc + i] = fork()) == 0) {
            bip::message_queue q(bip::open_only, name.c_str());
            for (uint64_t k = (uint64_t)i * (n / np); k < (uint64_t)(i + 1) * (n / np); k++)
                q.send(&k, sizeof k, 0);
            _exit(0);
        }
    for (int i = 0; i < np + nc; i++) {
        int st;
        waitpid(pids[i], &st, 0);
    }
    double dt = now() - t0;
    bip::message_queue::remove(name.c_str());
    return (double)n / dt;
}

static double median_ints(int np, int nc, long n)
{
    const int RUNS = 5;
    double v[RUNS];
    for (int r = 0; r < RUNS; r++)
        v[r] = boost_ints(np, nc, n);
    std::sort(v, v + RUNS);
    return v[RUNS / 2];
}

// One int there and back over two queues, a child echoing it: round trips per second.
static double boost_pingpong(int n)
{
    std::string na = "mp_bench_peer_a_" + std::to_string(getpid());
    std::string nb = "mp_bench_peer_b_" + std::to_string(getpid());
    bip::message_queue::remove(na.c_str());
    bip::message_queue::remove(nb.c_str());
    bip::message_queue a(bip::create_only, na.c_str(), 64, sizeof(uint64_t));
    bip::message_queue b(bip::create_only, nb.c_str(), 64, sizeof(uint64_t));
    pid_t pid = fork();
    if (pid == 0) {
        bip::message_queue qa(bip::open_only, na.c_str()), qb(bip::open_only, nb.c_str());
        uint64_t v;
        bip::message_queue::size_type got;
        unsigned prio;
        for (int i = 0; i < n; i++) {
            qa.receive(&v, sizeof v, got, prio);
            qb.send(&v, sizeof v, 0);
        }
        _exit(0);
    }
    uint64_t v, sum = 0;
    bip::message_queue::size_type got;
    unsigned prio;
    double t0 = now();
    for (uint64_t i = 0; i < (uint64_t)n; i++) {
        a.send(&i, sizeof i, 0);
        b.receive(&v, sizeof v, got, prio);
        sum += v;
    }
    double dt = now() - t0;
    int st;
    waitpid(pid, &st, 0);
    bip::message_queue::remove(na.c_str());
    bip::message_queue::remove(nb.c_str());
    return sum == 1 ? 0 : n / dt;
}

int main()
{
    setvbuf(stdout, nullptr, _IOLBF, 0);
    double one = median_ints(1, 1, 1000000);
    std::printf("queue_1p1c_int\titems/s\t%.1f\n", one);
    std::printf("queue_4p4c_int\titems/s\t%.1f\n", median_ints(4, 4, 1000000));
    std::printf("queue_1p1c_batch64\titems/s\t%.1f\n", one);
    double pp[5];
    for (double &x : pp)
        x = boost_pingpong(20000);
    std::sort(pp, pp + 5);
    std::printf("queue_pingpong_int\tround trips/s\t%.1f\n", pp[2]);
    return 0;
}
