# Offline tools over the engine: hymba-run, hymba-bench, hymba-mkmodel (each owner adds its program).

# hymba-bench: throughput and roofline fraction (engine-cpu; backend-agnostic, hymba.h only).
bin_PROGRAMS += tools/hymba-bench
tools_hymba_bench_SOURCES = tools/hymba-bench.c
tools_hymba_bench_LDADD = $(HYMBA_ENGINE_LIBS)
