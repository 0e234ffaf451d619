"""A worker process killed mid-work (the OOM killer, `kill -9`) stops its stage at once, with the signal
named and nothing left behind; a rerun gives the bytes of an undisturbed run. Real processes, real signals."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.encode import token_files
from tests.helpers import LOSSLESS_FLAGS, REPO, child_env, sample_documents, write_shard

pytestmark = pytest.mark.slow  # shards and corpora big enough to take seconds, run several times

DEADLINE_S = 60  # a hang is what this guards against: a stage still running after this has hung
PRETOKENIZE = """
import sys
from pathlib import Path
from pipeline.core import cli
from pipeline.encode import pretokenize
from pipeline.config.schema import PretokenizeParams
raw, model, out = map(Path, sys.argv[1:4])
cli.run(lambda: pretokenize.run([raw], model, out, PretokenizeParams(workers=2)))
"""
TRAIN_TOKENIZER = """
import json, sys
from pathlib import Path
from pipeline.core import cli
from pipeline.tokenizer import spm_train
cli.run(lambda: spm_train.train([Path(sys.argv[1])], Path(sys.argv[2]), json.loads(sys.argv[3])))
"""


def start(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def spawned_workers(parent: subprocess.Popen) -> list[psutil.Process]:
    """The parent's multiprocessing workers (spawned: their command line runs spawn_main)."""
    try:
        children = psutil.Process(parent.pid).children(recursive=True)
        return [p for p in children if any("spawn_main" in part for part in p.cmdline())]
    except psutil.Error:
        return []


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait for the process under the deadline; a process still running then has hung."""
    try:
        _, stderr = process.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"still running {DEADLINE_S} s after its worker was killed: it hung") from None
    return process.returncode, stderr


def kill_a_worker_mid_work(
    process: subprocess.Popen, rng: random.Random, duration_s: float, count: int
) -> list[psutil.Process]:
    """SIGKILL one of the process's `count` workers at a seeded moment of its work; return every worker
    seen alive (psutil handles: they still name the right process after their parent is reaped)."""
    while len(workers := spawned_workers(process)) < count and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "it finished before its workers could be seen"
    time.sleep(rng.uniform(0.2, 0.6) * duration_s)
    assert process.poll() is None, "it finished before the kill: the shard is too small for this test"
    rng.choice(workers).send_signal(signal.SIGKILL)
    return workers


def all_gone(workers: list[psutil.Process]) -> bool:
    """Every worker has exited within the hang bound (a zombie awaiting its reaper counts as exited;
    psutil's handle never mistakes a new process that reuses a pid for the worker)."""

    def running(worker: psutil.Process) -> bool:
        try:
            return worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + DEADLINE_S
    while any(map(running, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(map(running, workers))


@pytest.fixture(scope="module")
def big_shard(tmp_path_factory) -> Path:
    """The sample's train documents four times over (~70 MB of text): seconds of work for 2 workers."""
    texts = sample_documents("train/00") + sample_documents("train/01")
    records = [{"text": text, "meta": {"pile_set_name": "sample"}} for _ in range(4) for text in texts]
    return write_shard(tmp_path_factory.mktemp("big") / "big.jsonl.zst", records)


def test_pretokenize_stops_within_seconds_naming_the_signal_when_a_worker_is_killed(big_shard, small_model, tmp_path):
    reference = tmp_path / "reference" / "big.bin"
    began = time.monotonic()
    returncode, stderr = finish(start(PRETOKENIZE, big_shard, small_model, reference))
    assert returncode == 0, stderr
    duration = time.monotonic() - began
    output = tmp_path / "out" / "big.bin"
    for seed in (1, 2):
        process = start(PRETOKENIZE, big_shard, small_model, output)
        workers = kill_a_worker_mid_work(process, random.Random(seed), duration, count=2)
        returncode, stderr = finish(process)  # a stage that missed the death would hang here
        assert returncode == 1 and "Traceback" not in stderr, stderr
        assert (
            "error: a worker process (pid " in stderr
            and "died with signal 9 (SIGKILL: killed, often by the out-of-memory killer)" in stderr
            and "lower pretokenize.workers or pretokenize.batch_bytes" in stderr
        )
        assert not list(output.parent.iterdir()), "no output and no temporary may be left"
        assert all_gone(workers), "a worker outlived its stage"
    returncode, stderr = finish(start(PRETOKENIZE, big_shard, small_model, output))
    assert returncode == 0, stderr
    for suffix in token_files.SUFFIXES:
        assert output.with_suffix(suffix).read_bytes() == reference.with_suffix(suffix).read_bytes(), suffix


def test_a_killed_sentencepiece_trainer_is_named_with_its_signal_and_a_memory_hint(tmp_path):
    corpus = tmp_path / "corpus.txt"
    lines = [line for text in sample_documents("train/00") for line in text.split("\n") if line]
    corpus.write_text("\n".join(lines) + "\n")
    flags = {**LOSSLESS_FLAGS, "vocab_size": 8000}
    prefix = tmp_path / "out" / "spm"  # SentencePiece records the prefix in the model: the same for every run
    began = time.monotonic()
    returncode, stderr = finish(start(TRAIN_TOKENIZER, corpus, prefix, json.dumps(flags)))
    assert returncode == 0, stderr
    duration = time.monotonic() - began
    reference = {suffix: Path(f"{prefix}{suffix}").read_bytes() for suffix in (".model", ".vocab")}
    for path in prefix.parent.iterdir():
        path.unlink()
    process = start(TRAIN_TOKENIZER, corpus, prefix, json.dumps(flags))
    (trainer,) = kill_a_worker_mid_work(process, random.Random(3), duration, count=1)
    returncode, stderr = finish(process)
    assert all_gone([trainer])
    assert returncode == 1 and "Traceback" not in stderr, stderr
    assert "the trainer process died with signal 9 (SIGKILL: killed, often by the out-of-memory killer)" in stderr
    assert "lower corpus.max_lines" in stderr and "spm.log" in stderr
    assert [path.name for path in prefix.parent.iterdir()] == ["spm.log"]  # no model, no temporary
    returncode, stderr = finish(start(TRAIN_TOKENIZER, corpus, prefix, json.dumps(flags)))
    assert returncode == 0, stderr
    for suffix in (".model", ".vocab"):
        assert Path(f"{prefix}{suffix}").read_bytes() == reference[suffix], suffix
