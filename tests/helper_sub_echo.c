/* A child for the interactive subprocess tests: answers each stdin line with
 * "ok: <line>" (flushed at once), exits 0 at EOF or on "quit". "stderr <text>"
 * writes the text to stderr instead. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = 0;
        if (strcmp(line, "quit") == 0)
            break;
        if (strncmp(line, "stderr ", 7) == 0) {
            fprintf(stderr, "%s\n", line + 7);
            fflush(stderr);
            continue;
        }
        printf("ok: %s\n", line);
        fflush(stdout);
    }
    free(line);
    return 0;
}
