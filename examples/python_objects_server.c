/* A C server answering a Python multiprocessing.connection Client that sends objects. */
/* The server listens with the pickle codec, starts python_objects_client.py (beside this
 * source) and answers each object it sends: a dict of numbers gets their sum back, a list
 * gets its repr, anything else comes back as is; None ends the talk. The Python side is
 * ordinary multiprocessing code (Client, send, recv). A pickle that names code would be
 * refused here (MP_EPROTO) without running anything. */
#include <multiproc.h>

#include <libgen.h>
#include <stdio.h>
#include <string.h>

static mp_value *answer(const mp_value *v)
{
    if (mp_value_type(v) == MP_MAP) {
        double sum = 0;
        for (size_t i = 0; i < mp_value_len(v); i++)
            sum += mp_value_get_float(mp_value_map_val(v, i));
        return mp_value_pack("{s f}", "sum", sum);
    }
    if (mp_value_type(v) == MP_LIST) {
        char *r = mp_value_repr(v);
        mp_value *s = mp_value_pack("[s i]", r, (int)mp_value_len(v));
        mp_free(r);
        return s;
    }
    return mp_value_copy(v);
}

static int serve(mp_connection *c)
{
    for (;;) {
        mp_value *v = NULL;
        int r = mp_connection_recv(c, &v);
        if (r < 0) {
            fprintf(stderr, "recv: %s\n", mp_last_error());
            return 1;
        }
        char *text = mp_value_repr(v);
        printf("C server got %s\n", text);
        mp_free(text);
        bool done = mp_value_type(v) == MP_NIL;
        mp_value *reply = answer(v);
        r = mp_connection_send(c, reply);
        mp_value_free(reply);
        mp_value_free(v);
        if (r < 0 || done)
            return r < 0;
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines in order with the Python child's */
    const char *key = "example-key";
    mp_listener_opts lo = {.authkey = key, .authkey_len = strlen(key), .codec = MP_CODEC_PICKLE};
    mp_listener *l = mp_listener_new(&lo);
    if (!l) {
        fprintf(stderr, "listen: %s\n", mp_last_error());
        return 1;
    }
    char here[1024], script[1100];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(script, sizeof script, "%s/python_objects_client.py", dirname(here));
    const char *argv[] = {"python3", script, mp_listener_address(l), key, NULL};
    mp_popen *py = mp_popen_start(argv, NULL);
    mp_connection *c = NULL;
    int rc = 1;
    if (py && mp_listener_accept(l, 30, &c) == 0) {
        rc = serve(c);
        mp_connection_free(c);
    } else {
        fprintf(stderr, "%s\n", mp_last_error());
    }
    int pyrc = -1;
    if (py && mp_popen_wait(py, 30, &pyrc) == 0)
        printf("python client exited with %d\n", pyrc);
    mp_popen_free(py);
    mp_listener_free(l);
    return rc || pyrc;
}
