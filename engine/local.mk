# libhymba: config, safetensors, weight binding, forward driver, sampler, tokenizer, chat format.
noinst_LIBRARIES += engine/libhymba.a
engine_libhymba_a_CPPFLAGS = $(AM_CPPFLAGS) $(JSONC_CFLAGS)
engine_libhymba_a_SOURCES = \
	engine/hymba.h engine/model_internal.h \
	engine/config.h engine/config.c \
	engine/safetensors.h engine/safetensors.c \
	engine/sha256.h engine/sha256.c \
	engine/crc32c.h engine/crc32c.c \
	engine/ckpt.h engine/ckpt.c engine/ckpt_seq.c \
	engine/weights.c \
	engine/model.c \
	engine/seq.c \
	engine/seq_next.c \
	engine/sampler.c \
	engine/tok.h engine/tok_internal.h engine/tok.c engine/tok_util.c \
	engine/tok_encode.c engine/tok_decode.c \
	engine/chat.h engine/chat.c

# Everything a program that uses the engine links, backends included.
HYMBA_ENGINE_LIBS = engine/libhymba.a $(HYMBA_BACKEND_LIBS) $(JSONC_LIBS) -lm
