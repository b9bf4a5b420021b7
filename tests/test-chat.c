/* test-chat.c: the Hymba chat template rendered by C against strings derived by hand from the Jinja source, prompt ids, stop markers. */
#include "engine/chat.h"
#include "engine/tok.h"
#include "tests/testutil.h"
#include <json-c/json.h>
#include <string.h>

/* The template this renderer implements, as tokenizer_config.json holds it:
 * if the shipped template ever changes, this test says so. */
static const char expected_template[] =
    "{{'<extra_id_0>System'}}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'\n' + message['content'].strip()}}{% if tools or contexts %}{{'\n'}}{% endif %}{% endif %}"
    "{% endfor %}{% if tools %}{% for tool in tools %}{{ '\n<tool> ' + tool|tojson + ' </tool>' }}"
    "{% endfor %}{% endif %}{% if contexts %}{% if tools %}{{'\n'}}{% endif %}{% for context in contexts %}"
    "{{ '\n<context> ' + context.strip() + ' </context>' }}{% endfor %}{% endif %}{{'\n\n'}}"
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<extra_id_1>User\n' + message['content'].strip() + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<extra_id_1>Assistant\n' + message['content'].strip() + '\n' }}"
    "{% elif message['role'] == 'tool' %}{{ '<extra_id_1>Tool\n' + message['content'].strip() + '\n' }}"
    "{% endif %}{% endfor %}{%- if add_generation_prompt %}{{'<extra_id_1>Assistant\n'}}{%- endif %}";

static void check_render(const char *name, const hy_chat_msg *m, size_t n, const hy_chat_extra *x,
                         bool gen, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    hy_err err = {0};

    CHECK(hy_chat_render_ex(m, n, x, gen, &out, &len, &err) == 0, "%s: %s", name, err.msg);
    if (out && (len != strlen(want) || strcmp(out, want) != 0))
        CHECK(0, "%s:\n got  [%s]\n want [%s]", name, out, want);
    free(out);
}

