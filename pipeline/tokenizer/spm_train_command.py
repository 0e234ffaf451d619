"""`pile-gpt spm-train`: the exact BPE trainer as a drop-in for SentencePiece's spm_train.

It takes spm_train 0.2.3's own flags, written as spm_train takes them (`--name=value`,
`--name value`, `--name` and `--noname` for a boolean, `--flagfile=FILE`), and writes the same
`<model_prefix>.model` and `.vocab`: the inputs' lines are counted into a word table on every core
(a progress bar of lines and words), then the merges run in a watched child (a bar with rate and
ETA). Like spm_train, every field its flags set is recorded in the model's trainer_spec, so the
file is byte for byte what spm_train writes. Flags of other model types are refused, naming them.
"""

import os
import shlex
import shutil
import time
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as pb

from pipeline.core import files, machine, progress
from pipeline.core.errors import PipelineError
from pipeline.tokenizer import exact_bpe, spm_spec, word_counts, word_table

# spm_train sets these TrainerSpec fields from its flags on every run, given or not (spm_train_main.cc),
# so its model records them all; their defaults are TrainerSpec's.
ALWAYS_SET = (
    "input_format", "model_prefix", "vocab_size", "character_coverage", "input_sentence_size",
    "shuffle_input_sentence", "seed_sentencepiece_size", "seed_sentencepieces_file", "shrinking_factor",
    "num_threads", "num_sub_iterations", "max_sentencepiece_length", "max_sentence_length",
    "split_by_unicode_script", "split_by_whitespace", "split_by_number", "split_digits",
    "pretokenization_delimiter", "byte_fallback", "auto_character_coverage", "treat_whitespace_as_suffix",
    "allow_whitespace_only_pieces", "hard_vocab_limit", "use_all_vocab", "unk_id", "bos_id", "eos_id", "pad_id",
    "unk_piece", "bos_piece", "eos_piece", "pad_piece", "unk_surface", "required_chars",
    "vocabulary_output_piece_score",
)  # fmt: skip
NORMALIZER_ALWAYS_SET = ("normalization_rule_tsv", "add_dummy_prefix", "remove_extra_whitespaces")
OTHER_FLAGS = {  # spm_train's flags that are not TrainerSpec fields, with their defaults
    "input": "",
    "model_type": "unigram",
    "normalization_rule_name": "nmt_nfkc",
    "denormalization_rule_tsv": "",
    "control_symbols": "",
    "user_defined_symbols": "",
    "control_symbols_file": "",
    "user_defined_symbols_file": "",
    "required_chars_file": "",
    "random_seed": "",  # seeds spm_train's sampling, which this trainer refuses (no effect here)
    "minloglevel": "0",
    "quiet": "false",
}
BOOLEAN = {
    name
    for message in (pb.TrainerSpec, pb.NormalizerSpec)
    for name, field in message.DESCRIPTOR.fields_by_name.items()
    if field.type == field.TYPE_BOOL
} | {"quiet"}
KNOWN = set(ALWAYS_SET) | set(NORMALIZER_ALWAYS_SET) | set(OTHER_FLAGS)
USAGE = """usage: pile-gpt spm-train --input=FILE[,FILE...] --model_prefix=PREFIX --model_type=bpe [spm_train flags]

SentencePiece 0.2.3's BPE trainer, exactly (the same pieces, scores and model file as spm_train),
counting words on every core and in memory that follows the distinct words, not the lines.
Flags are spm_train's: --vocab_size, --character_coverage, --normalization_rule_name, the id and
piece flags, --user_defined_symbols, --byte_fallback, --split_digits, ... (docs/tokenizer.md)."""


def parse(argv: list[str]) -> dict[str, str]:
    """spm_train's command line -> {flag: value as text}, as absl parses it; unknown flags are errors."""
    given: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            if args:
                raise PipelineError(f"spm-train: unexpected arguments {' '.join(args)!r} (spm_train takes --input)")
            break
        if not arg.startswith("-") or arg in ("-", "--"):
            raise PipelineError(f"spm-train: unexpected argument {arg!r} (inputs go in --input=a.txt,b.txt)")
        name, has_value, value = arg.lstrip("-").partition("=")
        if name == "flagfile":
            args = _flagfile(value if has_value else args.pop(0)) + args
            continue
        if name not in KNOWN and name.startswith("no") and name[2:] in BOOLEAN and not has_value:
            given[name[2:]] = "false"
            continue
        if name not in KNOWN:
            raise PipelineError(f"spm-train: unknown command line flag '{name}'")
        if not has_value:
            if name in BOOLEAN:
                value = "true"
            elif args:
                value = args.pop(0)
            else:
                raise PipelineError(f"spm-train: missing the value of flag '{name}'")
        given[name] = value
    return given


