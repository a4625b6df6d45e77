/* A child puts a 1,000,000-byte item and exits before anyone reads it: the parent's join does not deadlock. */
/* Python's documented deadlock: a child puts a 1,000,000-byte string and the
 * parent joins the child before getting it. Python:
 *
 *     def f(q):
 *         q.put('X' * 1000000)
 *     queue = Queue()
 *     p = Process(target=f, args=(queue,))
 *     p.start()
 *     p.join()                    # this deadlocks
 *     obj = queue.get()
 *
 * Python's child waits at exit for its feeder thread to push the item into a pipe nobody
 * reads. Our queue keeps the item in shared memory, so the child exits at once and the
 * parent's join and get both complete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multiproc.h"
#include "multiproc/queue.h"

static int f(mp_value *args)
{
    mp_queue *q;
    if (mp_value_unpack(args, "[h]", &mp_kind_queue, &q) < 0)
        return 1;
    char *s = malloc(1000001);
    memset(s, 'X', 1000000);
    s[1000000] = '\0';
    mp_value *v = mp_value_str(s);
    int r = mp_queue_put(q, v, -1);
    mp_value_free(v);
    free(s);
    return r == 0 ? 0 : 1;
}

int main(void)
{
    mp_queue *queue = mp_queue_new(NULL);
    mp_value *args = mp_value_pack("[h]", &mp_kind_queue, queue);
    mp_process *p = mp_process_new(&(mp_process_opts){.target = f, .args = args});
    if (!p || mp_process_start(p) < 0) {
        fprintf(stderr, "start: %s\n", mp_last_error());
        return 1;
    }
    if (mp_process_join(p, 10) < 0) { /* Python never returns from this join */
        fprintf(stderr, "join: %s\n", mp_last_error());
        return 1;
    }
    int code = -1;
    mp_process_exitcode(p, &code);
    printf("joined %s: exitcode %d\n", mp_process_name(p), code);
    mp_value *obj = NULL;
    if (mp_queue_get(queue, &obj, 10) < 0) {
        fprintf(stderr, "get: %s\n", mp_last_error());
        return 1;
    }
    size_t len = 0;
    const char *s = mp_value_get_str(obj, &len);
    printf("got a str of %zu bytes starting with '%.5s'\n", len, s ? s : "");
    mp_value_free(obj);
    mp_process_free(p);
    mp_value_free(args);
    mp_queue_free(queue);
    return 0;
}
