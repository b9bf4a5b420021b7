# Offline tools over the engine: hymba-run, hymba-bench, hymba-mkmodel (each owner adds its program).

# hymba-tokbench: tokenizer encode MB/s and the benchmark text generator (tok).
noinst_PROGRAMS += tools/hymba-tokbench
tools_hymba_tokbench_SOURCES = tools/hymba-tokbench.c
tools_hymba_tokbench_LDADD = $(HYMBA_ENGINE_LIBS)
