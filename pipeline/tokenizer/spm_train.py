"""SentencePiece's own spm_train on the corpus text (tokenizer.trainer: spm), every flag from params.

The original command of this project's seed,

    spm_train --input tokenizer.train.text --vocab_size 50000 --model_prefix 50000 --model_type bpe
      --pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1 --pad_piece=[PAD] --unk_piece=[UNK]
      --input_sentence_size=100000000

is `command_line(flags)` for the same flags; see presets/pile.yaml.
"""

import errno
import multiprocessing
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import sentencepiece as spm

from pipeline.config.layout import STATS_DIR
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError, describe_exit

# SentencePiece's BPE trainer peaks at 11-16x the loaded text (measured with 0.2.3); plan for the top.
RAM_PER_TEXT_BYTE = 16
FULL_DISK_BYTES = (
    1 << 20
)  # SentencePiece reports a failed write without its reason: this little room left means a full disk
TRAINER_LOG = STATS_DIR / "tokenizer.log"  # SentencePiece's C++ log, kept out of the console


def command_line(flags: dict[str, Any], input_path: str, model_prefix: str) -> str:
    """The spm_train command equivalent to training with `flags` (for the README and the logs)."""

    def render(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value)

    args = {"input": input_path, "model_prefix": model_prefix, **flags}
    return "spm_train " + " ".join(f"--{name}={render(value)}" for name, value in args.items())


def temporary(model_prefix: Path) -> Path:
    """The prefix spm_train writes to first, and records in the model's trainer_spec."""
    return model_prefix.with_name(model_prefix.name + ".tmp")


def check_memory(inputs: list[Path], available: int) -> int:
    """Refuse, before training, a corpus that SentencePiece could not load here; return the estimate."""
    text_bytes = sum(path.stat().st_size for path in inputs)
    needed = text_bytes * RAM_PER_TEXT_BYTE
    if needed > available:
        raise PipelineError(
            f"tokenizer: training on {text_bytes / 1e9:.2f} GB of corpus needs about {needed / 1e9:.1f} GB "
            f"of RAM ({RAM_PER_TEXT_BYTE}x the text) but {available / 1e9:.1f} GB is available; "
            "lower corpus.max_lines or train on a machine with more memory"
        )
    return needed


def train(inputs: list[Path], model_prefix: Path, flags: dict[str, Any], log: Path | None = None) -> None:
    """Train into `<model_prefix>.model` and `.vocab`, renamed into place only when both are complete.

    SentencePiece trains in a child process: its C++ loop never returns to Python until it is done
    (hours on the Pile), so only a parent that waits can honour Ctrl-C or SIGTERM at once, by
    killing it, and see at once when the child dies. The temporary prefix is fixed, not random:
    SentencePiece records it in the model, and the same inputs and flags must give a byte-identical
    file. SentencePiece's own log (hundreds of lines) goes to `log` (default `<model_prefix>.log`);
    the console gets one progress line per phase, read from it.
    """
    log = log or Path(f"{model_prefix}.log")
    for path in inputs:
        if not path.is_file():
            raise PipelineError(f"{path}: no such corpus file; run `dvc repro corpus` first")
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp_prefix = temporary(model_prefix)
    temps = [
        Path(f"{tmp_prefix}{suffix}") for suffix in (".vocab", ".model")
    ]  # the model last: its presence means the pair is complete
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    child = context.Process(
        target=_train_child, args=(send, ",".join(map(str, inputs)), str(tmp_prefix), flags, str(log))
    )
    try:
        child.start()
        send.close()
        _follow(log, child, flags.get("vocab_size", 8000))
        child.join()
        failure = _outcome(receive, child, log)
        if failure and shutil.disk_usage(model_prefix.parent).free < FULL_DISK_BYTES:
            raise files.no_room(model_prefix.with_suffix(".model"), OSError(errno.ENOSPC, failure))
        if failure:
            raise PipelineError(f"tokenizer: SentencePiece training failed: {failure}")
        files.publish([(tmp, Path(f"{model_prefix}{tmp.suffix}")) for tmp in temps])
    except OSError as exc:
        if exc.errno in files.NO_ROOM:
            raise files.no_room(model_prefix.with_suffix(".model"), exc) from None
        raise
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _outcome(receive, child, log: Path) -> str | None:
    """What the child reported (None for success), or how it died when it could not report."""
    try:
        return receive.recv()
    except (EOFError, OSError):  # the child ended without a (whole) word: a signal (the OOM killer), a crash
        return (
            f"the trainer process died with {describe_exit(child.exitcode)}; SentencePiece needs about "
            f"{RAM_PER_TEXT_BYTE}x its corpus in memory: lower corpus.max_lines or train on a machine with "
            f"more memory (its log: {log})"
        )


def _train_child(send, input: str, model_prefix: str, flags: dict[str, Any], log: str) -> None:
    """SentencePiece's training, in the child, its C++ log into `log`; sends its error as text, or None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 2)  # SentencePiece logs from C++ to file descriptor 2
    try:
        spm.SentencePieceTrainer.train(input=input, model_prefix=model_prefix, **flags)
    except (RuntimeError, OSError, ValueError) as exc:
        send.send(str(exc))
        return
    send.send(None)


PHASES = [  # (a line of SentencePiece's log that starts the phase, what the console calls it, unit)
    ("Loading corpus", "tokenizer: loading the corpus", "line"),
    ("Normalizing sentences", "tokenizer: normalizing", "line"),
    ("Tokenizing input sentences", "tokenizer: counting words", "line"),
    ("Merged: ", "tokenizer: BPE merges", "merge"),
    ("Saving model", "tokenizer: saving", "file"),
]
COUNT = re.compile(r"(?:Loaded all|Loaded|preprocessed|merges=|Completed|Done!) ?(\d+)")
ALPHABET = re.compile(r"Alphabet size=(\d+)")


def _follow(log: Path, child, vocab_size: int) -> None:
    """Until the child exits: read its log as it grows and show one progress bar per phase."""
    bar, phase, alphabet, metas = None, -1, 0, 0
    with open(log, encoding="utf-8", errors="replace") as f:
        while True:
            alive = child.is_alive()
            for line in f.readlines():
                metas += "Adding meta_piece" in line
                alphabet = int(m.group(1)) if (m := ALPHABET.search(line)) else alphabet
                starts = [i for i, (marker, _, _) in enumerate(PHASES) if marker in line and i > phase]
                if starts:
                    if bar is not None:
                        bar.close()
                    phase = starts[0]
                    _, title, unit = PHASES[phase]
                    total = max(vocab_size - metas - alphabet, 1) if unit == "merge" else None
                    bar = progress.bar(total, title, unit=unit)
                if bar is not None and (m := COUNT.search(line)):
                    bar.update(max(0, int(m.group(1)) - bar.n))
            if not alive:
                break
            child.join(timeout=0.2)
    if bar is not None:
        bar.close()