def _flagfile(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"spm-train: --flagfile={path}: {exc.strerror}") from None
    return [arg for line in text.splitlines() if not line.lstrip().startswith("#") for arg in shlex.split(line)]


def _lines(path: str, flag: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PipelineError(f"spm-train: --{flag}={path}: {exc.strerror}") from None


def trainer_flags(given: dict[str, str]) -> dict[str, str]:
    """The flags as spm_train puts them in its specs: every field it always sets, at its default unless
    given; the symbols and required characters of the *_file flags appended as spm_train does."""
    defaults_t, defaults_n = pb.TrainerSpec(), pb.NormalizerSpec()
    flags = {name: spm_spec.as_flag(getattr(defaults_t, name)) for name in ALWAYS_SET}
    flags |= {name: spm_spec.as_flag(getattr(defaults_n, name)) for name in NORMALIZER_ALWAYS_SET}
    flags = {name: value.lower() if value in ("True", "False") else value for name, value in flags.items()}
    flags |= {name: value for name, value in given.items() if name in ALWAYS_SET or name in NORMALIZER_ALWAYS_SET}
    flags["normalization_rule_name"] = given.get("normalization_rule_name", OTHER_FLAGS["normalization_rule_name"])
    flags["model_type"] = given.get("model_type", OTHER_FLAGS["model_type"])
    if given.get("denormalization_rule_tsv"):
        flags["denormalization_rule_tsv"] = given["denormalization_rule_tsv"]
    if given.get("required_chars_file"):
        flags["required_chars"] = "".join(_lines(given["required_chars_file"], "required_chars_file"))
    for kind in ("control_symbols", "user_defined_symbols"):
        symbols = spm_spec.split_csv(given[kind]) if given.get(kind) else []
        if given.get(f"{kind}_file"):
            symbols += _lines(given[f"{kind}_file"], f"{kind}_file")
        if symbols:
            flags[kind] = symbols
    flags["input"] = spm_spec.split_csv(given.get("input", ""))
    return flags


def run(argv: list[str]) -> None:
    """The command: parse, count the inputs' words, train, write `<model_prefix>.model` and `.vocab`."""
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(USAGE)
        return
    given = parse(argv)
    if not given.get("input"):
        raise PipelineError("spm-train: --input is required (a file, or files separated by commas)")
    if not given.get("model_prefix"):
        raise PipelineError("spm-train: --model_prefix is required (writes <prefix>.model and <prefix>.vocab)")
    flags = trainer_flags(given)
    quiet = given.get("quiet", "false").lower() in ("true", "t", "yes", "y", "1")
    if quiet:
        os.environ[progress.QUIET_ENV] = "0"  # the children's bars too
    spm_spec.specs(flags)  # every flag checked before a line is read
    inputs = [Path(name) for name in flags["input"]]
    for path in inputs:
        if not path.is_file():
            raise PipelineError(f"spm-train: --input: {path}: no such file")
    prefix = Path(flags["model_prefix"])
    prefix.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    workers = word_counts.workers_for(flags)
    scratch = files.temporary(prefix.with_name(f".{prefix.name}.spm-train"))  # fixed: a rerun clears a killed run's
    try:
        table = word_counts.count(inputs, flags, scratch / "runs", workers)
        counted = time.monotonic()
        table_path = scratch / "input.words"
        word_table.write(table, table_path)
        del table
        needed = exact_bpe.check_memory([table_path], machine.available_memory())
        trained = exact_bpe.train_watched([table_path], flags, prefix)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if quiet:
        return
    progress.summary(
        "spm-train",
        {
            "input": f"{', '.join(map(str, inputs))}: {trained['lines_loaded']:,} lines, "
            f"{trained['distinct_words']:,} distinct words ({counted - started:.1f} s on {workers} workers)",
            "model": f"{prefix}.model, {prefix}.vocab ({trained['pieces']:,} pieces; "
            f"{time.monotonic() - counted:.1f} s to train, RAM estimate {needed / 1e9:.2f} GB)",
        },
    )
