/* Signal names, numbers and descriptions both ways. */
/* Signal names, numbers and descriptions both ways, as Python's
 * `signal.Signals(n).name`, `signal.Signals['SIGTERM']` and `signal.strsignal(n)`. */
#define _GNU_SOURCE
#include <multiproc/error.h>
#include <multiproc/signals.h>

#include <stdio.h>

int main(void)
{
    const int some[] = {SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGCHLD, SIGRTMIN, SIGRTMIN + 1,
                        SIGRTMAX};
    for (size_t i = 0; i < sizeof some / sizeof some[0]; i++)
        printf("%-12s %2d  %s\n", mp_signal_name(some[i]), some[i],
               mp_signal_description(some[i]));

    const char *names[] = {"SIGTERM", "TERM", "sigusr1", "SIGRTMIN+2", "RTMAX-1", "SIGFOO"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int sig = mp_signal_from_name(names[i]);
        if (sig > 0)
            printf("%-12s -> %d\n", names[i], sig);
        else
            printf("%-12s -> %s\n", names[i], mp_last_error());
    }
    printf("%d valid signals\n", mp_signal_list(NULL, 0));
    return 0;
}
