/* A duplex Pipe: a child sends [42, None, 'hello'] and the parent prints it. */
/* a child sends [42, None, 'hello'] through a duplex Pipe; the parent
 * receives and prints it, as Python's:
 *
 *     def worker(conn):
 *         conn.send([42, None, 'hello'])
 *         conn.close()
 *     parent_conn, child_conn = multiprocessing.Pipe()
 *     p = multiprocessing.Process(target=worker, args=(child_conn,))
 *     p.start()
 *     print(parent_conn.recv())      # [42, None, 'hello']
 *     p.join()
 */
#include <stdio.h>

#include "multiproc.h"
#include "multiproc/connection.h"

static int worker(mp_value *args)
{
    mp_connection *conn;
    if (mp_value_unpack(args, "[h]", &mp_kind_connection, &conn) < 0)
        return 1;
    mp_value *msg = mp_value_pack("[i n s]", 42, "hello");
    int r = mp_connection_send(conn, msg);
    mp_value_free(msg);
    mp_connection_close(conn);
    return r == 0 ? 0 : 1;
}

int main(void)
{
    mp_connection *parent_conn, *child_conn;
    if (mp_pipe(true, &parent_conn, &child_conn) < 0)
        return 1;
    mp_value *args = mp_value_pack("[h]", &mp_kind_connection, child_conn);
    mp_process *p = mp_process_new(&(mp_process_opts){.target = worker, .args = args});
    if (!p || mp_process_start(p) < 0) {
        fprintf(stderr, "start: %s\n", mp_last_error());
        return 1;
    }
    mp_value *got = NULL;
    if (mp_connection_recv(parent_conn, &got) < 0) {
        fprintf(stderr, "recv: %s\n", mp_last_error());
        return 1;
    }
    char *text = mp_value_repr(got);
    printf("%s\n", text);
    mp_free(text);
    mp_value_free(got);
    mp_process_join(p, -1);
    mp_process_free(p);
    mp_value_free(args);
    mp_connection_free(parent_conn);
    mp_connection_free(child_conn);
    return 0;
}
