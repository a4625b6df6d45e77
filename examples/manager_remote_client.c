/* A client of the standalone server: connects by TCP address + authkey, posts, reads. */
/* Remote manager example in C, the client half (Python's
 * `m = BaseManager(address=(host, 50000), authkey=b'abracadabra'); m.connect()`):
 *
 *     ./manager_remote_client host:port
 *
 * Two proxies to the server's one Board post a message each and read them back; a
 * wrong key is refused; then the client asks the server to stop. Prints
 *
 *     posted message 1
 *     posted message 2
 *     board: ['hello from the client', 'and again, through another proxy']
 *     with a wrong key: MP_EAUTH
 *     asked the server to shut down
 */
#include <multiproc.h>

#include <stdio.h>

int main(int argc, char **argv)
{
    const char *address = argc > 1 ? argv[1] : "127.0.0.1:50000";
    mp_manager *m = mp_manager_connect(address, "abracadabra", 11, 10);
    if (!m) {
        fprintf(stderr, "connect to %s: %s\n", address, mp_last_error());
        return 1;
    }
    mp_proxy *b1 = mp_manager_create(m, "Board", NULL), *b2 = mp_manager_create(m, "Board", NULL);
    mp_value *n = NULL, *all = NULL;
    if (!b1 || !b2 || mp_proxy_callf(b1, "post", &n, "[s]", "hello from the client") < 0) {
        fprintf(stderr, "board: %s\n", mp_last_error());
        return 1;
    }
    printf("posted message %lld\n", (long long)mp_value_get_int(n));
    mp_value_free(n);
    mp_proxy_callf(b2, "post", &n, "[s]", "and again, through another proxy");
    printf("posted message %lld\n", (long long)mp_value_get_int(n));
    mp_value_free(n);
    mp_proxy_callf(b1, "read", &all, NULL);
    char *s = mp_value_repr(all);
    printf("board: %s\n", s);
    mp_free(s);
    mp_value_free(all);

    mp_manager *bad = mp_manager_connect(address, "guess", 5, 10);
    printf("with a wrong key: %s\n", bad ? "connected?!" : mp_errname(mp_last_error_code()));
    mp_manager_free(bad);

    mp_proxy_free(b2);
    mp_proxy_free(b1);
    mp_manager_shutdown(m);
    printf("asked the server to shut down\n");
    mp_manager_free(m);
    return 0;
}
