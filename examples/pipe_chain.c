/* A three-stage pipe chain: numbers flow through two pipes, squared on the way, until end of file. */
/* a three-stage chain. create_items sends 0..9 into pipe_1,
 * multiply_items squares what it reads from pipe_1 into pipe_2, the parent prints what
 * arrives on pipe_2 until end of file, then "End". Python:
 *
 *     def create_items(pipe):
 *         output_pipe, _ = pipe
 *         for item in range(10):
 *             output_pipe.send(item)
 *         output_pipe.close()
 *     def multiply_items(pipe_1, pipe_2):
 *         close, input_pipe = pipe_1
 *         close.close()
 *         output_pipe, _ = pipe_2
 *         try:
 *             while True:
 *                 item = input_pipe.recv()
 *                 output_pipe.send(item * item)
 *         except EOFError:
 *             output_pipe.close()
 *     ...
 *     try:
 *         while True:
 *             print(pipe_2[1].recv())
 *     except EOFError:
 *         print("End")
 *
 * EOFError is MP_EEOF. Each process closes the ends it does not use, as in Python: under
 * the default start method (fork) a child's imported ends are the very fds it inherited, so
 * closing them really closes them and the end of file arrives, as it does in Python. */
#include <stdio.h>

#include "multiproc.h"
#include "multiproc/connection.h"

static mp_connection *conn_at(mp_value *args, size_t i)
{
    mp_connection *c = NULL;
    mp_value_unpack(mp_value_list_get(args, i), "h", &mp_kind_connection, &c);
    return c;
}

static int create_items(mp_value *args) /* [pipe_1[0], pipe_1[1]] */
{
    mp_connection *output_pipe = conn_at(args, 0);
    mp_connection_close(conn_at(args, 1));
    for (int item = 0; item < 10; item++) {
        mp_value *v = mp_value_int(item);
        mp_connection_send(output_pipe, v);
        mp_value_free(v);
    }
    mp_connection_close(output_pipe);
    return 0;
}

static int multiply_items(mp_value *args) /* [pipe_1[0], pipe_1[1], pipe_2[0], pipe_2[1]] */
{
    mp_connection_close(conn_at(args, 0)); /* close.close() */
    mp_connection *input_pipe = conn_at(args, 1);
    mp_connection *output_pipe = conn_at(args, 2);
    mp_connection_close(conn_at(args, 3));
    mp_value *item;
    int r;
    while ((r = mp_connection_recv(input_pipe, &item)) == 0) {
        int64_t x = mp_value_get_int(item);
        mp_value_free(item);
        mp_value *sq = mp_value_int(x * x);
        mp_connection_send(output_pipe, sq);
        mp_value_free(sq);
    }
    mp_connection_close(output_pipe); /* except EOFError: output_pipe.close() */
    return r == MP_EEOF ? 0 : 1;
}

static mp_process *start(mp_target_fn fn, mp_value *args)
{
    mp_process *p = mp_process_new(
        &(mp_process_opts){.target = fn, .args = args});
    if (!p || mp_process_start(p) < 0) {
        fprintf(stderr, "start: %s\n", mp_last_error());
        return NULL;
    }
    return p;
}

int main(void)
{
    mp_connection *p1[2], *p2[2];
    mp_pipe(true, &p1[0], &p1[1]);
    mp_value *args1 = mp_value_pack("[h h]", &mp_kind_connection, p1[0], &mp_kind_connection, p1[1]);
    mp_process *producer = start(create_items, args1);
    mp_pipe(true, &p2[0], &p2[1]);
    mp_value *args2 = mp_value_pack("[h h h h]", &mp_kind_connection, p1[0],
                                    &mp_kind_connection, p1[1], &mp_kind_connection, p2[0],
                                    &mp_kind_connection, p2[1]);
    mp_process *multiplier = start(multiply_items, args2);
    if (!producer || !multiplier)
        return 1;
    mp_connection_close(p1[0]);
    mp_connection_close(p1[1]);
    mp_connection_close(p2[0]);
    mp_value *v;
    int r;
    while ((r = mp_connection_recv(p2[1], &v)) == 0) {
        printf("%lld\n", (long long)mp_value_get_int(v));
        mp_value_free(v);
    }
    if (r == MP_EEOF)
        printf("End\n");
    else
        fprintf(stderr, "recv: %s\n", mp_last_error());
    mp_process_join(producer, -1);
    mp_process_join(multiplier, -1);
    mp_process_free(producer);
    mp_process_free(multiplier);
    mp_value_free(args1);
    mp_value_free(args2);
    for (int i = 0; i < 2; i++) {
        mp_connection_free(p1[i]);
        mp_connection_free(p2[i]);
    }
    return r == MP_EEOF ? 0 : 1;
}
