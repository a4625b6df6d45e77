/* Private pieces of the pickle codec (src/value/pickle_enc.c, pickle_dec.c): opcodes and
 * limits. */
#ifndef MP_INTERNAL_PICKLE_H
#define MP_INTERNAL_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Nesting limit of a value, as MessagePack's. */
#define MP__PICKLE_MAX_DEPTH 512

/* Pickle opcodes (Lib/pickle.py). */
enum {
    PK_MARK = '(', PK_STOP = '.', PK_POP = '0', PK_POP_MARK = '1', PK_DUP = '2',
    PK_FLOAT = 'F', PK_INT = 'I', PK_BININT = 'J', PK_BININT1 = 'K', PK_LONG = 'L',
    PK_BININT2 = 'M', PK_NONE = 'N', PK_PERSID = 'P', PK_BINPERSID = 'Q', PK_REDUCE = 'R',
    PK_STRING = 'S', PK_BINSTRING = 'T', PK_SHORT_BINSTRING = 'U', PK_UNICODE = 'V',
    PK_BINUNICODE = 'X', PK_APPEND = 'a', PK_BUILD = 'b', PK_GLOBAL = 'c', PK_DICT = 'd',
    PK_EMPTY_DICT = '}', PK_APPENDS = 'e', PK_GET = 'g', PK_BINGET = 'h', PK_INST = 'i',
    PK_LONG_BINGET = 'j', PK_LIST = 'l', PK_EMPTY_LIST = ']', PK_OBJ = 'o', PK_PUT = 'p',
    PK_BINPUT = 'q', PK_LONG_BINPUT = 'r', PK_SETITEM = 's', PK_TUPLE = 't',
    PK_EMPTY_TUPLE = ')', PK_SETITEMS = 'u', PK_BINFLOAT = 'G',
    /* protocol 2 */
    PK_PROTO = 0x80, PK_NEWOBJ = 0x81, PK_EXT1 = 0x82, PK_EXT2 = 0x83, PK_EXT4 = 0x84,
    PK_TUPLE1 = 0x85, PK_TUPLE2 = 0x86, PK_TUPLE3 = 0x87, PK_NEWTRUE = 0x88,
    PK_NEWFALSE = 0x89, PK_LONG1 = 0x8a, PK_LONG4 = 0x8b,
    /* protocol 3 */
    PK_BINBYTES = 'B', PK_SHORT_BINBYTES = 'C',
    /* protocol 4 */
    PK_SHORT_BINUNICODE = 0x8c, PK_BINUNICODE8 = 0x8d, PK_BINBYTES8 = 0x8e,
    PK_EMPTY_SET = 0x8f, PK_ADDITEMS = 0x90, PK_FROZENSET = 0x91, PK_NEWOBJ_EX = 0x92,
    PK_STACK_GLOBAL = 0x93, PK_MEMOIZE = 0x94, PK_FRAME = 0x95,
    /* protocol 5 */
    PK_BYTEARRAY8 = 0x96, PK_NEXT_BUFFER = 0x97, PK_READONLY_BUFFER = 0x98
};

/* Whether s[0..n) is UTF-8 as Python's pickle writes it: well-formed, except that
 * surrogate code points (U+D800..U+DFFF, 'surrogatepass') are allowed. */
bool mp__utf8_valid(const char *s, size_t n);

/* mp__utf8_valid with short ASCII text (most keys and names) checked inline. */
static inline bool mp__utf8_valid_inline(const char *s, size_t n)
{
    if (n <= 64) {
        uint64_t acc = 0;
        size_t i = 0;
        for (; n - i >= 8; i += 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            acc |= w;
        }
        for (; i < n; i++)
            acc |= (unsigned char)s[i];
        if (!(acc & 0x8080808080808080ull))
            return true;
    }
    return mp__utf8_valid(s, n);
}

#endif
