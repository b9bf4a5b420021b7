/* cpu_backend.c: placeholder until its owner's branch lands. */
