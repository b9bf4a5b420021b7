/* test-textio.c: hymba-run's text features: tokenize/detokenize on the real tokenizer, completion and chat on a tiny random model. */
#include "tools/textio.h"
#include "engine/chat.h"
#include "tests/testutil.h"
#include <json-c/json.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Output of the functions under test goes to a memory buffer. */
static void capture_begin(FILE **f, char **buf, size_t *len)
{
    *f = open_memstream(buf, len);
}

static void check_real_tokenizer(const char *shared)
{
    char dir[4200], *buf = NULL;
    size_t len = 0;
    FILE *f;
    hy_tok *t = NULL;
    hy_err err = {0};

    snprintf(dir, sizeof(dir), "%s/testdata/hymba-1.5b-config", shared);
    if (hy_tok_load(dir, &t, &err) < 0) {
        CHECK(0, "load: %s", err.msg);
        return;
    }
    /* vectors.jsonl: "ab" -> [1, 633] */
    capture_begin(&f, &buf, &len);
    CHECK(hy_textio_tokenize(t, "ab", true, f, &err) == 0, "tokenize");
    CHECK(hy_textio_tokenize(t, "ab", false, f, &err) == 0, "tokenize --no-bos");
    fclose(f);
    CHECK(strcmp(buf, "1,633\n633\n") == 0, "tokenize output [%s]", buf);
    free(buf);

    capture_begin(&f, &buf, &len);
    CHECK(hy_textio_detokenize(t, "1, 633", false, f, &err) == 0, "detokenize: %s", err.msg);
    CHECK(hy_textio_detokenize(t, "1,633", true, f, &err) == 0, "detokenize: %s", err.msg);
    CHECK(hy_textio_detokenize(t, "", false, f, &err) == 0, "detokenize empty: %s", err.msg);
    fclose(f);
    CHECK(strcmp(buf, "<s> ab\nab\n\n") == 0, "detokenize output [%s]", buf);
    free(buf);

    capture_begin(&f, &buf, &len);
    CHECK(hy_textio_detokenize(t, "1,x", false, f, &err) < 0 && strstr(err.msg, "x"), "bad list: %s", err.msg);
    CHECK(hy_textio_detokenize(t, "1,99999", false, f, &err) < 0 && strstr(err.msg, "99999"),
          "out of range: %s", err.msg);
    CHECK(hy_textio_detokenize(t, "1 2", false, f, &err) < 0, "missing comma accepted");
    fclose(f);
    free(buf);
    hy_tok_free(t);
}

static void check_generation(void)
{
    const char *top = getenv("top_builddir");
    char exe[4096], cmd[8400], *dir = hy_test_tmpdir();
    hy_model *m = NULL;
    hy_tok *t = NULL;
    hy_err err = {0};

    snprintf(exe, sizeof(exe), "%s/tools/hymba-mkmodel", top ? top : ".");
    if (access(exe, X_OK) != 0) {
        printf("(generation checks skipped: %s not built)\n", exe);
        hy_test_rmtree(dir);
        free(dir);
        return;
    }
    snprintf(cmd, sizeof(cmd), "'%s' -q --seed 3 '%s'", exe, dir);
    CHECK(system(cmd) == 0, "%s", cmd);
    hy_load_opts lo = { .backend = "cpu", .threads = 1 };
    CHECK(hy_model_load(dir, &lo, &m, &err) == 0, "model load: %s", err.msg);
    CHECK(hy_tok_load(dir, &t, &err) == 0, "tok load: %s", err.msg);
    if (m && t) {
        hy_textio_opts o;
        hy_textio_opts_default(&o);
        o.max_new_tokens = 12;
        char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        FILE *f = open_memstream(&a, &al);
        CHECK(hy_textio_complete(m, t, "hello there", &o, f, &err) == 0, "complete: %s", err.msg);
        fclose(f);
        f = open_memstream(&b, &bl);
        CHECK(hy_textio_complete(m, t, "hello there", &o, f, &err) == 0, "complete: %s", err.msg);
        fclose(f);
        CHECK(a && b && strcmp(a, b) == 0 && al > 0 && a[al - 1] == '\n', "greedy completion repeats");
        CHECK(a && hy_test_utf8_valid(a, strlen(a)), "completion is valid UTF-8");
        free(a);
        free(b);

        /* a two-turn REPL: each answer is printed without the turn marker */
        char in_text[] = "hi\n/reset\nhow are you\nand then?\n/exit\n";
        FILE *in = fmemopen(in_text, strlen(in_text), "r");
        o.system = "You are terse.";
        o.sampling.temperature = 0.8f;
        o.seed = 5;
        f = open_memstream(&a, &al);
        CHECK(hy_textio_chat(m, t, NULL, &o, in, f, &err) == 0, "chat: %s", err.msg);
        fclose(f);
        fclose(in);
        CHECK(a && !strstr(a, HY_CHAT_TURN_MARKER) && hy_test_utf8_valid(a, strlen(a)), "chat output [%s]", a);
        CHECK(a && strncmp(a, "> ", 2) == 0, "prompt shown");
        if (getenv("TEXTIO_SHOW")) printf("chat transcript:\n%s", a);
        free(a);
        f = open_memstream(&a, &al);
        CHECK(hy_textio_chat(m, t, "one turn", &o, NULL, f, &err) == 0, "chat -p: %s", err.msg);
        fclose(f);
        free(a);
    }
    hy_tok_free(t);
    hy_model_free(m);
    hy_test_rmtree(dir);
    free(dir);
}

