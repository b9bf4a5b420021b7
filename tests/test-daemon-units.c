/* test-daemon-units.c: hymbad's config parser and wire validation (unknown fields, UTF-8), no bus needed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "daemon/conf.h"
#include "daemon/wire.h"
#include "proto/hymba.pb-c.h"
#include "tests/testutil.h"

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static void test_conf(const char *dir)
{
    char path[4096], msg[512];
    hyd_config c;

    hyd_config_init(&c);
    snprintf(path, sizeof(path), "%s/good.conf", dir);
    write_file(path, "# comment\n\n  model = /srv/model  \nbackend=cpu\nthreads = 3\ncontext_length = 1024\n"
                     "max_sessions_per_user = 5\nmax_message_bytes = 100\nlog_level = debug\n");
    CHECK(hyd_config_load(&c, path, true, msg, sizeof(msg)) == 0, "good file refused: %s", msg);
    CHECK(c.model_dir && !strcmp(c.model_dir, "/srv/model"), "model = %s", c.model_dir);
    CHECK(!strcmp(c.backend, "cpu") && c.threads == 3 && c.context_length == 1024, "backend/threads/context");
    CHECK(c.max_sessions_per_user == 5 && c.max_message_bytes == 100 && c.debug, "limits");
    CHECK(hyd_config_check(&c, msg, sizeof(msg)) == 0, "check: %s", msg);

    static const struct { const char *text, *want; } bad[] = {
        { "frobnicate = 1\n", "bad.conf:1: unknown key \"frobnicate\"" },
        { "\nbackend = tpu\n", "bad.conf:2: backend must be cpu, cuda or auto" },
        { "max_sessions_per_user = 0\n", "bad.conf:1: max_sessions_per_user must be an integer from 1" },
        { "threads = -2\n", "bad.conf:1: threads must be a non-negative integer" },
        { "max_batch = 12x\n", "bad.conf:1: max_batch must be an integer" },
        { "model\n", "bad.conf:1: expected \"key = value\"" },
    };
    snprintf(path, sizeof(path), "%s/bad.conf", dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(path, bad[i].text);
        msg[0] = 0;
        CHECK(hyd_config_load(&c, path, true, msg, sizeof(msg)) < 0 && strstr(msg, bad[i].want),
              "\"%s\" gave \"%s\"", bad[i].text, msg);
    }
    snprintf(path, sizeof(path), "%s/absent.conf", dir);
    CHECK(hyd_config_load(&c, path, false, msg, sizeof(msg)) == 0, "absent default file is not an error");
    CHECK(hyd_config_load(&c, path, true, msg, sizeof(msg)) < 0 && strstr(msg, "absent.conf"),
          "absent --config file: %s", msg);
    hyd_config_done(&c);

    hyd_config_init(&c);
    CHECK(hyd_config_check(&c, msg, sizeof(msg)) < 0 && strstr(msg, "no model directory"), "no model: %s", msg);
    hyd_config_set(&c, "model", "/m", msg, sizeof(msg));
    hyd_config_set(&c, "default_max_new_tokens", "9000", msg, sizeof(msg));
    CHECK(hyd_config_check(&c, msg, sizeof(msg)) < 0 && strstr(msg, "default_max_new_tokens"), "default > cap: %s", msg);
    hyd_config_done(&c);
}

/* Every key units/hymbad.conf.example documents parses, with its default value. */
static void test_example(const char *dir)
{
    const char *top = getenv("top_srcdir");
    char path[4096], out[4096], msg[512], *line = NULL;
    size_t cap = 0;
    unsigned keys = 0;
    hyd_config c, d;
    FILE *in, *o;

    if (!top) {
        printf("skip: top_srcdir unset, units/hymbad.conf.example not checked\n");
        return;
    }
    snprintf(path, sizeof(path), "%s/units/hymbad.conf.example", top);
    snprintf(out, sizeof(out), "%s/example.conf", dir);
    in = fopen(path, "r");
    o = fopen(out, "w");
    CHECK(in && o, "cannot open %s", path);
    if (!in || !o)
        return;
    while (getline(&line, &cap, in) >= 0)
        if (line[0] == '#' && line[1] != ' ' && line[1] != '\n' && strchr(line, '=')) {
            fputs(line + 1, o);      /* "#key = value" -> "key = value" */
            keys++;
        }
    free(line);
    fclose(in);
    fclose(o);
    CHECK(keys >= 14, "only %u keys documented", keys);
    hyd_config_init(&c);
    hyd_config_init(&d);
    CHECK(hyd_config_load(&c, out, true, msg, sizeof(msg)) == 0, "the example does not parse: %s", msg);
    CHECK(c.max_sessions_per_user == d.max_sessions_per_user && c.max_queued_per_user == d.max_queued_per_user &&
          c.max_message_bytes == d.max_message_bytes && c.max_payload_bytes == d.max_payload_bytes &&
          c.max_new_tokens == d.max_new_tokens && c.default_max_new_tokens == d.default_max_new_tokens &&
          c.prefill_chunk == d.prefill_chunk && c.max_batch == d.max_batch && !strcmp(c.backend, d.backend) &&
          !strcmp(c.state_dir, d.state_dir) && c.threads == d.threads && c.context_length == d.context_length,
          "the example's values are not the built-in defaults");
    hyd_config_done(&c);
    hyd_config_done(&d);
}

