/* For tests/test_util.c: a main program that makes its temporary directory (with a file
 * in it) and registers finalizers, then returns from main: the library's at-exit steps
 * must run them (priority order, is_exiting true) and remove the directory. */
#include "multiproc/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static void say(void *arg)
{
    printf("%s exiting=%d\n", (const char *)arg, mp_is_exiting());
    fflush(stdout);
}

int main(void)
{
    const char *d = mp_get_temp_dir();
    if (!d)
        return 2;
    char f[4200];
    snprintf(f, sizeof f, "%s/file", d);
    int fd = open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return 3;
    close(fd);
    mp_finalize(NULL, say, "low", -1);
    mp_finalize(NULL, say, "high", 5);
    printf("%s exiting=%d\n", d, mp_is_exiting());
    fflush(stdout);
    return 0;
}
