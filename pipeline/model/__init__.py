"""The GPT itself, in plain PyTorch: it knows nothing of Lightning or of the data."""
