"""Faults injected for real: stages killed or interrupted part-way under `dvc repro`.

After any of them, rerunning `dvc repro` must finish with artifacts byte-identical to an undisturbed
run, and no partial file may ever sit at an output path or in DVC's cache: a watcher reads every
output path while the stage runs, and every cache object is checked against its md5 name.
"""

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import voluptuous
import yaml
from dvc.schema import COMPILED_LOCKFILE_SCHEMA

from tests.helpers import child_env
from tests.repo import copy_of, edit_params, run, stages_run

pytestmark = pytest.mark.slow  # stages killed, interrupted and starved of disk under `dvc repro`

OUTPUTS = {  # what each stage writes, whose bytes an undisturbed run fixes
    "download@00": ["data/raw/00/train/00.jsonl.zst"],
    "corpus@00": ["data/corpus/00.txt"],
    "tokenizer": ["data/tokenizer/spm.model", "data/tokenizer/spm.vocab"],
    "pretokenize@00": ["data/tokens/00.bin", "data/tokens/00.idx", "data/tokens/00.json"],
    "train": ["data/model/model.safetensors", "data/model/config.json", "data/model/tokenizer.model"],
}
TEMPORARY = ("*.tmp", "*.tmp.*", "*.part", "*.part.json")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class Watcher(threading.Thread):
    """Reads the output paths over and over; anything there must be the undisturbed run's file."""

    def __init__(self, repo: Path, expected: dict[str, tuple[int, str]]):
        super().__init__(daemon=True)
        self.repo, self.expected, self.seen, self.wrong = repo, expected, set(), []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for name, (size, digest) in self.expected.items():
                path = self.repo / name
                try:
                    if path.stat().st_size != size or md5(path) != digest:
                        self.wrong.append((name, path.stat().st_size))
                    else:
                        self.seen.add(name)
                except FileNotFoundError:
                    pass
            time.sleep(0.005)


def start(repo: Path, stage: str) -> subprocess.Popen:
    """`dvc repro` of one stage in its own process group, as a terminal or a batch system runs it."""
    log_path = repo / f"repro-{time.monotonic_ns()}.log"
    child = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", stage],
        cwd=repo,
        env=child_env(),
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    child.log_path = log_path
    return child


def stage_process(child: subprocess.Popen) -> psutil.Process | None:
    """The stage's own Python process, once DVC has started it."""
    try:
        return next(
            (
                p
                for p in psutil.Process(child.pid).children(recursive=True)
                if any(part.startswith("stages/") for part in p.cmdline())
            ),
            None,
        )
    except psutil.Error:
        return None


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler: the stage's code has started (pipeline.cli
    installs one before any work; Python alone does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def working(child: subprocess.Popen) -> psutil.Process | None:
    """The stage's process once its own code runs (imports done), or None if DVC exited first."""
    while child.poll() is None:
        process = stage_process(child)
        if process is not None and catches_sigterm(process.pid):
            return process
        time.sleep(0.002)
    return None


def group_gone(child: subprocess.Popen, within_s: float) -> bool:
    """DVC, the stage and every worker it started have exited."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        child.poll()  # reaps DVC itself, which would otherwise linger in the group as a zombie
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def check_cache(repo: Path) -> None:
    for path in (repo / ".dvc/cache/files/md5").rglob("*"):
        if path.is_file():
            assert md5(path) == path.parent.name + path.name.removesuffix(".dir"), f"partial cache object {path}"


def check_recovers(repo: Path, stage: str, expected: dict, before: dict) -> None:
    """A plain `dvc repro` of the stage finishes the job with the undisturbed run's bytes."""
    check_cache(repo)
    if not lock_intact(repo, stage, before):
        # DVC rewrites dvc.lock in place (dvc/utils/serialize/_common.py opens it "w+"), so a kill at
        # that moment truncates it. The recovery in docs/reliability.md: drop it and repro; DVC's
        # run-cache restores every finished data stage without running it.
        (repo / "dvc.lock").unlink()
        recovered = run(repo, "dvc", "repro")
        assert {name for name in stages_run(recovered) if f"Running stage '{name}'" in recovered.stdout} <= {
            stage,
            "train",
            "export",
            "evaluate",
        }  # train resumes at its last step; evaluate's metrics are not cached
    rerun = run(repo, "dvc", "repro", "--single-item", stage)
    assert {name: (Path(repo / name).stat().st_size, md5(repo / name)) for name in expected} == expected
    if leftovers(repo, stage):  # the temporaries of the killed run stay only when DVC restored the outputs
        assert stages_run(rerun) == {stage} and "is cached" in rerun.stdout  # from its run-cache (no run)
    # and they never count: data/corpus and data/tokens, whole-directory deps downstream, look unchanged
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout
    check_cache(repo)


