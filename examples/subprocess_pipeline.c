/* Popen: reading a child's output, feeding its input, and a two-command pipeline. */
/* Popen examples, in C:
 *
 *   >>> ls = sub.Popen(['ls'], stdout=sub.PIPE)
 *   >>> for f in ls.stdout: print(f)
 *   b'fileA.txt\n'
 *   b'fileB.txt\n'
 *   b'ls.txt\n'
 *
 *   child1 = subprocess.Popen(["ls","-l"], stdout=subprocess.PIPE)
 *   child2 = subprocess.Popen(["wc"], stdin=child1.stdout, stdout=subprocess.PIPE,
 *                             stderr=subprocess.STDOUT)
 *   out = child2.communicate()
 *
 * run in a fresh directory holding the Python original's three files; `wc` prints
 * lines/words/bytes of `ls -l` (the byte count depends on the owner's name and dates). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "multiproc/subprocess.h"

static int fail(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, mp_last_error());
    return 1;
}

static void print_bytes(const char *s, size_t n)
{
    printf("b'");
    for (size_t i = 0; i < n; i++)
        s[i] == '\n' ? printf("\\n") : putchar(s[i]);
    printf("'");
}

int main(void)
{
    char dir[] = "/tmp/mp-example-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "touch fileA.txt fileB.txt ls.txt");
    mp_subprocess_opts in_dir = {.cwd = dir};
    if (mp_run_sh(cmd, &in_dir, NULL) != 0)
        return fail("touch");

    /* for f in ls.stdout: print(f) */
    const char *ls[] = {"ls", NULL};
    mp_subprocess_opts o = {.cwd = dir, .out = MP_STDIO_PIPE};
    mp_popen *p = mp_popen_start(ls, &o);
    if (!p)
        return fail("ls");
    const char *line;
    size_t len;
    while (mp_popen_readline(p, &line, &len, -1) == 0) {
        print_bytes(line, len);
        printf("\n");
    }
    mp_popen_wait(p, -1, NULL);
    mp_popen_free(p);

    /* child1 | child2 with the handles, as in the Python original. */
    const char *ls_l[] = {"ls", "-l", NULL}, *wc[] = {"wc", NULL};
    mp_popen *child1 = mp_popen_start(ls_l, &o);
    if (!child1)
        return fail("ls -l");
    mp_subprocess_opts o2 = {.in = MP_STDIO_FD(mp_popen_fd(child1, 1)),
                             .out = MP_STDIO_PIPE,
                             .err = MP_STDIO_STDOUT};
    mp_popen *child2 = mp_popen_start(wc, &o2);
    if (!child2)
        return fail("wc");
    mp_popen_close_fd(child1, 1); /* only wc reads it now */
    mp_run_result out;
    if (mp_popen_communicate(child2, NULL, 0, -1, &out) != 0)
        return fail("communicate");
    printf("(");
    print_bytes(out.out, out.out_len);
    printf(", None)\n");
    mp_run_result_free(&out);
    mp_popen_wait(child1, -1, NULL);
    mp_popen_free(child1);
    mp_popen_free(child2);

    /* The same as one call, every status reported: ls -l | wc -l */
    const char *wc_l[] = {"wc", "-l", NULL};
    const char *const *cmds[] = {ls_l, wc_l};
    int rcs[2];
    mp_run_result r;
    if (mp_pipeline(cmds, 2, &o, &r, rcs) != 0)
        return fail("pipeline");
    printf("ls -l | wc -l -> %s", r.out);
    printf("returncodes: [%d, %d]\n", rcs[0], rcs[1]);
    mp_run_result_free(&r);

    snprintf(cmd, sizeof cmd, "rm -r %s", dir);
    return mp_run_sh(cmd, NULL, NULL);
}
