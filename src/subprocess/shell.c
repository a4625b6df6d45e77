/* subprocess getoutput / getstatusoutput: Python's legacy shell helpers. */
#include "multiproc/subprocess.h"

#include "internal/common.h"

#include <stdlib.h>
#include <string.h>

int mp_getstatusoutput(const char *cmd, int *status, char **out, size_t *len)
{
    if (!cmd || !out)
        return mp__error(MP_EINVAL, "getstatusoutput: NULL %s", cmd ? "output" : "command");
    *out = NULL;
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE, .err = MP_STDIO_STDOUT};
    mp_run_result res = {0};
    int r = mp_run_sh(cmd, &o, &res);
    if (r < 0) {
        mp_run_result_free(&res);
        return r;
    }
    if (!res.out) {
        mp_run_result_free(&res);
        return mp__error(-ENOMEM, "getstatusoutput: the output buffer");
    }
    if (res.out_len && res.out[res.out_len - 1] == '\n') /* Python strips one */
        res.out[--res.out_len] = '\0';
    if (status)
        *status = res.returncode;
    if (len)
        *len = res.out_len;
    *out = res.out;
    return 0;
}

int mp_getoutput(const char *cmd, char **out, size_t *len)
{
    return mp_getstatusoutput(cmd, NULL, out, len);
}
