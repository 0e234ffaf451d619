"""The tokenizer stage: a SentencePiece model from the corpus, by the trainer params name.

`tokenizer.trainer: exact` (the default) trains from the corpus parts' word-count tables
(data/words, the words stage) with the exact BPE trainer (pipeline.tokenizer.exact_bpe): the model
spm_train makes from the same lines, in memory that follows the distinct words, not the lines.
`tokenizer.trainer: spm` runs SentencePiece's own spm_train on the corpus text
(pipeline.tokenizer.spm_train). Either way the stage checks the RAM it needs first, trains in a
watched child process, encodes and decodes corpus lines back to report what the flags lose, and
writes its stats.
"""

import time
from pathlib import Path

import sentencepiece as spm

from pipeline.config.layout import CORPUS_DIR, METRICS_DIR, STATS_DIR, TOKENIZER_DIR, WORD_RULES, WORDS_DIR, words_path
from pipeline.config.schema import Params
from pipeline.core import files, machine, progress
from pipeline.core.errors import PipelineError
from pipeline.tokenizer import exact_bpe, spm_train

ROUNDTRIP_LINES = 2000  # corpus lines encoded and decoded after training, to report lossy flags
MODEL_PREFIX = TOKENIZER_DIR / "spm"


def roundtrip(processor: spm.SentencePieceProcessor, lines: list[str]) -> int:
    """How many of `lines` decode back exactly from their ids (all of them, with lossless flags)."""
    return sum(processor.decode(ids) == line for ids, line in zip(processor.encode(lines), lines))


def refuse_strays(folder: Path, expected: list[Path], made_by: str) -> None:
    """The stage depends on the whole folder: a file no stage makes would enter its hash in dvc.lock."""
    for path in files.strays(folder, {path.name for path in expected}):
        raise PipelineError(
            f"{path}: no stage makes this file (it is no part of corpus.shards), yet the tokenizer stage depends "
            f"on the whole of {folder}: its hash in dvc.lock would count it, and no clean clone has it. "
            f"Remove it, or add its key to corpus.shards ({made_by} makes the file of each key)"
        )


def run_stage(p: Params) -> None:
    """Train with the trainer params name, check the round trip, write stats and the summary."""
    corpus = [CORPUS_DIR / f"{key}.txt" for key in p.corpus.shards]
    tables = [words_path(key) for key in p.corpus.shards]
    refuse_strays(CORPUS_DIR, corpus, "corpus@KEY")
    refuse_strays(WORDS_DIR, tables + [WORD_RULES], "words@KEY")
    for path in corpus + (tables if p.tokenizer_trainer == "exact" else []):
        files.input_size(path)
    flags = p.sentencepiece_flags
    started = time.monotonic()
    if p.tokenizer_trainer == "exact":
        needed = exact_bpe.check_memory(tables, machine.available_memory())
        # recorded in the model as spm_train records them, so either trainer writes the same bytes
        as_spm = {
            **flags,
            "input": [str(path) for path in corpus],
            "model_prefix": str(spm_train.temporary(MODEL_PREFIX)),
        }
        trained = exact_bpe.train_watched(tables, as_spm, MODEL_PREFIX)
        how = (
            f"exact BPE over {', '.join(map(str, tables))}: {trained['distinct_words']:,} distinct words "
            f"({trained['merged_words']:,} once merged), {trained['lines_loaded']:,} lines"
        )
    else:
        needed = spm_train.check_memory(corpus, machine.available_memory())
        spm_train.train(corpus, MODEL_PREFIX, flags, spm_train.TRAINER_LOG)
        how = f"spm_train on {', '.join(map(str, corpus))} (its own log: {spm_train.TRAINER_LOG})"
    seconds = time.monotonic() - started
    with open(corpus[0], encoding="utf-8") as f:
        probe = [line.rstrip("\n") for _, line in zip(range(ROUNDTRIP_LINES), f)]
    model = MODEL_PREFIX.with_suffix(".model")
    processor = spm.SentencePieceProcessor(model_file=str(model))
    exact = roundtrip(processor, probe)
    stats = {
        "trainer": p.tokenizer_trainer,
        "vocab_size": processor.get_piece_size(),
        "eos_id": processor.eos_id(),
        "corpus_bytes": sum(path.stat().st_size for path in corpus),
        "model_sha256": files.sha256(model),
        "roundtrip_exact_lines": exact,
        "roundtrip_lines": len(probe),
    }
    files.write_json_atomic(STATS_DIR / "tokenizer.json", stats)
    files.write_json_atomic(METRICS_DIR / "tokenizer.json", {"roundtrip_exact": exact / max(len(probe), 1)})
    progress.summary(
        "tokenizer",
        {
            "trainer": how,
            "corpus": f"{stats['corpus_bytes'] / 1e6:.1f} MB of text; RAM estimate {needed / 1e9:.2f} GB",
            "model": f"{model} ({stats['vocab_size']:,} pieces, eos {stats['eos_id']}), "
            f"sha256 {stats['model_sha256'][:16]}...",
            "round trip": f"{exact} of {len(probe)} corpus lines decode back exactly"
            + ("" if exact == len(probe) else " (these flags lose information)"),
            "same as": spm_train.command_line(flags, ",".join(map(str, corpus)), str(MODEL_PREFIX)),
            "time": f"{seconds:.1f} s",
        },
    )