static void test_wire(void)
{
    uint8_t buf[256];
    size_t n;
    const char *type = NULL;
    Hymba__V1__CreateSessionRequest req = HYMBA__V1__CREATE_SESSION_REQUEST__INIT;
    Hymba__V1__Sampling sp = HYMBA__V1__SAMPLING__INIT;
    Hymba__V1__CreateSessionRequest *back;

    sp.top_k_opt_case = HYMBA__V1__SAMPLING__TOP_K_OPT_TOP_K;
    sp.top_k = 5;
    req.sampling = &sp;
    req.system_prompt = "x";
    n = hymba__v1__create_session_request__pack(&req, buf);
    back = hymba__v1__create_session_request__unpack(NULL, n, buf);
    CHECK(back && wire_unknown_field(&back->base, &type) == 0, "clean message has unknown fields");
    CHECK(back && back->sampling && back->sampling->top_k_opt_case && back->sampling->top_k == 5 &&
          !back->sampling->temperature_opt_case, "oneof presence lost");
    hymba__v1__create_session_request__free_unpacked(back, NULL);

    /* field 77 (varint) nested in sampling (field 2): 0x12 len { 0xe8 0x04 0x01 } */
    uint8_t nested[] = { 0x12, 0x03, 0xe8, 0x04, 0x01 };
    back = hymba__v1__create_session_request__unpack(NULL, sizeof(nested), nested);
    CHECK(back != NULL, "nested unknown did not parse");
    if (back) {
        CHECK(wire_unknown_field(&back->base, &type) == 77 && !strcmp(type, "hymba.v1.Sampling"),
              "nested unknown field not found (type %s)", type ? type : "-");
        hymba__v1__create_session_request__free_unpacked(back, NULL);
    }
    /* Unknown inside a repeated message (ListSessionsReply.sessions). */
    uint8_t rep[] = { 0x0a, 0x03, 0xf8, 0x01, 0x02 };      /* sessions[0] has field 31 */
    ProtobufCMessage *l = protobuf_c_message_unpack(&hymba__v1__list_sessions_reply__descriptor, NULL, sizeof(rep), rep);
    CHECK(l && wire_unknown_field(l, &type) == 31, "unknown field in a repeated message not found");
    if (l)
        protobuf_c_message_free_unpacked(l, NULL);

    CHECK(wire_utf8_valid("plain ascii", 11), "ascii");
    CHECK(wire_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15), "valid multibyte");
    CHECK(!wire_utf8_valid("\xc3\x28", 2), "bad continuation");
    CHECK(!wire_utf8_valid("\xed\xa0\x80", 3), "surrogate");
    CHECK(!wire_utf8_valid("\xc0\xaf", 2), "overlong");
    CHECK(!wire_utf8_valid("\xe2\x82", 2), "truncated");
    CHECK(!wire_utf8_valid("a\0b", 3), "embedded NUL");
}

int main(void)
{
    char *dir = hy_test_tmpdir();

    CHECK(dir != NULL, "no temp dir");
    if (!dir)
        return 1;
    test_conf(dir);
    test_example(dir);
    test_wire();
    hy_test_rmtree(dir);
    free(dir);
    return hy_test_done("test-daemon-units");
}
