/* Values built from format strings and printed the way Python prints the same data. */
/* Values printed the way Python prints the same data.
 *
 * Python:                                   prints
 *   print([42, None, 'hello'])              [42, None, 'hello']
 *   print({0.25: None, 1: '1', '2': 2})     {0.25: None, 1: '1', '2': 2}
 *
 * and a round trip through MessagePack, as a value travels to another process. */
#include <multiproc.h>

#include <stdio.h>
#include <stdlib.h>

static int show(const mp_value *v)
{
    char *s = mp_value_repr(v);
    if (!s)
        return -1;
    printf("%s\n", s);
    mp_free(s);
    return 0;
}

int main(void)
{
    mp_value *list = mp_value_pack("[i n s]", 42, "hello");
    mp_value *map = mp_value_pack("{f n i s s i}", 0.25, 1, "1", "2", 2);
    if (!list || !map || show(list) < 0 || show(map) < 0) {
        fprintf(stderr, "value_pack: %s\n", mp_last_error());
        return 1;
    }

    /* encode, decode, read back with a format string */
    char *buf = NULL;
    size_t len = 0;
    mp_value *back = NULL;
    int i = 0;
    const char *s = NULL;
    if (mp_value_encode(list, &buf, &len, NULL, 0, NULL) < 0 ||
        mp_value_decode(buf, len, NULL, 0, &back) < 0 ||
        mp_value_unpack(back, "[i n s]", &i, &s) < 0) {
        fprintf(stderr, "value_pack: %s\n", mp_last_error());
        return 1;
    }
    printf("%zu bytes of MessagePack -> i=%d s=%s, equal: %s\n", len, i, s,
           mp_value_equal(list, back) ? "True" : "False");

    mp_free(buf);
    mp_value_free(back);
    mp_value_free(list);
    mp_value_free(map);
    return 0;
}
