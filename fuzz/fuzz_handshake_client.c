/* Fuzz target: the client side of the authentication handshake (src/handshake.c, as in
 * mp_client) facing a hostile server.
 *
 * Input: one config byte, then the bytes the server sends (then end of file).
 *   bits 0-2  the digest of our challenge (mp_auth_digest, modulo 7)
 * The server's challenge and verdict come from the input, so the first half is fully
 * reachable; our random challenge in the second half cannot be answered by it.
 * Checks: no crash, leak or UB; the handshake ends without waiting once the server has
 * finished; a server that does not know the key is never accepted. */
#include "handshake_peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    int sv[2];
    socket_pair(sv);
    mp__hs *h = mp__hs_new(sv[0], false, FUZZ_KEY, FUZZ_KEYLEN, (mp_auth_digest)(data[0] & 7) % 7,
                           -1);
    if (!h)
        abort();
    peer_send_last(sv[1], data + 1, size - 1);
    if (run_to_end(h) == 1) {
        fprintf(stderr, "a server that does not know the key was accepted\n");
        abort();
    }
    mp__hs_free(h);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
