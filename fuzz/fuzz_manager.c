/* Fuzz target: the manager's protocol decoders (src/manager/protocol.c): a request as the
 * server reads it from a client, a reply as a proxy reads it from the server.
 *
 * Input: one config byte, then the message body.
 *   bit 0     a reply (mp__mgr_parse_reply), else a request (mp__mgr_parse_request)
 * Proxies in a reply are decoded as references (mp__mgr_in_server), as the server does
 * in a request, so that no input makes the target connect anywhere.
 * Checks: no crash, leak or UB; a request that parses has the shape the server relies
 * on: a method string, a list of arguments. */
#include "manager/mgr.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void request(const uint8_t *data, size_t size)
{
    mgr_request req;
    if (mp__mgr_parse_request(data, size, &req) < 0)
        return;
    if (!req.method || mp_value_type(req.args) != MP_LIST) {
        fprintf(stderr, "a parsed request has no method or no argument list\n");
        abort();
    }
    mp_value_free(req.root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    mp__mgr_in_server = true;
    if (data[0] & 1) {
        mp_value *result = NULL;
        mp__mgr_parse_reply(data + 1, size - 1, &result);
        mp_value_free(result);
    } else {
        request(data + 1, size - 1);
    }
    return 0;
}
