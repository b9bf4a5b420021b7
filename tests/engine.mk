# Engine core tests: config, safetensors, bad checkpoints, golden agreement, invariants, sampler.
