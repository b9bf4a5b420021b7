/* hymbad.c: the daemon's entry point: options and config, model load, event loop, orderly shutdown. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include "config.h"
#include "daemon/hymbad.h"
#include "daemon/persist.h"
#include "daemon/log.h"

static void help(void)
{
    printf("Usage: hymbad [OPTIONS]\n"
           "\n"
           "The hymba assistant daemon: serves org.hymba.Assistant1 on D-Bus and runs\n"
           "the language model for every user's chat sessions.\n"
           "\n"
           "Options:\n"
           "  --config FILE        read settings from FILE (default " HYD_CONFIG_DEFAULT_PATH ",\n"
           "                       skipped when absent)\n"
           "  --model DIR          model directory (Hugging Face layout: config.json,\n"
           "                       *.safetensors, tokenizer.json)\n"
           "  --backend NAME       cpu, cuda or auto (default: auto)\n"
           "  --state-dir DIR      where session checkpoints live (default /var/lib/hymba)\n"
           "  --threads N          CPU threads for the cpu backend (0: all cores)\n"
           "  --context-length N   tokens one conversation may hold (0: the model's maximum)\n"
           "  --system             serve the system bus (the default)\n"
           "  --user               serve the session bus instead\n"
           "  --bus-address ADDR   serve the bus at ADDR (tests, private buses)\n"
           "  --debug              log every request\n"
           "  -h --help            show this help\n"
           "  --version            show the version and protocol version\n"
           "\n"
           "Command-line options override the config file; its keys are described in\n"
           "hymbad.conf.example.\n");
}

enum {
    ARG_CONFIG = 0x100, ARG_MODEL, ARG_BACKEND, ARG_STATE_DIR, ARG_THREADS, ARG_CONTEXT,
    ARG_SYSTEM, ARG_USER, ARG_BUS_ADDRESS, ARG_DEBUG, ARG_VERSION,
};

/* Returns 1 to run, 0 to exit successfully (help, version), < 0 on error. */
static int parse_argv(int argc, char **argv, hyd_config *cfg)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, ARG_CONFIG },
        { "model", required_argument, NULL, ARG_MODEL },
        { "backend", required_argument, NULL, ARG_BACKEND },
        { "state-dir", required_argument, NULL, ARG_STATE_DIR },
        { "threads", required_argument, NULL, ARG_THREADS },
        { "context-length", required_argument, NULL, ARG_CONTEXT },
        { "system", no_argument, NULL, ARG_SYSTEM },
        { "user", no_argument, NULL, ARG_USER },
        { "bus-address", required_argument, NULL, ARG_BUS_ADDRESS },
        { "debug", no_argument, NULL, ARG_DEBUG },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION },
        {}
    };
    const char *config_path = HYD_CONFIG_DEFAULT_PATH;
    bool config_given = false;
    char msg[1024] = "";
    int opt, r;

    /* First pass: the config file, so that the other options override it. */
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
        if (opt == ARG_CONFIG) {
            config_path = optarg;
            config_given = true;
        } else if (opt == 'h') {
            help();
            return 0;
        } else if (opt == ARG_VERSION) {
            printf("hymbad %s (protocol version %d, D-Bus %s)\n", PACKAGE_VERSION, HYD_PROTOCOL_VERSION, HYD_BUS_NAME);
            return 0;
        } else if (opt == '?') {
            fprintf(stderr, "Try 'hymbad --help'.\n");
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hymbad: unexpected argument \"%s\"; try 'hymbad --help'.\n", argv[optind]);
        return -EINVAL;
    }
    r = hyd_config_load(cfg, config_path, config_given, msg, sizeof(msg));
    if (r < 0) {
        fprintf(stderr, "hymbad: %s\n", msg);
        return r;
    }

    optind = 0;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
        const char *key = NULL;
        switch (opt) {
        case ARG_MODEL: key = "model"; break;
        case ARG_BACKEND: key = "backend"; break;
        case ARG_STATE_DIR: key = "state_dir"; break;
        case ARG_THREADS: key = "threads"; break;
        case ARG_CONTEXT: key = "context_length"; break;
        case ARG_DEBUG: cfg->debug = true; break;
        case ARG_SYSTEM: cfg->bus_kind = HYD_BUS_SYSTEM; break;
        case ARG_USER: cfg->bus_kind = HYD_BUS_USER; break;
        case ARG_BUS_ADDRESS:
            cfg->bus_kind = HYD_BUS_ADDRESS;
            free(cfg->bus_address);
            cfg->bus_address = strdup(optarg);
            if (!cfg->bus_address)
                return -ENOMEM;
            break;
        default: break;
        }
        if (key) {
            r = hyd_config_set(cfg, key, optarg, msg, sizeof(msg));
            if (r < 0) {
                fprintf(stderr, "hymbad: --%s: %s\n", options[opt - ARG_CONFIG].name, msg[0] ? msg : strerror(-r));
                return r;
            }
        }
    }
    r = hyd_config_check(cfg, msg, sizeof(msg));
    if (r < 0) {
        fprintf(stderr, "hymbad: %s\n", msg);
        return r;
    }
    return 1;
}

