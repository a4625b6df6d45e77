/* The HMAC handshake of multiprocessing.connection (deliver_challenge/answer_challenge)
 * as a non-blocking state machine (see internal/handshake.h).
 *
 * DESIGN: one mp__hs per connection being authenticated, owned by one thread at a time
 * (the accepting thread of a listener, or mp_client's caller). It never blocks: each step
 * sends or receives what the socket takes now and says which event it waits for; the
 * caller polls, and the caller alone enforces the deadline, so the whole exchange has one
 * deadline however slowly the peer trickles its bytes.
 *
 * Two forms exist and we accept both from a peer:
 *   legacy (Python <= 3.11): "#CHALLENGE#" + 20 random bytes, reply = raw HMAC-MD5 (16 bytes)
 *   modern (Python >= 3.12): "#CHALLENGE#{sha256}" + 40 random bytes, reply = "{sha256}" +
 *                            HMAC over the whole message including the prefix.
 * A reply of 16 or 20 bytes is legacy MD5, as in 3.12's _get_digest_name_and_payload.
 * Every frame is bounded (IN_CAP) before its body is read, so a huge announced length is
 * refused at once. Stages, server order (a client runs the two halves the other way):
 *   deliver: send challenge -> receive reply -> send WELCOME/FAILURE
 *   answer:  receive challenge -> send reply -> receive WELCOME */
#define _GNU_SOURCE
#include "internal/handshake.h"

#include "internal/common.h"
#include "internal/iwait.h"

#include <arpa/inet.h>
#include <endian.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#define CHALLENGE "#CHALLENGE#"
#define WELCOME "#WELCOME#"
#define FAILURE "#FAILURE#"
#define LEGACY_MSG_LEN 20
#define MODERN_MSG_LEN 40
#define MD5_LEN 16
#define MAX_DIGEST_NAME 8 /* "sha3_256" */
#define IN_CAP (256 + MAX_DIGEST_NAME + 8) /* the largest handshake message we take */

enum stage { D_SEND_CH, D_RECV_REPLY, D_SEND_VERDICT, A_RECV_CH, A_SEND_REPLY, A_RECV_VERDICT,
             DONE };

static const enum stage server_order[] = {D_SEND_CH, D_RECV_REPLY, D_SEND_VERDICT,
                                          A_RECV_CH, A_SEND_REPLY, A_RECV_VERDICT, DONE};
static const enum stage client_order[] = {A_RECV_CH, A_SEND_REPLY, A_RECV_VERDICT,
                                          D_SEND_CH, D_RECV_REPLY, D_SEND_VERDICT, DONE};

struct mp__hs {
    int fd;
    const enum stage *order;
    int at; /* index into order */
    const unsigned char *key;
    size_t keylen;
    mp_auth_digest digest;
    double deadline;
    unsigned char msg[64]; /* our challenge payload ("{name}" + random bytes) */
    size_t msglen;
    unsigned char out[4 + 128]; /* the frame being sent */
    size_t outlen, outoff;
    unsigned char hdr[12]; /* the frame being received */
    size_t hdrgot, hdrneed;
    unsigned char in[IN_CAP];
    size_t inlen, ingot;
    bool rejected;        /* we sent FAILURE: fail once it is out */
    char reject_why[160]; /* why, for the message */
};

/* ---- digests ---------------------------------------------------------------------------- */

static const EVP_MD *digest_md(const char *name, size_t len)
{
    static const struct {
        const char *name;
        const EVP_MD *(*md)(void);
    } table[] = {{"md5", EVP_md5},       {"sha256", EVP_sha256},     {"sha384", EVP_sha384},
                 {"sha3_256", EVP_sha3_256}, {"sha3_384", EVP_sha3_384}};
    for (size_t i = 0; i < MP__ARRAY_LEN(table); i++)
        if (strlen(table[i].name) == len && memcmp(table[i].name, name, len) == 0)
            return table[i].md();
    return NULL;
}

