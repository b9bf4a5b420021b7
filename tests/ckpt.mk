# ckpt tests.
