/* Named shared memory and a ShareableList, attached by name from a second process. */
/* Named shared memory and a ShareableList (Python's multiprocessing.shared_memory):
 * the parent creates both, a child attaches to the segment by name and edits the
 * list it receives, the parent prints the result and unlinks both. In Python:
 *
 *     shm = shared_memory.SharedMemory(create=True, size=16)
 *     sl = shared_memory.ShareableList(['howdy', b'HoWdY', -273.154, 100, None, True, 42])
 *     # child: SharedMemory(name).buf[:5] = b'hello'; sl[3] = 'seven'[:...] ...
 */
#include <multiproc.h>

#include <stdio.h>
#include <string.h>

static int child(mp_value *args)
{
    const char *name = NULL;
    mp_sl *sl = NULL;
    if (mp_value_unpack(args, "[s h]", &name, &mp_kind_sl, &sl) < 0)
        return 1;
    mp_shm *shm = mp_shm_attach(name); /* by name, like SharedMemory(name) */
    if (!shm)
        return 2;
    memcpy(mp_shm_buf(shm), "hello", 5);
    mp_shm_close(shm);
    mp_sl_item v = mp_sl_bytes("ab\0\0", 4); /* trailing NULs are lost, as in Python */
    mp_sl_set(sl, 1, &v);
    v = mp_sl_float(3.5); /* any type fits a non-string slot */
    mp_sl_set(sl, 3, &v);
    v = mp_sl_str("a much longer string than howdy");
    if (mp_sl_set(sl, 0, &v) == MP_ERANGE)
        printf("child: %s\n", mp_last_error());
    return 0;
}

static void print_item(const mp_sl_item *it)
{
    switch (it->type) {
    case MP_SL_NONE: printf("None"); break;
    case MP_SL_INT: printf("%lld", (long long)it->i); break;
    case MP_SL_FLOAT: printf("%g", it->f); break;
    case MP_SL_BOOL: printf(it->b ? "True" : "False"); break;
    case MP_SL_STR: printf("'%.*s'", (int)it->len, it->data); break;
    case MP_SL_BYTES:
        printf("b'");
        for (size_t i = 0; i < it->len; i++)
            printf(it->data[i] >= 32 && it->data[i] < 127 ? "%c" : "\\x%02x",
                   (unsigned char)it->data[i]);
        printf("'");
        break;
    }
}

int main(void)
{
    mp_shm *shm = mp_shm_create(NULL, 16, NULL);
    mp_sl_item items[] = {mp_sl_str("howdy"), mp_sl_bytes("HoWdY", 5), mp_sl_float(-273.154),
                          mp_sl_int(100),     mp_sl_none(),           mp_sl_bool(true),
                          mp_sl_int(42)};
    mp_sl *sl = mp_sl_create(items, 7, NULL, NULL);
    if (!shm || !sl) {
        fprintf(stderr, "%s\n", mp_last_error());
        return 1;
    }
    mp_value *args = mp_value_pack("[s h]", mp_shm_name(shm), &mp_kind_sl, sl);
    mp_process_opts o = {.target = child, .args = args};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    mp_process_start(p);
    mp_process_join(p, -1);
    mp_process_free(p);

    printf("shm: %.5s\n", (char *)mp_shm_buf(shm));
    printf("list: [");
    for (size_t i = 0; i < mp_sl_len(sl); i++) {
        mp_sl_item it;
        mp_sl_get(sl, (long)i, &it);
        printf(i ? ", " : "");
        print_item(&it);
    }
    printf("]\n");
    mp_shm_unlink(shm); /* forget these and the resource tracker removes them */
    mp_shm_close(shm);
    mp_shm_unlink(mp_sl_shm(sl));
    mp_sl_close(sl);
    return 0;
}
