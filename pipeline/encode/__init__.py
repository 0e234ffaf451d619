"""Text to token arrays: the on-disk format, the exact encoder (BPE once per word, compiled where
the model allows) and the pretokenize stage."""
