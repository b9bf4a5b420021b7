# Offline tools over the engine: hymba-run, hymba-bench, hymba-mkmodel.
bin_PROGRAMS += tools/hymba-run tools/hymba-bench tools/hymba-mkmodel
tools_hymba_run_SOURCES = tools/hymba-run.c
tools_hymba_run_LDADD = $(HYMBA_ENGINE_LIBS)
tools_hymba_bench_SOURCES = tools/hymba-bench.c
tools_hymba_bench_LDADD = $(HYMBA_ENGINE_LIBS)
tools_hymba_mkmodel_SOURCES = tools/hymba-mkmodel.c
tools_hymba_mkmodel_LDADD = $(HYMBA_ENGINE_LIBS)
