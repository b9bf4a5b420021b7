/* test-ckpt-resume.c: save a conversation, restore it in a fresh model with no forward pass, continue bit-identically. */
#include "daemon/store.h"
#include "tests/testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/chat.h"

/* Four turns of 11/7/9/5 prompt tokens and 12-token greedy answers: 80 tokens,
 * five times the tiny model's 16-position window. */
#define TURNS 4
#define ANSWER 12
#define MAX_ROWS (TURNS * (ANSWER + 1))
static const int PROMPT_LEN[TURNS] = { 11, 7, 9, 5 };

typedef struct run {
    float *rows;             /* [MAX_ROWS][vocab]: logits after each prompt and each answer token */
    int n_rows;
    int32_t answer[TURNS][ANSWER];
} run;

static int32_t prompt[TURNS][16];
static char model_dir[4096];
static int vocab;

static hy_model *load(void)
{
    hy_load_opts o = { .backend = "cpu", .threads = 2, .max_ctx = 512 };
    hy_model *m = NULL;
    hy_err err = {0};
    if (hy_model_load(model_dir, &o, &m, &err) < 0) {
        fprintf(stderr, "load %s: %s\n", model_dir, err.msg);
        exit(1);
    }
    return m;
}

static uint64_t positions(const hy_model *m)
{
    hy_backend_stats st;
    hy_model_stats(m, &st);
    return st.positions;
}

static void row(run *r, const hy_seq *s)
{
    memcpy(r->rows + (size_t)r->n_rows++ * vocab, hy_seq_logits(s), (size_t)vocab * 4);
}

/* One turn: prefill the prompt (snapshot, as the daemon takes it), answer greedily. */
static void turn(hy_model *m, hy_seq *s, int t, run *r, hy_ckpt *c)
{
    hy_err err = {0};
    CHECK(hy_seq_prefill(m, s, prompt[t], PROMPT_LEN[t], NULL, &err) == 0, "prefill: %s", err.msg);
    row(r, s);
    if (c) {
        hy_ckpt_snap sn;
        CHECK(hy_ckpt_snap_take(m, s, (uint32_t)t, (uint32_t)(2 * t + 1), &sn, &err) == 0, "snapshot: %s", err.msg);
        CHECK(hy_ckpt_snap_push(c, &sn, &err) == 0, "push: %s", err.msg);
    }
    for (int i = 0; i < ANSWER; i++) {
        int32_t tok = hy_argmax(hy_seq_logits(s), vocab);
        r->answer[t][i] = tok;
        CHECK(hy_seq_decode_batch(m, &s, &tok, 1, &err) == 0, "decode: %s", err.msg);
        row(r, s);
    }
    if (c) {
        c->msgs = realloc(c->msgs, (c->n_msgs + 2) * sizeof(*c->msgs));
        for (int k = 0; k < 2; k++) {
            hy_ckpt_msg *msg = &c->msgs[c->n_msgs++];
            msg->role = k ? HY_ROLE_ASSISTANT : HY_ROLE_USER;
            msg->text = strdup(k ? "an answer" : "a question");
            msg->len = (uint32_t)strlen(msg->text);
        }
    }
}

static bool rows_equal(const run *a, int from, const run *b, int b_from, int n)
{
    return memcmp(a->rows + (size_t)from * vocab, b->rows + (size_t)b_from * vocab, (size_t)n * vocab * 4) == 0;
}