static const char *digest_name(mp_auth_digest d)
{
    switch (d) {
    case MP_AUTH_SHA256: return "sha256";
    case MP_AUTH_SHA384: return "sha384";
    case MP_AUTH_SHA3_256: return "sha3_256";
    case MP_AUTH_SHA3_384: return "sha3_384";
    case MP_AUTH_MD5: return "md5";
    default: return NULL; /* legacy */
    }
}

/* Split a challenge or reply into digest name and payload (3.12's rule): 16 or 20 bytes
 * is legacy MD5 with no prefix (*name_len = 0); otherwise "{name}payload" with an allowed
 * name. Returns 0 or MP_EAUTH. */
static int split_digest(const unsigned char *m, size_t len, const char **name, size_t *name_len,
                        const unsigned char **payload, size_t *payload_len)
{
    if (len == LEGACY_MSG_LEN || len == MD5_LEN) {
        *name = "md5";
        *name_len = 0;
        *payload = m;
        *payload_len = len;
        return 0;
    }
    if (len > 2 && m[0] == '{') {
        size_t span = len - 1 < MAX_DIGEST_NAME + 1 ? len - 1 : MAX_DIGEST_NAME + 1;
        const unsigned char *end = memchr(m + 1, '}', span);
        if (end && digest_md((const char *)m + 1, (size_t)(end - m - 1))) {
            *name = (const char *)m + 1;
            *name_len = (size_t)(end - m - 1);
            *payload = end + 1;
            *payload_len = len - (size_t)(end + 1 - m);
            return 0;
        }
    }
    return mp__error(MP_EAUTH, "unsupported message length, missing digest prefix, or "
                               "unsupported digest (%zu bytes)", len);
}

static int hmac(const EVP_MD *md, const void *key, size_t keylen, const void *msg, size_t len,
                unsigned char *out, unsigned *outlen)
{
    static const unsigned char empty_key[1];
    if (!HMAC(md, keylen ? key : empty_key, (int)keylen, msg, len, out, outlen))
        return mp__error(MP_EAUTH, "HMAC computation failed");
    return 0;
}

/* Check a reply against our challenge (our digest choice can't be downgraded: the MAC
 * covers the "{name}" prefix). */
static int verify_reply(const mp__hs *h, const unsigned char *reply, size_t rlen)
{
    const char *name;
    size_t name_len;
    const unsigned char *mac;
    size_t mac_len;
    int code = split_digest(reply, rlen, &name, &name_len, &mac, &mac_len);
    if (code < 0)
        return code;
    unsigned char expected[EVP_MAX_MD_SIZE];
    unsigned elen = 0;
    code = hmac(digest_md(name, name_len ? name_len : 3), h->key, h->keylen, h->msg, h->msglen,
                expected, &elen);
    if (code < 0)
        return code;
    if (elen != mac_len || CRYPTO_memcmp(expected, mac, elen) != 0)
        return mp__error(MP_EAUTH, "digest received was wrong");
    return 0;
}

/* ---- frames ----------------------------------------------------------------------------- */

static void frame(mp__hs *h, const void *a, size_t alen, const void *b, size_t blen)
{
    uint32_t n = htonl((uint32_t)(alen + blen));
    memcpy(h->out, &n, 4);
    memcpy(h->out + 4, a, alen);
    if (blen)
        memcpy(h->out + 4 + alen, b, blen);
    h->outlen = 4 + alen + blen;
    h->outoff = 0;
}

static void expect_frame(mp__hs *h)
{
    h->hdrgot = 0;
    h->hdrneed = 4;
    h->inlen = SIZE_MAX; /* unknown until the header is in */
    h->ingot = 0;
}