/* The state directory exists (0700: other users' conversations live there). */
static int state_dir_prepare(const char *path)
{
    struct stat st;

    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return log_error_errno(-errno, "Failed to create the state directory %s", path);
    if (stat(path, &st) < 0)
        return log_error_errno(-errno, "Failed to stat the state directory %s", path);
    if (!S_ISDIR(st.st_mode))
        return log_error_errno(-ENOTDIR, "State directory %s", path);
    return 0;
}

static int engine_load(hyd_ctx *c)
{
    hy_load_opts opts = { 0 };
    hy_err err = { 0 };
    int r;

    opts.backend = c->cfg.backend;
    opts.threads = c->cfg.threads;
    opts.max_ctx = c->cfg.context_length;
    opts.verbose = c->cfg.debug;
    sd_notifyf(0, "STATUS=Loading model %s", c->cfg.model_dir);
    log_info("loading model %s (backend %s)", c->cfg.model_dir, c->cfg.backend);
    r = hy_model_load(c->cfg.model_dir, &opts, &c->model, &err);
    if (r < 0) {
        log_error("Failed to load the model from %s: %s", c->cfg.model_dir, err.msg);
        return r;
    }
    r = hy_tok_load(c->cfg.model_dir, &c->tok, &err);
    if (r < 0) {
        log_error("Failed to load the tokenizer from %s: %s", c->cfg.model_dir, err.msg);
        return r;
    }
    c->model_dir = strdup(hy_model_dir(c->model));
    c->backend = strdup(hy_model_backend(c->model));
    if (!c->model_dir || !c->backend)
        return -ENOMEM;
    c->max_ctx = hy_model_max_ctx(c->model);
    log_info("model loaded: backend %s, context length %lld tokens", c->backend, (long long)c->max_ctx);
    return 0;
}

/* End every request and send its final signal while the bus is still up
 * (sd-bus closes an attached connection when the event loop exits). */