/* Stop after `stop` turns, save through the store, restore in a new model, finish. */
static void resume_after(int stop, const run *ref, const char *dir)
{
    hy_model *m = load();
    hy_seq *s;
    hy_err err = {0};
    hy_ckpt c = { .snap_keep = 3, .owner_uid = 1000 };
    run r = { .rows = malloc((size_t)MAX_ROWS * vocab * 4) };
    hy_store *st;

    snprintf(c.id, sizeof(c.id), "resume-%d", stop);
    c.rng.s[0] = 1;
    hy_seq_new(m, &s, &err);
    for (int t = 0; t < stop; t++)
        turn(m, s, t, &r, &c);
    CHECK(hy_ckpt_capture(m, s, &c, &err) == 0, "capture: %s", err.msg);
    CHECK(hy_store_open(dir, true, &st, &err) == 0 && hy_store_save(st, 1000, &c, hy_model_arch(m), &err) == 0,
          "save: %s", err.msg);
    char id[HY_CKPT_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", c.id);
    hy_ckpt_clear(&c);
    hy_seq_free(s);
    hy_model_free(m);

    /* A new process would start here: fresh model, lazy load. */
    m = load();
    hy_seq_new(m, &s, &err);
    uint64_t before = positions(m);
    hy_ckpt_reason why;
    uint8_t model_id[HY_FINGERPRINT_LEN];
    hy_ckpt_model_id(m, model_id);
    CHECK(hy_store_load(st, 1000, id, hy_model_arch(m), model_id, &c, &why,
                        NULL, 0, &err) == 0, "load after %d turns: %s", stop, err.msg);
    CHECK(hy_ckpt_restore(m, s, &c, &err) == 0, "restore: %s", err.msg);
    CHECK(positions(m) == before, "restore ran %llu positions through the model",
          (unsigned long long)(positions(m) - before));
    int64_t want_len = 0;
    for (int t = 0; t < stop; t++)
        want_len += PROMPT_LEN[t] + ANSWER;
    CHECK(hy_seq_len(s) == want_len, "restored %lld tokens, expected %lld", (long long)hy_seq_len(s), (long long)want_len);
    if (stop > 0)
        CHECK(memcmp(hy_seq_logits(s), ref->rows + (size_t)(r.n_rows - 1) * vocab, (size_t)vocab * 4) == 0,
              "restored logits differ");
    for (int t = stop; t < TURNS; t++)
        turn(m, s, t, &r, NULL);
    CHECK(r.n_rows == ref->n_rows, "rows %d vs %d", r.n_rows, ref->n_rows);
    CHECK(rows_equal(&r, 0, ref, 0, r.n_rows), "resumed after %d turns: logits are not bit-identical", stop);
    CHECK(memcmp(r.answer, ref->answer, sizeof(r.answer)) == 0, "resumed after %d turns: tokens differ", stop);

    /* Regenerate and rewind from the snapshots, again with no forward pass over old tokens. */
    for (uint32_t i = 0; i < c.n_snaps; i++) {
        const hy_ckpt_snap *sn = &c.snaps[i];
        int t = (int)sn->turn, at = t * (ANSWER + 1);
        before = positions(m);
        CHECK(hy_ckpt_snap_restore(m, s, sn, c.tokens, &err) == 0, "snapshot restore: %s", err.msg);
        CHECK(positions(m) == before, "snapshot restore ran a forward pass");
        CHECK(memcmp(hy_seq_logits(s), ref->rows + (size_t)at * vocab, (size_t)vocab * 4) == 0,
              "snapshot of turn %d: logits differ", t);
        run rr = { .rows = malloc((size_t)MAX_ROWS * vocab * 4) };
        rr.n_rows = at;
        memcpy(rr.rows, ref->rows, (size_t)at * vocab * 4);
        /* "Regenerate": answer turn t again, then the rest of the conversation. */
        for (int k = 0; k < ANSWER; k++) {
            int32_t tok = hy_argmax(hy_seq_logits(s), vocab);
            rr.answer[t][k] = tok;
            hy_seq_decode_batch(m, &s, &tok, 1, &err);
        }
        CHECK(positions(m) == before + ANSWER, "regenerate ran %llu positions, expected %d (the answer only)",
              (unsigned long long)(positions(m) - before), ANSWER);
        CHECK(memcmp(rr.answer[t], ref->answer[t], sizeof(rr.answer[t])) == 0, "regenerated turn %d differs", t);
        CHECK(memcmp(hy_seq_logits(s), ref->rows + (size_t)(at + ANSWER) * vocab, (size_t)vocab * 4) == 0,
              "regenerated turn %d: final logits differ", t);
        free(rr.rows);
    }
    if (stop > 0)
        CHECK(c.n_snaps == (uint32_t)(stop < 3 ? stop : 3), "%u snapshots kept (K = 3)", c.n_snaps);
    printf("  resumed after %d turn(s) (%lld tokens, %u snapshots): %d logits rows bit-identical\n", stop,
           (long long)want_len, c.n_snaps, ref->n_rows);
    hy_ckpt_clear(&c);
    hy_store_free(st);
    free(r.rows);
    hy_seq_free(s);
    hy_model_free(m);
}

int main(void)
{
    const char *shared = hy_test_shared_dir(), *bdir = getenv("top_builddir");
    char *tmp = hy_test_tmpdir(), cmd[8400];
    hy_err err = {0};

    /* The golden tiny model, else a tiny random one from hymba-mkmodel. */
    if (shared) {
        snprintf(model_dir, sizeof(model_dir), "%s/golden/tiny-fp32", shared);
    } else {
        snprintf(model_dir, sizeof(model_dir), "%s/model", tmp);
        snprintf(cmd, sizeof(cmd), "'%s/tools/hymba-mkmodel' -q --preset tiny --dtype f32 '%s'", bdir ? bdir : ".",
                 model_dir);
        if (system(cmd) != 0) {
            printf("SKIP: neither ../shared nor hymba-mkmodel (%s) is available\n", cmd);
            hy_test_rmtree(tmp);
            return HY_TEST_SKIP;
        }
    }
    printf("  model %s\n", model_dir);
    hy_model *m = load();
    const hy_arch *a = hy_model_arch(m);
    vocab = a->vocab;
    uint32_t x = 99;
    for (int t = 0; t < TURNS; t++)
        for (int i = 0; i < PROMPT_LEN[t]; i++) {
            x = x * 1664525u + 1013904223u;
            prompt[t][i] = 3 + (int32_t)((x >> 8) % (uint32_t)(vocab - 3));
        }
    /* The uninterrupted reference. */
    run ref = { .rows = malloc((size_t)MAX_ROWS * vocab * 4) };
    hy_seq *s;
    CHECK(hy_seq_new(m, &s, &err) == 0, "seq: %s", err.msg);
    for (int t = 0; t < TURNS; t++)
        turn(m, s, t, &ref, NULL);
    printf("  window %d, conversation %lld tokens\n", a->window, (long long)hy_seq_len(s));
    CHECK(hy_seq_len(s) > 4 * a->window, "the conversation must be longer than the window");
    hy_seq_free(s);
    hy_model_free(m);

    for (int stop = 0; stop <= TURNS; stop++)
        resume_after(stop, &ref, tmp);
    hy_test_rmtree(tmp);
    free(tmp);
    free(ref.rows);
    return hy_test_done("test-ckpt-resume");
}
