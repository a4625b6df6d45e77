/* A SIGALRM handler stops an open() that would hang forever. */
/* signal example in C: a SIGALRM handler stops an open() that would hang
 * forever. The seed (Python) is:
 *
 *     def handler(signum, frame):
 *         print('Signal handler called with signal', signum)
 *         raise OSError("Couldn't open device!")
 *     signal.signal(signal.SIGALRM, handler)
 *     signal.alarm(5)
 *     fd = os.open('/dev/ttyS0', os.O_RDWR)   # this open() may hang indefinitely
 *     signal.alarm(0)
 *
 * Here the device is a FIFO that nobody opens for writing, so open() blocks. The
 * library's low-level handler is installed without SA_RESTART: the signal makes open()
 * fail with EINTR, then mp_signal_dispatch() runs our handler in normal context (it
 * may print), and the handler's non-zero return value is the C form of "raise":
 * dispatch returns MP_EINTERRUPTED.
 *
 * Usage: signals_alarm [SECONDS]   (the seed uses 5; the demo 1)
 */
#define _GNU_SOURCE
#include <multiproc/error.h>
#include <multiproc/signals.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct alarm_ctx {
    const char *error; /* what the handler "raised" */
};

static int handler(int signum, void *arg)
{
    struct alarm_ctx *ctx = arg;
    printf("Signal handler called with signal %d\n", signum);
    ctx->error = "Couldn't open device!";
    return 1; /* stop the interrupted call */
}

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    char device[64];
    snprintf(device, sizeof device, "/tmp/mp-example-device-%d", (int)getpid());
    if (mkfifo(device, 0600) < 0) {
        perror("mkfifo");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct alarm_ctx ctx = {NULL};
    int r = mp_signal_set_handler(SIGALRM, handler, &ctx);
    if (r < 0) {
        fprintf(stderr, "mp_signal_set_handler: %s\n", mp_last_error());
        return 1;
    }
    mp_signal_alarm(seconds);

    /* This open() may hang indefinitely (a FIFO's read end waits for a writer). */
    int fd = open(device, O_RDONLY | O_CLOEXEC);
    int status = 0;
    if (fd < 0 && errno == EINTR) {
        r = mp_signal_dispatch();
        if (r == MP_EINTERRUPTED)
            printf("OSError: %s\n", ctx.error);
    } else if (fd < 0) {
        perror("open");
        status = 1;
    } else {
        close(fd);
    }

    mp_signal_alarm(0); /* Disable the alarm */
    mp_signal_set_default(SIGALRM);
    unlink(device);
    return status;
}
