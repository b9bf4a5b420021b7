# Offline tools over the engine: hymba-run, hymba-bench, hymba-mkmodel (each owner adds its program).