/* Send what the socket takes: 1 when the frame is out, 0 to wait, negative on error. */
static int send_some(mp__hs *h)
{
    while (h->outoff < h->outlen) {
        ssize_t r = send(h->fd, h->out + h->outoff, h->outlen - h->outoff,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r >= 0) {
            h->outoff += (size_t)r;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return mp__errno("authentication: send");
    }
    return 1;
}

/* One non-blocking read of up to n bytes: >0 bytes, 0 to wait, negative on EOF/error. */
static ssize_t recv_some(mp__hs *h, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = recv(h->fd, buf, n, MSG_DONTWAIT);
        if (r > 0)
            return r;
        if (r == 0)
            return mp__error(MP_EAUTH, "authentication: the peer closed the connection");
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return mp__errno("authentication: receive");
    }
}

/* Parse the length once the header is in; bounded before any byte of the body is read. */
static int header_done(mp__hs *h)
{
    uint32_t n;
    memcpy(&n, h->hdr, 4);
    int32_t s = (int32_t)ntohl(n);
    uint64_t len = (uint64_t)(int64_t)s;
    if (s == -1 && h->hdrneed == 4) {
        h->hdrneed = 12; /* the 8-byte form */
        return 0;
    }
    if (s == -1) {
        uint64_t big;
        memcpy(&big, h->hdr + 4, 8);
        len = be64toh(big);
    } else if (s < 0) {
        return mp__error(MP_EAUTH, "authentication: bad message length %d", (int)s);
    }
    if (len > IN_CAP)
        return mp__error(MP_EAUTH, "authentication: peer sent an oversized message (%llu bytes, "
                                   "at most %d expected)", (unsigned long long)len, IN_CAP);
    h->inlen = (size_t)len;
    return 0;
}

/* Receive what is there of the expected frame: 1 when complete, 0 to wait, negative. */
static int recv_frame(mp__hs *h)
{
    while (h->inlen == SIZE_MAX) {
        ssize_t r = recv_some(h, h->hdr + h->hdrgot, h->hdrneed - h->hdrgot);
        if (r <= 0)
            return (int)r;
        h->hdrgot += (size_t)r;
        if (h->hdrgot == h->hdrneed) {
            int code = header_done(h);
            if (code < 0)
                return code;
        }
    }
    while (h->ingot < h->inlen) {
        ssize_t r = recv_some(h, h->in + h->ingot, h->inlen - h->ingot);
        if (r <= 0)
            return (int)r;
        h->ingot += (size_t)r;
    }
    return 1;
}

/* ---- stages ----------------------------------------------------------------------------- */

static int make_challenge(mp__hs *h)
{
    const char *name = digest_name(h->digest);
    size_t plen = name ? (size_t)snprintf((char *)h->msg, sizeof h->msg, "{%s}", name) : 0;
    size_t nrand = name ? MODERN_MSG_LEN : LEGACY_MSG_LEN;
    if (getrandom(h->msg + plen, nrand, 0) != (ssize_t)nrand)
        return mp__errno("getrandom for the challenge");
    h->msglen = plen + nrand;
    frame(h, CHALLENGE, strlen(CHALLENGE), h->msg, h->msglen);
    return 0;
}

static void got_reply(mp__hs *h)
{
    if (verify_reply(h, h->in, h->inlen) == 0) {
        frame(h, WELCOME, strlen(WELCOME), NULL, 0);
        return;
    }
    h->rejected = true;
    snprintf(h->reject_why, sizeof h->reject_why, "%s", mp__last_error_detail());
    frame(h, FAILURE, strlen(FAILURE), NULL, 0);
}

static int got_challenge(mp__hs *h)
{
    size_t cl = strlen(CHALLENGE), len = h->inlen;
    const unsigned char *m = h->in;
    if (len < cl || memcmp(m, CHALLENGE, cl) != 0)
        return mp__error(MP_EAUTH, "protocol error: expected a challenge");
    if (len - cl < LEGACY_MSG_LEN)
        return mp__error(MP_EAUTH, "challenge too short: %zu bytes", len - cl);
    const char *name;
    size_t name_len;
    const unsigned char *payload;
    size_t payload_len;
    int code = split_digest(m + cl, len - cl, &name, &name_len, &payload, &payload_len);
    if (code < 0)
        return code;
    unsigned char reply[EVP_MAX_MD_SIZE + MAX_DIGEST_NAME + 2];
    size_t prefix = name_len ? name_len + 2 : 0;
    if (name_len)
        memcpy(reply, m + cl, prefix); /* "{name}" */
    unsigned mlen = 0;
    code = hmac(digest_md(name, name_len ? name_len : 3), h->key, h->keylen, m + cl, len - cl,
                reply + prefix, &mlen);
    if (code < 0)
        return code;
    frame(h, reply, prefix + mlen, NULL, 0);
    return 0;
}

