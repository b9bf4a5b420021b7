/* fuzz-daemon-wire.c: mutated request payloads through unpack + the daemon's unknown-field and UTF-8 checks (no crash, no leak). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon/wire.h"
#include "proto/hymba.pb-c.h"
#include "tests/testutil.h"

#define ITERATIONS 100000
#define MAX_LEN 512

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Seeds: one valid message of each request type, packed. */
static size_t seeds(uint8_t out[][MAX_LEN], size_t *lens)
{
    size_t n = 0;
    Hymba__V1__Sampling sp = HYMBA__V1__SAMPLING__INIT;
    sp.temperature_opt_case = HYMBA__V1__SAMPLING__TEMPERATURE_OPT_TEMPERATURE;
    sp.temperature = 0.5f;
    sp.seed_opt_case = HYMBA__V1__SAMPLING__SEED_OPT_SEED;
    sp.seed = 99;
    Hymba__V1__CreateSessionRequest cs = HYMBA__V1__CREATE_SESSION_REQUEST__INIT;
    cs.system_prompt = "You are terse.";
    cs.sampling = &sp;
    lens[n] = hymba__v1__create_session_request__pack(&cs, out[n]);
    n++;
    Hymba__V1__SendRequest sr = HYMBA__V1__SEND_REQUEST__INIT;
    sr.session_id = "0123456789abcdef0123456789abcdef";
    sr.text = "h\xc3\xa9llo";
    sr.max_new_tokens = 7;
    sr.ignore_eos = true;
    lens[n] = hymba__v1__send_request__pack(&sr, out[n]);
    n++;
    Hymba__V1__ListSessionsRequest ls = HYMBA__V1__LIST_SESSIONS_REQUEST__INIT;
    ls.all_users = true;
    lens[n] = hymba__v1__list_sessions_request__pack(&ls, out[n]);
    n++;
    Hymba__V1__GetSessionRequest gs = HYMBA__V1__GET_SESSION_REQUEST__INIT;
    gs.session_id = "abc";
    lens[n] = hymba__v1__get_session_request__pack(&gs, out[n]);
    n++;
    return n;
}

static const ProtobufCMessageDescriptor *descs[] = {
    &hymba__v1__create_session_request__descriptor, &hymba__v1__send_request__descriptor,
    &hymba__v1__list_sessions_request__descriptor, &hymba__v1__get_session_request__descriptor,
    &hymba__v1__delete_session_request__descriptor, &hymba__v1__status_request__descriptor,
    &hymba__v1__finished__descriptor, &hymba__v1__list_sessions_reply__descriptor,
};

/* Walk every string of the message like the daemon would (strlen + UTF-8). */
static void touch_strings(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            const char *s = *(char *const *)(base + f->offset);
            if (s)
                (void)wire_utf8_valid(s, strlen(s));
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
            if (sub)
                touch_strings(sub);
        }
    }
}

int main(void)
{
    uint8_t seed[8][MAX_LEN], buf[MAX_LEN];
    size_t seed_len[8], n_seeds = seeds(seed, seed_len);
    unsigned parsed = 0, unknown = 0;

    for (int it = 0; it < ITERATIONS; it++) {
        size_t k = rnd() % n_seeds, len = seed_len[k];
        memcpy(buf, seed[k], len);
        int edits = 1 + rnd() % 4;
        for (int e = 0; e < edits; e++) {
            switch (rnd() % 4) {
            case 0:                  /* flip a bit */
                if (len)
                    buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
                break;
            case 1:                  /* truncate */
                if (len)
                    len = rnd() % len;
                break;
            case 2:                  /* insert a random byte */
                if (len < MAX_LEN - 1) {
                    size_t at = len ? rnd() % len : 0;
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)rnd();
                    len++;
                }
                break;
            default:                 /* overwrite with a random byte */
                if (len)
                    buf[rnd() % len] = (uint8_t)rnd();
                break;
            }
        }
        for (size_t d = 0; d < sizeof(descs) / sizeof(descs[0]); d++) {
            ProtobufCMessage *m = protobuf_c_message_unpack(descs[d], NULL, len, buf);
            const char *type = NULL;
            if (!m)
                continue;
            parsed++;
            if (wire_unknown_field(m, &type)) {
                CHECK(type != NULL, "unknown field without a type name");
                unknown++;
            }
            touch_strings(m);
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    printf("fuzz-daemon-wire: %d inputs, %u parsed, %u with unknown fields\n", ITERATIONS, parsed, unknown);
    CHECK(parsed > 0 && unknown > 0, "the mutations never reach the unknown-field check");
    return hy_test_done("fuzz-daemon-wire");
}
