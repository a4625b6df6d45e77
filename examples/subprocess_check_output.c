/* run() and check_output(): exit codes, captured output, a failing command as an error. */
/* run()/check_output() examples, in C:
 *
 *   proc = subprocess.run(['uname', '-r'], stdout=subprocess.PIPE)
 *   print(proc.returncode); print(proc.stdout)
 *
 *   subprocess.check_output("ls non_existent_file; exit 0",
 *                           stderr=subprocess.STDOUT, shell=True)
 *   -> 'ls: non_existent_file: No such file or directory\n'   (BSD ls; GNU ls words it
 *      "ls: cannot access 'non_existent_file': No such file or directory")
 *
 * plus check=True on a failing command (CalledProcessError -> MP_ECHILDFAIL). */
#include <stdio.h>
#include <string.h>

#include "multiproc/subprocess.h"

/* Print bytes the way Python prints a bytes object: b'...\n' (double quotes when the
 * text holds a single quote and no double one). */
static void print_bytes(const char *s)
{
    char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    printf("b%c", q);
    for (; *s; s++) {
        if (*s == '\n')
            fputs("\\n", stdout);
        else if (*s == q)
            printf("\\%c", q);
        else
            putchar(*s);
    }
    printf("%c\n", q);
}

int main(void)
{
    const char *uname[] = {"uname", "-s", NULL}; /* -s rather than -r: same on every Linux */
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE};
    mp_run_result r;
    if (mp_run(uname, &o, &r) != 0) {
        fprintf(stderr, "run: %s\n", mp_last_error());
        return 1;
    }
    printf("%d\n", r.returncode);
    print_bytes(r.out);
    mp_run_result_free(&r);

    char *out;
    mp_subprocess_opts merged = {.err = MP_STDIO_STDOUT};
    if (mp_check_output_sh("ls non_existent_file; exit 0", &merged, &out, NULL) != 0) {
        fprintf(stderr, "check_output: %s\n", mp_last_error());
        return 1;
    }
    print_bytes(out);
    mp_free(out);

    /* check=True: the error still carries the returncode and the output. */
    mp_subprocess_opts check = {.check = true, .capture_output = true};
    int rc = mp_run_sh("echo some output; exit 3", &check, &r);
    printf("%s\n", rc == MP_ECHILDFAIL ? mp_last_error() : "no error?");
    printf("returncode=%d stdout=", r.returncode);
    print_bytes(r.out);
    mp_run_result_free(&r);

    /* A missing program is an error in the parent, not a child exiting 127. */
    const char *missing[] = {"nosuchprog", NULL};
    rc = mp_run(missing, NULL, NULL);
    printf("%s\n", mp_last_error());
    return rc == -2 ? 0 : 1; /* -ENOENT */
}
