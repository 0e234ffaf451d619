"""Where the pipeline keeps things, and which shard keys are for training, validation and test: every
stage's inputs and outputs under data/, metrics/ and stats/. A tracked dependency of the stages that
use it: what is written here decides which files a stage reads and writes."""

from pathlib import Path

from pipeline.config.schema import DataParams, Shard
from pipeline.core.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")
CORPUS_DIR = Path("data/corpus")
WORDS_DIR = Path("data/words")  # word-count tables of the corpus parts (pipeline/tokenizer/word_table.py)
WORD_RULES = WORDS_DIR / "rules.json"  # what decides them: the words stages depend on it, not on params
TOKENIZER_DIR = Path("data/tokenizer")
TOKENS_DIR = Path("data/tokens")
MODEL_DIR = Path("data/model")
METRICS_DIR = Path("metrics")  # headline numbers (DVC metrics) and pictures (DVC plots)
STATS_DIR = Path("stats")  # everything else a stage counts: versioned with git, shown on demand


def role(key: str, shard: Shard) -> str:
    """What a shard is for: `train`, `val` or `test` (its `split`, else by key)."""
    return shard.split or (key if key in ("val", "test") else "train")


def shard(data: DataParams, key: str) -> Shard:
    if key not in data.shards:
        raise PipelineError(f"params.yaml: data.shards has no entry {key!r} (known: {', '.join(data.shards)})")
    return data.shards[key]


def keys(data: DataParams, of_role: str) -> list[str]:
    """The keys of the shards for `train`, `val` or `test`, in the order of data.shards."""
    return [key for key, entry in data.shards.items() if role(key, entry) == of_role]


def tokens_path(key: str) -> Path:
    """The key's token array (its .idx, .docs and .json beside it)."""
    return TOKENS_DIR / f"{key}.bin"


def words_path(key: str) -> Path:
    """Corpus part KEY's word-count table."""
    return WORDS_DIR / f"{key}.words"
