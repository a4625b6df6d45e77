/* Interactive two-way talk with a child: write a line, read the answer. */
/* interactive parent/child demo, in C. The child
 * reads one path per line and answers "ok" on its stdout, flushing each line; the
 * parent writes a line, reads the answer and prints "Well Done." on "ok\n".
 * The Python original's input() prompts are replaced by a fixed list of answers so the demo
 * runs without a terminal; the child here is a shell loop instead of the clipboard
 * saver. */
#include <stdio.h>
#include <string.h>

#include "multiproc/subprocess.h"

int main(void)
{
    const char *child[] = {"sh", "-c", "while IFS= read -r path; do echo ok; done", NULL};
    mp_subprocess_opts o = {.in = MP_STDIO_PIPE, .out = MP_STDIO_PIPE};
    mp_popen *proc = mp_popen_start(child, &o);
    if (!proc) {
        fprintf(stderr, "start: %s\n", mp_last_error());
        return 1;
    }
    const char *inputs[] = {"cat", "dog", "quit"};
    for (size_t i = 0; i < 3 && mp_popen_poll(proc, NULL) == 0; i++) {
        printf("Please Input a path: %s\n", inputs[i]);
        if (strcmp(inputs[i], "quit") == 0)
            break;
        char path[256];
        snprintf(path, sizeof path, "/home/brt/%s.jpg", inputs[i]);
        mp_popen_writeline(proc, path); /* written at once: nothing to flush */
        const char *answer;
        if (mp_popen_readline(proc, &answer, NULL, 5) == 0 && strcmp(answer, "ok\n") == 0)
            printf("Well Done.\n");
    }
    mp_popen_close_fd(proc, 0); /* EOF ends the child's loop */
    int rc = -1;
    if (mp_popen_wait(proc, 5, &rc) != 0)
        mp_popen_kill(proc); /* as the Python original: kill it if it did not exit */
    printf("child exited with %d\n", rc);
    mp_popen_free(proc);
    return rc == 0 ? 0 : 1;
}