static void check_renders(void)
{
    /* System + user + generation prompt: header, "\n" + stripped system text,
     * "\n\n", the user turn, then the assistant header. */
    hy_chat_msg a[] = { { HY_ROLE_SYSTEM, "You are helpful." }, { HY_ROLE_USER, "Hi!" } };
    check_render("system+user", a, 2, NULL, true,
                 "<extra_id_0>System\nYou are helpful.\n\n<extra_id_1>User\nHi!\n<extra_id_1>Assistant\n");

    /* No system message: the header line is still there, followed by "\n\n";
     * the user content is stripped. */
    hy_chat_msg b[] = { { HY_ROLE_USER, "  hello \n" } };
    check_render("no system", b, 1, NULL, true,
                 "<extra_id_0>System\n\n<extra_id_1>User\nhello\n<extra_id_1>Assistant\n");

    /* Several turns, no generation prompt; assistant and tool contents are
     * stripped too; a system message after the first turn still goes to the header. */
    hy_chat_msg c[] = {
        { HY_ROLE_USER, "What is 2+2?" }, { HY_ROLE_ASSISTANT, " 4 " },
        { HY_ROLE_SYSTEM, "\tBe brief.\n" }, { HY_ROLE_TOOL, "{\"ok\": true}\n\n" },
        { HY_ROLE_USER, "And 3+3?" },
    };
    check_render("multi-turn", c, 5, NULL, false,
                 "<extra_id_0>System\nBe brief.\n\n"
                 "<extra_id_1>User\nWhat is 2+2?\n"
                 "<extra_id_1>Assistant\n4\n"
                 "<extra_id_1>Tool\n{\"ok\": true}\n"
                 "<extra_id_1>User\nAnd 3+3?\n");

    /* Two system messages, tools and contexts: each system text is followed by
     * "\n" (tools or contexts exist); each tool is "\n<tool> " + json.dumps + " </tool>";
     * "\n" separates tools from contexts; contexts are stripped. */
    const char *tools[] = {
        "{\"name\":\"get_time\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}",
        "{\"name\": \"echo\",\n \"args\": [1, 2.50, -0.0, 1e20, 0.0001, true, null, \"a\\\"b\\n\\u0001\\u00e9\"]}",
    };
    const char *contexts[] = { " ctx one ", "ctx two" };
    hy_chat_extra x = { tools, 2, contexts, 2 };
    hy_chat_msg d[] = { { HY_ROLE_SYSTEM, "S1" }, { HY_ROLE_SYSTEM, "S2 " }, { HY_ROLE_USER, "go" } };
    check_render("tools+contexts", d, 3, &x, true,
                 "<extra_id_0>System\nS1\n\nS2\n"
                 "\n<tool> {\"name\": \"get_time\", \"parameters\": {\"type\": \"object\", \"properties\": {}}} </tool>"
                 "\n<tool> {\"name\": \"echo\", \"args\": [1, 2.5, -0.0, 1e+20, 0.0001, true, null, "
                 "\"a\\\"b\\n\\u0001\xC3\xA9\"]} </tool>"
                 "\n"
                 "\n<context> ctx one </context>"
                 "\n<context> ctx two </context>"
                 "\n\n<extra_id_1>User\ngo\n<extra_id_1>Assistant\n");

    /* json.dumps of integers past int64, empty containers, and floats near the
     * repr switch points (1e16 and 1e-4 switch to exponent form; 1e15 does not). */
    const char *tools2[] = { "{\"big\": 12345678901234567890, \"e\": [], \"o\": {}, "
                             "\"f\": [1e16, 1e15, 0.0001, 0.00001, 123456789012345678.0, 0.1]}" };
    hy_chat_extra x2 = { tools2, 1, NULL, 0 };
    check_render("tojson numbers", NULL, 0, &x2, false,
                 "<extra_id_0>System\n<tool> {\"big\": 12345678901234567890, \"e\": [], \"o\": {}, "
                 "\"f\": [1e+16, 1000000000000000.0, 0.0001, 1e-05, 1.2345678901234568e+17, 0.1]} </tool>\n\n");

    /* Contexts only, no system message: no separating "\n" before them. */
    hy_chat_extra y = { NULL, 0, contexts + 1, 1 };
    check_render("contexts only", b, 1, &y, false,
                 "<extra_id_0>System\n<context> ctx two </context>\n\n<extra_id_1>User\nhello\n");

    /* Python's strip() removes Unicode whitespace (U+3000, U+00A0, U+2029, U+001C)
     * but not U+200B (a format character). */
    hy_chat_msg e[] = { { HY_ROLE_USER, "\xE3\x80\x80\xC2\xA0hi \xE2\x80\xA9\x1c" },
                        { HY_ROLE_ASSISTANT, "\xE2\x80\x8Bzw" } };
    check_render("unicode strip", e, 2, NULL, false,
                 "<extra_id_0>System\n\n<extra_id_1>User\nhi\n<extra_id_1>Assistant\n\xE2\x80\x8Bzw\n");

    /* Empty and NULL contents render as empty strings. */
    hy_chat_msg f[] = { { HY_ROLE_SYSTEM, "" }, { HY_ROLE_USER, NULL } };
    check_render("empty", f, 2, NULL, false, "<extra_id_0>System\n\n\n<extra_id_1>User\n\n");

    /* Bad input is refused with a message, not rendered. */
    char *out = NULL;
    size_t len = 0;
    hy_err err = {0};
    const char *bad_tools[] = { "{not json" };
    hy_chat_extra z = { bad_tools, 1, NULL, 0 };
    CHECK(hy_chat_render_ex(a, 2, &z, true, &out, &len, &err) < 0 && strstr(err.msg, "tools[0]"),
          "bad tool JSON: %s", err.msg);
    hy_chat_msg g[] = { { (hy_role)7, "x" } };
    CHECK(hy_chat_render(g, 1, true, &out, &len, &err) < 0 && out == NULL, "bad role accepted");
    hy_role r;
    CHECK(hy_chat_role_parse("tool", &r) == 0 && r == HY_ROLE_TOOL, "role tool");
    CHECK(hy_chat_role_parse("admin", &r) < 0, "role admin accepted");
}

/* Feeds text in pieces of the given sizes; returns what the scanner let through. */
static char *stop_run(const char *text, const size_t *cuts, size_t n_cuts, bool *stopped)
{
    hy_chat_stop s;
    char *out = NULL;
    size_t out_len = 0, pos = 0, len = strlen(text);

    hy_chat_stop_init(&s);
    for (size_t i = 0; i <= n_cuts && pos < len; i++) {
        size_t k = i < n_cuts ? cuts[i] : len - pos;
        if (k > len - pos)
            k = len - pos;
        CHECK(hy_chat_stop_feed(&s, text + pos, k, &out, &out_len) == 0, "feed");
        pos += k;
    }
    CHECK(hy_chat_stop_flush(&s, &out, &out_len) == 0, "flush");
    *stopped = s.stopped;
    return out;
}