/* The hymba-run binary: --tokenize/--detokenize on a folder with tokenizer files and no weights. */
static void check_cli(const char *shared)
{
    const char *top = getenv("top_builddir");
    char exe[4096], cmd[12000], out[256];
    static const struct { const char *args, *want; } cases[] = {
        { "--tokenize ab", "1,633\n" },
        { "--tokenize ab --no-bos", "633\n" },
        { "--detokenize 1,633", "<s> ab\n" },
        { "--detokenize 1,633 --skip-special", "ab\n" },
    };

    snprintf(exe, sizeof(exe), "%s/tools/hymba-run", top ? top : ".");
    if (access(exe, X_OK) != 0) {
        printf("(hymba-run checks skipped: %s not built)\n", exe);
        return;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(cmd, sizeof(cmd), "'%s' -m '%s/testdata/hymba-1.5b-config' %s", exe, shared, cases[i].args);
        FILE *p = popen(cmd, "r");
        size_t n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
        out[n] = '\0';
        CHECK(p && pclose(p) == 0 && strcmp(out, cases[i].want) == 0, "%s: [%s]", cases[i].args, out);
    }
    snprintf(cmd, sizeof(cmd), "'%s' -m '%s/testdata/hymba-1.5b-config' --detokenize 1,zz 2>/dev/null", exe, shared);
    CHECK(WEXITSTATUS(system(cmd)) == 2, "malformed --detokenize exits 2");
}

/* End to end: a tiny random model with the real 32001-piece tokenizer, driven
 * through hymba-run -p and --chat. */
static void check_cli_real_model(const char *shared)
{
    const char *top = getenv("top_builddir");
    char run[4096], mk[4096], cmd[16384], out[4096], cfg_path[4200];
    char *dir = hy_test_tmpdir(), *tiny = hy_test_tmpdir();

    snprintf(run, sizeof(run), "%s/tools/hymba-run", top ? top : ".");
    snprintf(mk, sizeof(mk), "%s/tools/hymba-mkmodel", top ? top : ".");
    if (access(run, X_OK) != 0 || access(mk, X_OK) != 0 || !dir || !tiny) {
        printf("(end-to-end checks skipped: hymba-run or hymba-mkmodel not built)\n");
        goto done;
    }
    /* the tiny preset's shape with the real vocabulary size */
    snprintf(cmd, sizeof(cmd), "'%s' -q --no-weights '%s'", mk, tiny);
    CHECK(system(cmd) == 0, "%s", cmd);
    snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", tiny);
    json_object *cfg = json_object_from_file(cfg_path);
    CHECK(cfg != NULL, "read %s", cfg_path);
    if (!cfg)
        goto done;
    json_object_object_add(cfg, "vocab_size", json_object_new_int(32001));
    CHECK(json_object_to_file(cfg_path, cfg) == 0, "write %s", cfg_path);
    json_object_put(cfg);
    snprintf(cmd, sizeof(cmd), "'%s' -q --config '%s' --tokenizer-from '%s/testdata/hymba-1.5b-config' '%s'",
             mk, cfg_path, shared, dir);
    CHECK(system(cmd) == 0, "%s", cmd);

    static const char *const args[] = { "-p 'The capital of France is' -n 6",
                                        "--chat -p 'Hi there' --system 'Be brief.' -n 6 --temp 0.7 --seed 3" };
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd), "'%s' -m '%s' -t 1 --backend cpu %s", run, dir, args[i]);
        FILE *p = popen(cmd, "r");
        size_t n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
        out[n] = '\0';
        CHECK(p && pclose(p) == 0, "%s failed", cmd);
        CHECK(n > 1 && out[n - 1] == '\n' && hy_test_utf8_valid(out, strlen(out)) && !strstr(out, HY_CHAT_TURN_MARKER),
              "%s printed [%s]", args[i], out);
    }
done:
    hy_test_rmtree(dir);
    hy_test_rmtree(tiny);
    free(dir);
    free(tiny);
}

int main(void)
{
    const char *shared = hy_test_shared_dir();

    if (shared) {
        check_real_tokenizer(shared);
        check_cli(shared);
        check_cli_real_model(shared);
    }
    else
        printf("(real-tokenizer checks skipped; generation checks run)\n");
    check_generation();
    return hy_test_done("test-textio");
}
