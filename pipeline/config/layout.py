"""Where the pipeline keeps things: every stage's inputs and outputs under data/, metrics/ and stats/."""

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")
CORPUS_DIR = Path("data/corpus")
TOKENIZER_DIR = Path("data/tokenizer")
TOKENS_DIR = Path("data/tokens")
MODEL_DIR = Path("data/model")
METRICS_DIR = Path("metrics")  # headline numbers (DVC metrics) and pictures (DVC plots)
STATS_DIR = Path("stats")  # everything else a stage counts: versioned with git, shown on demand