def recorded(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def lock_intact(repo: Path, stage: str, before: dict) -> bool:
    """dvc.lock parses, passes DVC's own schema, and records every other stage as it did before."""
    try:
        lock = COMPILED_LOCKFILE_SCHEMA(yaml.safe_load((repo / "dvc.lock").read_text()))
    except (yaml.YAMLError, voluptuous.Invalid):
        return False
    return all(lock["stages"].get(name) == entry for name, entry in before.items() if name != stage)


def leftovers(repo: Path, stage: str = "") -> list[Path]:
    """Temporaries under data/; an interrupted download's .part (and its .part.json) stays on purpose:
    the next run resumes from it (tests/test_download.py)."""
    kept = ("*.part", "*.part.json") if stage.startswith("download") else ()
    return [path for pattern in TEMPORARY if pattern not in kept for path in (repo / "data").rglob(pattern)]


def fresh_training(repo: Path) -> None:
    """Forget the finished run, so a forced train stage trains from step 0 again."""
    for path in (repo / "data/model/checkpoints").iterdir():
        path.unlink()


@pytest.mark.parametrize("stage", list(OUTPUTS))
def test_stage_killed_or_interrupted_anywhere_is_finished_by_a_rerun_with_identical_bytes(built, tmp_path, stage):
    repo = copy_of(built, tmp_path)
    expected = {name: ((repo / name).stat().st_size, md5(repo / name)) for name in OUTPUTS[stage]}
    if stage == "train":
        fresh_training(repo)
        edit_params(repo, lambda raw: raw["train"]["wandb"].update(mode="disabled"))  # seconds per start saved
    began = time.monotonic()
    undisturbed = start(repo, stage)
    assert working(undisturbed) is not None
    work_began = time.monotonic()
    assert undisturbed.wait() == 0
    duration, work_s = time.monotonic() - began, time.monotonic() - work_began
    rng = random.Random(stage)

    # Ctrl-C (SIGINT to the whole group, as a terminal sends it) and SIGTERM to the stage alone (as
    # `kill` or a batch system's grace period sends it), in the middle of the stage's own work:
    # a prompt, clean exit, workers stopped, nothing half-written left. The signal lands at a seeded
    # moment of the stage's own work (after its imports); should the stage beat it, an earlier one.
    for signum, to_group in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        fraction = rng.uniform(0.1, 0.5)
        for _ in range(4):
            with disturbed(repo, stage, expected, f"after {signum.name}", within_s=15, cleans_up=True) as child:
                process = working(child)
                assert process is not None, f"{stage}: dvc exited before the stage started"
                time.sleep(fraction * work_s)
                if to_group:
                    os.killpg(child.pid, signum)
                else:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.send_signal(signum)
            log = child.log_path.read_text()
            if "interrupted: nothing was written to the outputs" in log:
                break
            # not interrupted: only because its work was done (its summary printed) before the signal came
            assert f"== {stage} ==" in log, log
            fraction /= 4
        else:
            raise AssertionError(f"{stage}: never interrupted mid-work by {signum.name}:\n{log}")
        assert child.returncode != 0, log
        if not to_group:  # DVC itself ran on and reports the stage's status: 130, a clean interrupt
            assert "exited with 130" in log, log

    # SIGKILL of the whole group (a power cut, the OOM killer, scancel) at seeded random moments
    for fraction in (rng.uniform(0.2, 0.6), rng.uniform(0.6, 1.0)):
        with disturbed(repo, stage, expected, "at an output path", within_s=5) as child:
            try:
                child.wait(timeout=fraction * duration)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


@contextlib.contextmanager
def disturbed(repo: Path, stage: str, expected: dict, when: str, within_s: float, cleans_up: bool = False):
    """Start the stage under a watcher, let the caller disturb it, then check it is gone, that no
    partial output was ever seen (nor, when it could clean up, any temporary), and that a rerun
    finishes the job."""
    if stage == "train":
        fresh_training(repo)
    before = recorded(repo)
    watcher = Watcher(repo, expected)
    watcher.start()
    child = start(repo, stage)
    yield child
    assert group_gone(child, within_s), f"{stage}: still running {within_s} s {when}"
    watcher.stop.set()
    watcher.join()
    assert not watcher.wrong, f"{stage}: partial output seen {when}: {watcher.wrong}"
    assert not (cleans_up and leftovers(repo, stage)), f"{stage}: temporaries left {when}: {leftovers(repo, stage)}"
    check_recovers(repo, stage, expected, before)


REPORT = (
    "import hashlib, json, pathlib, sys; d = pathlib.Path(sys.argv[1]); "
    "print('FILES', json.dumps({p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}))"
)


def in_small_filesystem(repo: Path, directory: str, room: int, command: str):
    """Run `command` with `directory` on a tmpfs that holds its current files plus `room` bytes, in a
    private mount namespace (nothing outside the test sees it); report the directory's files after."""
    used = sum(path.stat().st_size for path in (repo / directory).iterdir() if path.is_file())
    script = (
        f"set -e; saved=$(mktemp -d); cp -a {directory}/. $saved/; "
        f"mount -t tmpfs -o size={used + room} tmpfs {directory}; cp -a $saved/. {directory}/; rm -rf $saved; "
        f'set +e; {command}; echo "RC $?"; python -c "{REPORT}" {directory}'
    )
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=repo,
        env=child_env(),
        capture_output=True,
        text=True,
    )
    if "RC " not in result.stdout:
        pytest.skip(f"no private tmpfs here (user namespaces unavailable): {result.stderr.strip()[-200:]}")
    rc = int(result.stdout.split("RC ")[1].split()[0])
    files = yaml.safe_load(result.stdout.split("FILES ")[1])
    return rc, files, result.stderr