static void check_stop(void)
{
    bool stopped;
    size_t cuts1[] = { 5, 7, 5, 3 };    /* "Hello", " world\n", "<extra", "_id" ... */
    char *o = stop_run("Hello world\n<extra_id_1>User\nmore", cuts1, 4, &stopped);
    CHECK(o && strcmp(o, "Hello world\n") == 0 && stopped, "split marker: [%s]", o);
    free(o);

    /* Every split position of every byte: same result. */
    const char *text = "a <b> <extra_id_2> x<extra_id_1>tail";
    for (size_t c = 1; c < strlen(text); c++) {
        size_t cuts[64];
        for (size_t i = 0; i < 64; i++)
            cuts[i] = c;
        o = stop_run(text, cuts, 64, &stopped);
        CHECK(o && strcmp(o, "a <b> <extra_id_2> x") == 0 && stopped, "chunk %zu: [%s]", c, o);
        free(o);
    }
    /* A held prefix that never completes is released at the end. */
    o = stop_run("ends with <extra_id", NULL, 0, &stopped);
    CHECK(o && strcmp(o, "ends with <extra_id") == 0 && !stopped, "held prefix: [%s]", o);
    free(o);
    size_t cuts2[] = { 3 };
    o = stop_run("ok</s>junk", cuts2, 1, &stopped);
    CHECK(o && strcmp(o, "ok") == 0 && stopped, "</s> text: [%s]", o);
    free(o);
}

/* The rendered prompt's ids: the vector whose text is the chat prompt gives the reference ids. */
static void check_ids(const char *shared)
{
    char dir[4200], path[4200], line[1 << 16];
    hy_tok *t = NULL;
    hy_err err = {0};
    const char *prompt = "<extra_id_0>System\nYou are helpful.\n\n<extra_id_1>User\nHi!\n<extra_id_1>Assistant\n";
    hy_chat_msg a[] = { { HY_ROLE_SYSTEM, "You are helpful." }, { HY_ROLE_USER, "Hi!" } };
    int found = 0;

    snprintf(dir, sizeof(dir), "%s/testdata/hymba-1.5b-config", shared);
    if (hy_tok_load(dir, &t, &err) < 0) {
        CHECK(0, "load %s: %s", dir, err.msg);
        return;
    }
    CHECK(hy_tok_chat_template(t) && strcmp(hy_tok_chat_template(t), expected_template) == 0,
          "tokenizer_config.json chat_template differs from the one chat.c implements");
    CHECK(hy_chat_stop_id(t, 2) && !hy_chat_stop_id(t, 1), "EOS id 2 stops");

    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(hy_chat_encode(t, a, 2, NULL, true, &ids, &n, &err) == 0, "chat encode: %s", err.msg);
    CHECK(n > 0 && ids[0] != hy_tok_bos(t), "chat prompt starts with BOS");

    snprintf(path, sizeof(path), "%s/testdata/tokenizer/vectors.jsonl", shared);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        json_object *v = json_tokener_parse(line), *jt, *jns;
        if (v && json_object_object_get_ex(v, "text", &jt) && strcmp(json_object_get_string(jt), prompt) == 0 &&
            json_object_object_get_ex(v, "ids_no_special", &jns)) {
            found = 1;
            CHECK(json_object_array_length(jns) == n, "prompt has %zu ids, reference %zu", n,
                  json_object_array_length(jns));
            for (size_t i = 0; i < n && i < json_object_array_length(jns); i++)
                CHECK(ids[i] == json_object_get_int(json_object_array_get_idx(jns, i)), "prompt id %zu", i);
        }
        json_object_put(v);
    }
    if (f)
        fclose(f);
    CHECK(found, "the chat prompt vector is missing from %s", path);

    /* "<extra_id_1>" is ordinary text in this vocab: several pieces, no added token. */
    int32_t *m = NULL;
    size_t nm = 0;
    CHECK(hy_tok_encode(t, HY_CHAT_TURN_MARKER, strlen(HY_CHAT_TURN_MARKER), false, &m, &nm, &err) == 0 &&
          nm > 1, "marker pieces");
    free(m);
    free(ids);
    hy_tok_free(t);
}

int main(void)
{
    check_renders();
    check_stop();
    const char *shared = hy_test_shared_dir();
    if (shared)
        check_ids(shared);
    else
        printf("(tokenizer checks skipped; rendering and stop checks ran)\n");
    return hy_test_done("test-chat");
}
