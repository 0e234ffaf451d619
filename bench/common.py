"""What every benchmark shares: the machine's description, timing, the process tree's peak memory, results."""

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

from pipeline.core.machine import usable_cores  # noqa: E402


def machine() -> dict:
    import numpy as np
    import sentencepiece as spm
    import zstandard

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    info = {
        "cores": usable_cores(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sentencepiece": spm.__version__,
        "numpy": np.__version__,
        "zstandard": zstandard.__version__,
    }
    for name in ("numba", "torch", "pytorch_lightning", "dvc", "datasets", "tokenizers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            pass
    return info


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def child_peak(command: list[str], env: dict | None = None) -> tuple[str, float, int]:
    """Run a command; return its stdout, wall seconds and the peak RSS of its whole process tree (sampled)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PILE_GPT_PROGRESS": "0", **(env or {})},
    )
    tree, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [tree] + tree.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if child.returncode:
        raise SystemExit(f"{command} failed with exit code {child.returncode}")
    return child.stdout.read(), seconds, peak


def save(name: str, results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")


def fresh_copy(destination: Path) -> Path:
    """This repository's files (git's list, uncommitted changes included; not dvc.lock or metrics/) as a new
    git repository, like a clean clone: what `make run` starts from."""
    shutil.rmtree(destination, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file() and not name.startswith(("metrics/", "dvc.lock")):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", "copy"]):
        subprocess.run(["git", *command], cwd=destination, check=True)
    return destination