static void requests_finish_all(hyd_ctx *c)
{
    c->stopping = true;
    if (!c->sched)
        return;
    hyd_bus_cancel_all(c, HYMBA__V1__CANCEL_REASON__CANCEL_REASON_SHUTDOWN);
    hyd_sched_stop(c->sched);
    if (c->bus) {
        hyd_bus_drain_events(c);
        sd_bus_flush(c->bus);
    }
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
    hyd_ctx *c = userdata;
    (void)si;
    log_info("stopping");
    sd_notify(0, "STOPPING=1\nSTATUS=Shutting down");
    requests_finish_all(c);
    return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int run(hyd_ctx *c)
{
    hyd_sched_opts sopts = { 0 };
    sigset_t mask;
    int r;

    /* Blocked before the model loads: the backend's worker threads start there and inherit the
     * mask, so SIGTERM reaches the event loop instead of killing the process in a worker. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    r = hyd_persist_config(&c->cfg);
    if (r < 0)
        return r;
    r = state_dir_prepare(c->cfg.state_dir);
    if (r < 0)
        return r;
    c->reg.state_dir = c->cfg.state_dir;
    r = engine_load(c);
    if (r < 0)
        return r;
    r = hyd_persist_init(c);
    if (r < 0)
        return r;

    r = sd_event_default(&c->event);
    if (r < 0)
        return log_error_errno(r, "Failed to create the event loop");
    signal(SIGPIPE, SIG_IGN);
    r = sd_event_add_signal(c->event, NULL, SIGTERM, on_signal, c);
    if (r >= 0)
        r = sd_event_add_signal(c->event, NULL, SIGINT, on_signal, c);
    if (r < 0)
        return log_error_errno(r, "Failed to watch SIGTERM/SIGINT");

    sopts.prefill_chunk = c->cfg.prefill_chunk;
    sopts.max_batch = c->cfg.max_batch;
    sopts.state_dir = c->cfg.state_dir;
    r = hyd_sched_new(c->model, c->tok, &sopts, &c->sched);
    if (r < 0)
        return log_error_errno(r, "Failed to start the scheduler thread");
    r = sd_event_add_io(c->event, &c->sched_source, hyd_sched_event_fd(c->sched), EPOLLIN, hyd_bus_on_events, c);
    if (r < 0)
        return log_error_errno(r, "Failed to watch the scheduler's eventfd");

    r = hyd_bus_setup(c);
    if (r < 0)
        return r;

    sd_notifyf(0, "READY=1\nSTATUS=Serving %s on %s (backend %s)", HYD_BUS_NAME,
               c->cfg.bus_kind == HYD_BUS_USER ? "the session bus" :
               c->cfg.bus_kind == HYD_BUS_ADDRESS ? c->cfg.bus_address : "the system bus", c->backend);
    log_info("ready: %s on %s", HYD_BUS_NAME,
             c->cfg.bus_kind == HYD_BUS_USER ? "the session bus" :
             c->cfg.bus_kind == HYD_BUS_ADDRESS ? c->cfg.bus_address : "the system bus");
    r = sd_event_loop(c->event);
    if (r < 0)
        log_error_errno(r, "Event loop failed");
    return r;
}

/* Stop in order: cancel everything, stop the scheduler (the model is ours
 * again), send the final signals, run the per-session hook, free. */
static void shutdown_ctx(hyd_ctx *c)
{
    sd_notify(0, "STOPPING=1\nSTATUS=Shutting down");
    requests_finish_all(c);
    if (c->bus) {
        sd_bus_slot_unref(c->slot_manager);
        sd_bus_slot_unref(c->slot_session);
        sd_bus_slot_unref(c->slot_owner_changed);
        hyd_persist_bus_close();
        sd_bus_flush_close_unref(c->bus);
    }
    while (c->reg.head) {
        hyd_session *s = c->reg.head;
        hyd_session_unlink(&c->reg, s);
        if (c->model)
            hyd_session_turn_done(c->cfg.state_dir, s, c->model);
        hy_seq_free(s->seq);
        hyd_session_free(s);
    }
    hyd_persist_fini();
    /* Requests whose final event never came back (a scheduler that failed to start). */
    while (c->live) {
        hyd_request *req = c->live;
        c->live = req->next_live;
        free(req->sender);
        free(req->text);
        free(req);
    }
    sd_event_source_unref(c->sched_source);
    hyd_sched_free(c->sched);
    hyd_peers_free(c);
    hy_tok_free(c->tok);
    hy_model_free(c->model);
    sd_event_unref(c->event);
    free(c->model_dir);
    free(c->backend);
    hyd_config_done(&c->cfg);
}

int main(int argc, char **argv)
{
    hyd_ctx c = { 0 };
    int r;

    hyd_config_init(&c.cfg);
    log_setup(LOG_INFO);
    r = parse_argv(argc, argv, &c.cfg);
    if (r <= 0) {
        hyd_config_done(&c.cfg);
        return r < 0 ? 2 : 0;
    }
    log_setup(c.cfg.debug ? LOG_DEBUG : LOG_INFO);
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        c.start_mono_usec = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    }
    r = run(&c);
    shutdown_ctx(&c);
    log_info("stopped");
    return r < 0 ? 1 : 0;
}
