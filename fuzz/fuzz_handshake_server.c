/* Fuzz target: the server side of the authentication handshake (src/handshake.c, as in
 * mp_listener_accept) facing a hostile client.
 *
 * Input: one config byte, then the bytes the client sends (then end of file).
 *   bits 0-2  the digest of our challenge (mp_auth_digest, modulo 7)
 *   bit 3     an honest client first: it answers our challenge correctly, so the input
 *             reaches the second half (our answer to the client's challenge, its verdict)
 * Checks: no crash, leak or UB; the handshake ends without waiting once the client has
 * finished; a client that does not know the key is never accepted. */
#include "handshake_peer.h"

/* An honest client's first half: read our challenge, send the right reply. */
static void answer_honestly(int peer)
{
    mp__hs *c = mp__hs_new(peer, false, FUZZ_KEY, FUZZ_KEYLEN, MP_AUTH_DEFAULT, -1);
    if (!c || mp__hs_step(c) != 0) /* now waiting for our verdict */
        abort();
    mp__hs_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    int sv[2];
    socket_pair(sv);
    mp__hs *h = mp__hs_new(sv[0], true, FUZZ_KEY, FUZZ_KEYLEN, (mp_auth_digest)(data[0] & 7) % 7,
                           -1);
    if (!h || mp__hs_step(h) != 0) /* the challenge is out */
        abort();
    bool honest = data[0] & 8;
    if (honest)
        answer_honestly(sv[1]);
    peer_send_last(sv[1], data + 1, size - 1);
    int r = run_to_end(h);
    if (r == 1 && !honest) {
        fprintf(stderr, "a client that does not know the key was accepted\n");
        abort();
    }
    mp__hs_free(h);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
