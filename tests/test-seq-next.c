/* test-seq-next.c: hy_seq_decode_next on the host path (CPU backend) and hy_model_device_ceilings' refusal there. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/hymba.h"
#include "tests/randmodel.h"
#include "tests/testutil.h"

int main(void)
{
    hy_err err;
    char *dir = hy_test_tmpdir();
    rm_model rm;
    rm_cfg c = { .vocab = 200, .hidden = 32, .layers = 2, .heads = 2, .kv_heads = 1, .inter = 40, .window = 4,
                 .n_meta = 2, .d_state = 16, .d_conv = 4, .dt_rank = 4, .expand = 2, .kv_src = { 0, 0 },
                 .is_global = { 1, 1 }, .dtype = HY_ST_F32, .seed = 5 };
    CHECK(dir && rm_write(dir, &c, &rm) == 0, "cannot write a checkpoint");
    rm_free(&rm);
    hy_load_opts o;
    memset(&o, 0, sizeof(o));
    o.backend = "cpu";
    o.threads = 1;
    o.max_ctx = 12;
    hy_model *m = NULL;
    CHECK(hy_model_load(dir, &o, &m, &err) == 0, "load: %s", err.msg);
    if (!m)
        return hy_test_done("test-seq-next");
    const int V = hy_model_arch(m)->vocab;
    double bw, tf;
    CHECK(hy_model_device_ceilings(m, &bw, &tf, &err) == -ENOTSUP, "the CPU backend measured device ceilings");

    /* greedy next ids == argmax of the logits the same step leaves behind */
    hy_seq *s[2] = { NULL, NULL }, *ref = NULL;
    int32_t prompt[3] = { 5, 9, 17 }, tok[2], next[2];
    hy_sampling gp;
    hy_rng rng;
    hy_sampling_default(&gp);
    gp.temperature = 0.0f;
    gp.repeat_penalty = 1.0f;
    hy_rng_seed(&rng, 1);
    for (int b = 0; b < 2; b++) {
        CHECK(hy_seq_new(m, &s[b], &err) == 0, "seq: %s", err.msg);
        CHECK(hy_seq_prefill(m, s[b], prompt, 1 + 2 * b, NULL, &err) == 0, "prefill: %s", err.msg);
        tok[b] = 3 + b;
    }
    CHECK(hy_seq_new(m, &ref, &err) == 0 && hy_seq_copy(m, ref, s[1], &err) == 0, "copy: %s", err.msg);
    for (int step = 0; step < 4; step++) {
        CHECK(hy_seq_decode_batch(m, &ref, &tok[1], 1, &err) == 0, "decode: %s", err.msg);
        CHECK(hy_seq_decode_next(m, s, tok, 2, &gp, &rng, true, next, &err) == 0, "decode_next: %s", err.msg);
        CHECK(next[1] == hy_argmax(hy_seq_logits(ref), V), "step %d: next %d, argmax %d", step, next[1],
              hy_argmax(hy_seq_logits(ref), V));
        CHECK(next[0] == hy_argmax(hy_seq_logits(s[0]), V), "step %d: row 0 next is not its argmax", step);
        CHECK(hy_seq_len(s[0]) == 2 + step && hy_seq_len(s[1]) == 4 + step, "history lengths %lld %lld",
              (long long)hy_seq_len(s[0]), (long long)hy_seq_len(s[1]));
        memcpy(tok, next, sizeof(tok));
    }
    /* max_ctx: 12 tokens; row 1 holds 7, so 5 more steps fit and the 6th is refused */
    int rc = 0, steps = 0;
    while (rc == 0 && steps < 10) {
        rc = hy_seq_decode_next(m, &s[1], &tok[1], 1, &gp, &rng, false, &next[1], &err);
        steps += rc == 0;
    }
    CHECK(rc == -ENOSPC && steps == 5, "max_ctx: rc %d after %d steps", rc, steps);
    /* sampling at a temperature draws from the distribution (any valid id) */
    gp.temperature = 0.8f;
    gp.top_k = 5;
    CHECK(hy_seq_decode_next(m, &s[0], &tok[0], 1, &gp, &rng, false, &next[0], &err) == 0, "sample: %s", err.msg);
    CHECK(next[0] >= 0 && next[0] < V, "sampled id %d", next[0]);
    for (int b = 0; b < 2; b++)
        hy_seq_free(s[b]);
    hy_seq_free(ref);
    hy_model_free(m);
    hy_test_rmtree(dir);
    free(dir);
    return hy_test_done("test-seq-next");
}
