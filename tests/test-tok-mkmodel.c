/* test-tok-mkmodel.c: the synthetic tokenizer that hymba-mkmodel writes loads, encodes and round-trips. */
#include "engine/chat.h"
#include "engine/tok.h"
#include "tests/testutil.h"
#include <string.h>
#include <unistd.h>

static void round_trip(const hy_tok *t, const char *text)
{
    int32_t *ids = NULL;
    size_t n = 0, len = 0;
    char *back = NULL;
    hy_err err = {0};

    CHECK(hy_tok_encode(t, text, strlen(text), true, &ids, &n, &err) == 0, "encode: %s", err.msg);
    CHECK(n >= 1 && ids[0] == hy_tok_bos(t), "BOS first");
    for (size_t i = 0; i < n; i++)
        CHECK(ids[i] >= 0 && ids[i] < hy_tok_vocab_size(t), "id %d out of range", ids[i]);
    CHECK(hy_tok_decode(t, ids, n, true, &back, &len, &err) == 0 && strcmp(back, text) == 0,
          "round trip [%s] -> [%s]", text, back);
    free(back);
    free(ids);
}

int main(void)
{
    const char *top = getenv("top_builddir");
    char *dir = hy_test_tmpdir(), cmd[8192], exe[4096];
    hy_tok *t = NULL;
    hy_err err = {0};

    snprintf(exe, sizeof(exe), "%s/tools/hymba-mkmodel", top ? top : ".");
    if (access(exe, X_OK) != 0) {
        printf("SKIP: %s not built\n", exe);
        free(dir);
        return HY_TEST_SKIP;
    }
    snprintf(cmd, sizeof(cmd), "'%s' --no-weights -q '%s'", exe, dir);
    CHECK(system(cmd) == 0, "%s failed", cmd);
    CHECK(hy_tok_load(dir, &t, &err) == 0, "load %s: %s", dir, err.msg);
    if (t) {
        CHECK(hy_tok_bos(t) == 1 && hy_tok_eos(t) == 2 && hy_tok_add_bos(t), "bos/eos/add_bos");
        round_trip(t, "hello world, the quick brown fox");
        round_trip(t, "  two leading spaces and\ttabs\nnewlines");
        round_trip(t, "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 emoji via byte fallback");
        round_trip(t, "");
        /* the chat prompt encodes without BOS */
        hy_chat_msg m[] = { { HY_ROLE_USER, "hi" } };
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(hy_chat_encode(t, m, 1, NULL, true, &ids, &n, &err) == 0 && n > 0 && ids[0] != 1,
              "chat encode: %s", err.msg);
        free(ids);
        CHECK(hy_tok_chat_template(t) != NULL, "chat template in tokenizer_config.json");
        hy_tok_free(t);
    }
    hy_test_rmtree(dir);
    free(dir);
    return hy_test_done("test-tok-mkmodel");
}