static int got_verdict(const mp__hs *h)
{
    if (h->inlen != strlen(WELCOME) || memcmp(h->in, WELCOME, h->inlen) != 0)
        return mp__error(MP_EAUTH, "digest sent was rejected");
    return 0;
}

/* Prepare the stage we just entered. */
static int enter(mp__hs *h)
{
    switch (h->order[h->at]) {
    case D_SEND_CH: return make_challenge(h);
    case D_RECV_REPLY:
    case A_RECV_CH:
    case A_RECV_VERDICT: expect_frame(h); return 0;
    default: return 0; /* the frame to send was built when the previous stage ended */
    }
}

/* Finish the current stage (its I/O is complete). */
static int finish(mp__hs *h)
{
    switch (h->order[h->at]) {
    case D_RECV_REPLY: got_reply(h); return 0;
    case D_SEND_VERDICT:
        return h->rejected ? mp__error(MP_EAUTH, "%s", h->reject_why) : 0;
    case A_RECV_CH: return got_challenge(h);
    case A_RECV_VERDICT: return got_verdict(h);
    default: return 0;
    }
}

static bool sending(const mp__hs *h)
{
    enum stage s = h->order[h->at];
    return s == D_SEND_CH || s == D_SEND_VERDICT || s == A_SEND_REPLY;
}

mp__hs *mp__hs_new(int fd, bool server, const void *key, size_t keylen, mp_auth_digest d,
                   double deadline)
{
    mp__hs *h = mp__calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->fd = fd;
    h->order = server ? server_order : client_order;
    h->key = key;
    h->keylen = keylen;
    h->digest = d;
    h->deadline = deadline;
    if (enter(h) < 0) {
        free(h);
        return NULL;
    }
    return h;
}

int mp__hs_step(mp__hs *h)
{
    while (h->order[h->at] != DONE) {
        int r = sending(h) ? send_some(h) : recv_frame(h);
        if (r < 0 && h->rejected && h->order[h->at] == D_SEND_VERDICT)
            return mp__error(MP_EAUTH, "%s", h->reject_why); /* the peer left first */
        if (r <= 0)
            return r;
        if ((r = finish(h)) < 0)
            return r;
        h->at++;
        if ((r = enter(h)) < 0)
            return r;
    }
    return 1;
}

short mp__hs_events(const mp__hs *h) { return sending(h) ? POLLOUT : POLLIN; }
int mp__hs_fd(const mp__hs *h) { return h->fd; }
double mp__hs_deadline(const mp__hs *h) { return h->deadline; }

void mp__hs_free(mp__hs *h)
{
    if (!h)
        return;
    OPENSSL_cleanse(h, sizeof *h);
    free(h);
}

int mp__hs_run(int fd, bool server, const void *key, size_t keylen, mp_auth_digest d,
               double deadline)
{
    mp__hs *h = mp__hs_new(fd, server, key, keylen, d, deadline);
    if (!h)
        return mp_last_error_code();
    double t0 = mp__now();
    int code;
    while ((code = mp__hs_step(h)) == 0) {
        int r = mp__iwait_poll1(fd, mp__hs_events(h), deadline);
        if (r < 0) {
            code = mp__error(r, "authentication: waiting for the peer");
            break;
        }
        if (r == 0) {
            code = mp__error(MP_ETIMEOUT, "authentication: the peer did not complete the "
                                          "handshake within %.3g s", mp__now() - t0);
            break;
        }
    }
    mp__hs_free(h);
    return code < 0 ? code : 0;
}
