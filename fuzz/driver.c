/* A stand-in for libFuzzer's main, so `make test` replays every target over its corpus
 * with the normal compiler (no clang needed, no new inputs generated).
 *
 * Usage: fuzz_<name> PATH...   each PATH a file or a directory of files (not recursive).
 * Each file is passed once to LLVMFuzzerTestOneInput; a crash or a sanitizer report
 * fails the run like any test, and the file that caused it is named on stderr first.
 * As under libFuzzer (-malloc_limit_mb, 2048 by default), a single allocation above
 * 2 GiB is a failure: a few bytes of input must not make the library ask for gigabytes. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MALLOC_LIMIT ((size_t)2048 << 20)

#if defined(__SANITIZE_ADDRESS__)
/* ASan's allocator refuses (and reports) an allocation above its maximum. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "max_allocation_size_mb=2048"; }
#elif defined(__SANITIZE_THREAD__)
/* TSan replaces malloc itself, and calls it while starting, before an instrumented
 * replacement of ours could run (it crashed there): its allocator enforces the limit. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "max_allocation_size_mb=2048"; }
#else
/* glibc's allocator behind a size check (glibc lets a program replace malloc). */
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);

static void *too_big(size_t n)
{
    fprintf(stderr, "==ERROR: malloc(%zu) exceeds the limit of %zu bytes\n", n, MALLOC_LIMIT);
    abort();
}

void *malloc(size_t n) { return n > MALLOC_LIMIT ? too_big(n) : __libc_malloc(n); }
void *realloc(void *p, size_t n) { return n > MALLOC_LIMIT ? too_big(n) : __libc_realloc(p, n); }
void *calloc(size_t n, size_t size)
{
    if (size && n > MALLOC_LIMIT / size)
        too_big(n > SIZE_MAX / size ? SIZE_MAX : n * size);
    return __libc_calloc(n, size);
}
#endif

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    struct stat st;
    size_t n = fstat(fileno(f), &st) == 0 ? (size_t)st.st_size : 0;
    uint8_t *buf = malloc(n ? n : 1);
    size_t got = buf ? fread(buf, 1, n, f) : 0;
    fclose(f);
    if (!buf || got != n) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        return -1;
    }
    fprintf(stderr, "%s\n", path); /* so a crash names its input */
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *dir, int *count)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, by_name);
    if (n < 0) {
        perror(dir);
        return -1;
    }
    int r = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        struct stat st;
        if (list[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) < 0)
                r = -1;
            ++*count;
        }
        free(list[i]);
    }
    free(list);
    return r;
}

int main(int argc, char **argv)
{
    int count = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            failed |= run_dir(argv[i], &count) < 0;
        else
            failed |= run_file(argv[i]) < 0 || (++count, 0);
    }
    if (count == 0) {
        fprintf(stderr, "no inputs (usage: %s FILE|DIR...)\n", argv[0]);
        return 1;
    }
    printf("%d inputs ran\n", count);
    return failed;
}
