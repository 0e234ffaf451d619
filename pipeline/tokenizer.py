"""Train the SentencePiece model from the corpus, with every trainer flag taken from params.

The original command of this project's seed,

    spm_train --input tokenizer.train.text --vocab_size 50000 --model_prefix 50000 --model_type bpe
      --pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1 --pad_piece=[PAD] --unk_piece=[UNK]
      --input_sentence_size=100000000

is `command_line(flags)` for the same flags; see presets/pile.yaml.
"""

import errno
import hashlib
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import sentencepiece as spm

from pipeline import files, progress
from pipeline.errors import PipelineError
from pipeline.params import CORPUS_DIR, METRICS_DIR, TOKENIZER_DIR, Params

# SentencePiece's BPE trainer peaks at 11-16x the loaded text (measured with 0.2.3); plan for the top.
RAM_PER_TEXT_BYTE = 16
FULL_DISK_BYTES = 1 << 20  # SentencePiece reports a failed write without its reason: this little room left means a full disk
ROUNDTRIP_LINES = 2000  # corpus lines encoded and decoded after training, to report lossy flags


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


def available_memory() -> int:
    """Bytes this process may still use: MemAvailable, capped by a cgroup limit when one is set."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < (1 << 60):
                headroom = int(limit) - int(Path(usage_file).read_text().strip())
                available = headroom if available is None else min(available, headroom)
            break
        except (OSError, ValueError):
            continue
    return available or 0


def check_memory(inputs: list[Path], available: int) -> int:
    """Refuse, before training, a corpus that SentencePiece could not load here; return the estimate."""
    text_bytes = sum(path.stat().st_size for path in inputs)
    needed = text_bytes * RAM_PER_TEXT_BYTE
    if needed > available:
        raise PipelineError(
            f"tokenizer: training on {text_bytes / 1e9:.2f} GB of corpus needs about {needed / 1e9:.1f} GB "
            f"of RAM ({RAM_PER_TEXT_BYTE}x the text) but {available / 1e9:.1f} GB is available; "
            "lower corpus.max_lines or train on a machine with more memory")
    return needed


def train(inputs: list[Path], model_prefix: Path, flags: dict[str, Any]) -> None:
    """Train into `<model_prefix>.model` and `.vocab`, renamed into place only when both are complete.

    SentencePiece trains in a child process: its C++ loop never returns to Python until it is done
    (hours on the Pile), so only a parent that waits can honour Ctrl-C or SIGTERM at once, by
    killing it. The temporary prefix is fixed, not random: SentencePiece records it in the model,
    and the same inputs and flags must give a byte-identical file.
    """
    for path in inputs:
        if not path.is_file():
            raise PipelineError(f"{path}: no such corpus file; run `dvc repro corpus` first")
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp_prefix = model_prefix.with_name(model_prefix.name + ".tmp")
    temps = [Path(f"{tmp_prefix}{suffix}") for suffix in (".vocab", ".model")]  # the model last: its presence means the pair is complete
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_train_child, args=(send, ",".join(map(str, inputs)), str(tmp_prefix), flags))
    try:
        child.start()
        send.close()
        child.join()
        failure = receive.recv() if receive.poll() else f"the trainer died with exit code {child.exitcode}"
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


def _train_child(send, input: str, model_prefix: str, flags: dict[str, Any]) -> None:
    """SentencePiece's training, in the child; sends its error as text, or None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    try:
        spm.SentencePieceTrainer.train(input=input, model_prefix=model_prefix, **flags)
    except (RuntimeError, OSError, ValueError) as exc:
        send.send(str(exc))
        return
    send.send(None)


def roundtrip(processor: spm.SentencePieceProcessor, lines: list[str]) -> int:
    """How many of `lines` decode back exactly from their ids (all of them, with lossless flags)."""
    return sum(processor.decode(ids) == line for ids, line in zip(processor.encode(lines), lines))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_stage(p: Params) -> None:
    """The tokenizer stage: train on corpus.shards' parts, check the round trip, write stats."""
    inputs = [CORPUS_DIR / f"{key}.txt" for key in p.corpus.shards]
    model_prefix = TOKENIZER_DIR / "spm"
    needed = check_memory(inputs, available_memory())
    started = time.monotonic()
    train(inputs, model_prefix, p.tokenizer)
    seconds = time.monotonic() - started
    with open(inputs[0], encoding="utf-8") as f:
        probe = [line.rstrip("\n") for _, line in zip(range(ROUNDTRIP_LINES), f)]
    model = model_prefix.with_suffix(".model")
    processor = spm.SentencePieceProcessor(model_file=str(model))
    exact = roundtrip(processor, probe)
    stats = {
        "vocab_size": processor.get_piece_size(),
        "eos_id": processor.eos_id(),
        "corpus_bytes": sum(path.stat().st_size for path in inputs),
        "model_sha256": file_sha256(model),
        "roundtrip_exact_lines": exact,
        "roundtrip_lines": len(probe),
    }
    progress.write_json_atomic(METRICS_DIR / "tokenizer.json", stats)
    progress.summary("tokenizer", {
        "corpus": f"{', '.join(map(str, inputs))} ({stats['corpus_bytes'] / 1e6:.1f} MB; "
                  f"RAM estimate {needed / 1e9:.2f} GB)",
        "model": f"{model} ({stats['vocab_size']:,} pieces, eos {stats['eos_id']}), sha256 {stats['model_sha256'][:16]}...",
        "round trip": f"{exact} of {len(probe)} corpus lines decode back exactly"
                      + ("" if exact == len(probe) else " (these flags lose information)"),
        "command": command_line(p.tokenizer, ",".join(map(str, inputs)), str(model_prefix)),
        "time": f"{seconds:.1f} s",
    })