@pytest.mark.parametrize(
    "stage, directory, output",
    [
        ("download 00", "data/raw/00/train", "00.jsonl.zst"),
        ("corpus 00", "data/corpus", "00.txt"),
        ("tokenizer", "data/tokenizer", "spm.model"),
        ("pretokenize 00", "data/tokens", "00.bin"),
    ],
)
def test_full_disk_fails_clearly_and_leaves_the_previous_outputs_untouched(built, tmp_path, stage, directory, output):
    repo = copy_of(built, tmp_path)
    before = {path.name: md5(path) for path in (repo / directory).iterdir() if path.is_file()}
    room = (repo / directory / output).stat().st_size // 2  # the new file cannot fit beside the old one
    script, _, key = stage.partition(" ")
    rc, after, stderr = in_small_filesystem(repo, directory, room, f"python stages/{script}.py {key}")
    assert rc == 1, stderr
    assert f"{directory}/{output}: cannot write it: No space left on device" in stderr
    assert "previous version, if any, is untouched" in stderr or "kept in" in stderr
    assert "Traceback" not in stderr
    assert after == before  # old outputs intact, no temporary left behind


def test_checkpoint_write_that_fails_half_way_never_replaces_the_last_good_one(built, tmp_path):
    repo = copy_of(built, tmp_path)
    edit_params(repo, lambda raw: raw["train"].update(max_steps=12))  # resume at 6, checkpoint at 9
    checkpoints = "data/model/checkpoints"
    before = {path.name: md5(path) for path in (repo / checkpoints).iterdir()}
    room = (repo / checkpoints / "last.ckpt").stat().st_size // 2
    rc, after, stderr = in_small_filesystem(repo, checkpoints, room, "python stages/train.py")
    assert rc == 1, stderr
    assert f"{checkpoints}/last.ckpt: cannot write it: No space left on device" in stderr
    assert after == before  # last.ckpt is still the good step-6 file, and no temporary is left
    assert (repo / "data/model/model.safetensors").read_bytes() == (built / "data/model/model.safetensors").read_bytes()
