# Offline tools over the engine: hymba-run, hymba-bench, hymba-mkmodel (each owner adds its program).

# hymba-mkmodel: random-weight checkpoint writer (engine-load).
bin_PROGRAMS += tools/hymba-mkmodel
tools_hymba_mkmodel_SOURCES = tools/hymba-mkmodel.c tools/mkmodel-tokenizer.c tools/mkmodel.h
tools_hymba_mkmodel_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
tools_hymba_mkmodel_LDADD = $(HYMBA_ENGINE_LIBS)

# hymba-run: offline prompt runner (engine-load).
bin_PROGRAMS += tools/hymba-run
tools_hymba_run_SOURCES = tools/hymba-run.c tools/textio.c tools/textio.h
tools_hymba_run_LDADD = $(HYMBA_ENGINE_LIBS)

# hymba-load (daemon work): N concurrent D-Bus clients x M requests against a running hymbad.
noinst_PROGRAMS += tools/hymba-load
tools_hymba_load_SOURCES = tools/hymba-load.c
tools_hymba_load_CPPFLAGS = $(AM_CPPFLAGS) $(SYSTEMD_CFLAGS) $(PROTOBUFC_CFLAGS)
tools_hymba_load_LDADD = $(HYMBA_PROTO_LIBS) $(SYSTEMD_LIBS)
$(tools_hymba_load_OBJECTS): proto/hymba.pb-c.h
# Runs hymba-load against hymbad on a private bus (bench/RESULTS-daemon.md).
EXTRA_DIST += tools/daemon-bench.sh

# hymba-bench: throughput and roofline fraction (engine-cpu; backend-agnostic, hymba.h only).
bin_PROGRAMS += tools/hymba-bench
tools_hymba_bench_SOURCES = tools/hymba-bench.c
tools_hymba_bench_LDADD = $(HYMBA_ENGINE_LIBS)

# hymba-tokbench: tokenizer encode MB/s and the benchmark text generator (tok).
noinst_PROGRAMS += tools/hymba-tokbench
tools_hymba_tokbench_SOURCES = tools/hymba-tokbench.c
tools_hymba_tokbench_LDADD = $(HYMBA_ENGINE_LIBS)

# hymba-ckbench: checkpoint size / save / restore versus re-prefill (ckpt).
bin_PROGRAMS += tools/hymba-ckbench
tools_hymba_ckbench_SOURCES = tools/hymba-ckbench.c daemon/store.h daemon/store.c
tools_hymba_ckbench_LDADD = $(HYMBA_ENGINE_LIBS)
