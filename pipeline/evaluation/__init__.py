"""The trained model scored and sampled: bits per byte per split and group, lm-evaluation-harness,
and `pile-gpt sample`."""
