/* A standalone manager server on TCP: clients on other machines connect with the key. */
/* Remote manager example in C, the server half (Python's
 * `BaseManager(address=('', 50000), authkey=b'abracadabra').get_server().serve_forever()`
 * with a registered `get_board`): it serves a "Board" type whose every instance is the
 * one message board kept in this process, so every client that creates a Board shares it
 * (as every Python client's get_queue() returns the one queue).
 *
 *     ./manager_remote_server [host:port]    (default 127.0.0.1:50000; port 0 picks one)
 *
 * It prints "serving at <host:port>" and serves until a client calls
 * mp_manager_shutdown (the client half, manager_remote_client, does after its work).
 * Clients can call only "post" and "read": requests are data, never code.
 */
#include <multiproc.h>

#include <stdio.h>

static mp_value *board; /* the messages posted so far: a list of str */

static int board_create(const mp_value *args, void **self)
{
    (void)args;
    *self = board; /* every proxy refers to the one board */
    return 0;
}

static int board_post(void *self, const mp_value *args, mp_value **result)
{
    const char *msg = mp_value_get_str(mp_value_list_get(args, 0), NULL);
    if (mp_value_len(args) != 1 || !msg) {
        *result = mp_value_str("post() takes one str");
        return MP_ETYPE;
    }
    mp_value_list_append(self, mp_value_str(msg));
    *result = mp_value_int((int64_t)mp_value_len(self)); /* the message's number */
    return 0;
}

static int board_read(void *self, const mp_value *args, mp_value **result)
{
    (void)args;
    *result = mp_value_copy(self);
    return *result ? 0 : MP_EINVAL;
}

static const mp_manager_method board_methods[] = {{"post", board_post}, {"read", board_read}};
static const mp_manager_type board_type = {.name = "Board",
                                           .create = board_create,
                                           .methods = board_methods,
                                           .nmethods = 2};

int main(int argc, char **argv)
{
    board = mp_value_list();
    mp_manager_opts o = {.address = argc > 1 ? argv[1] : "127.0.0.1:50000",
                         .authkey = "abracadabra",
                         .authkey_len = 11,
                         .types = &board_type,
                         .ntypes = 1};
    mp_manager_server *s = mp_manager_server_new(&o);
    if (!s) {
        fprintf(stderr, "server: %s\n", mp_last_error());
        return 1;
    }
    printf("serving at %s\n", mp_manager_server_address(s));
    fflush(stdout);
    int r = mp_manager_server_serve_forever(s);
    char *all = mp_value_repr(board);
    printf("server stopped; the board held %s\n", all);
    mp_free(all);
    mp_manager_server_free(s);
    mp_value_free(board);
    return r < 0;
}
