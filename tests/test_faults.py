"""Faults injected for real: stages killed or interrupted part-way under `dvc repro`.

After any of them, rerunning the stage must finish with artifacts byte-identical to an undisturbed
run, and no partial file may ever sit at an output path or in DVC's cache: a watcher reads every
output path while the stage runs, and every cache object is checked against its md5 name. The rerun
runs the stage itself (never DVC's run-cache) and shows which recovery it took: a download asks only
for the bytes it lacks, training resumes at its last checkpoint and trains only the rest, the
others overwrite what the killed run left under their fixed temporary names.
"""

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import voluptuous
import yaml
from dvc.schema import COMPILED_LOCKFILE_SCHEMA

from pipeline.encode import token_files
from tests.helpers import REPO, child_env
from tests.repo import copy_of, edit_params, run

pytestmark = pytest.mark.slow  # stages killed, interrupted and starved of disk under `dvc repro`

HANG_S = 120  # a liveness bound: only a hang, never a slow or loaded machine, takes this long
OUTPUTS = {  # what each stage writes, whose bytes an undisturbed run fixes
    "download@00": ["data/raw/00/train/00.jsonl.zst"],
    "corpus@00": ["data/corpus/00.txt"],
    "words@00": ["data/words/00.words"],
    "tokenizer": ["data/tokenizer/spm.model", "data/tokenizer/spm.vocab"],
    "pretokenize@00": [f"data/tokens/00{suffix}" for suffix in token_files.SUFFIXES],
    "train": ["data/model/model.safetensors", "data/model/config.json", "data/model/tokenizer.model"],
}
LOGGED = {"train": "metrics/train"}  # DVCLive's files and the loss curve: tracked in git, the same bytes every run
TEMPORARY = ("*.tmp", "*.tmp.*", "*.part", "*.part.json")
STALL_AFTER = 1_200_000  # bytes a stalling mirror sends of train/00 (1.6 MB) before going silent
PART = "data/raw/.partial/00/train/00.jsonl.zst.part"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class Watcher(threading.Thread):
    """Reads the output paths over and over; anything there must be the undisturbed run's file. Counts
    what it saw (an output absent, as DVC leaves it before a rerun, or whole), and any error of its own."""

    def __init__(self, repo: Path, expected: dict[str, tuple[int, str]]):
        super().__init__(daemon=True)
        self.repo, self.expected = repo, expected
        self.sightings: Counter = Counter()
        self.wrong: list = []
        self.passes = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self):
        try:
            while not self.stop.is_set():
                for name, (size, digest) in self.expected.items():
                    path = self.repo / name
                    try:
                        whole = path.stat().st_size == size and md5(path) == digest
                    except FileNotFoundError:
                        self.sightings["absent"] += 1
                        continue
                    self.sightings["whole" if whole else "partial"] += 1
                    if not whole:
                        self.wrong.append((name, path.stat().st_size))
                self.passes += 1
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001  (reported by finish(): a dead watcher checks nothing)
            self.error = exc

    def finish(self, watched_after: int, when: str) -> None:
        """Stop it; it must have lived throughout, kept reading past pass `watched_after` (the moment
        of the fault), and seen nothing but absent or whole outputs."""
        assert self.is_alive() and self.error is None, f"the watcher died: {self.error!r}"
        self.stop.set()
        self.join()
        assert self.passes > watched_after, "the watcher read nothing after the fault"
        assert not self.wrong, f"partial output seen {when}: {self.wrong}"
        assert self.sightings["absent"] + self.sightings["whole"] > 0


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


def descendants(child: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(child.pid).children(recursive=True)
    except psutil.Error:
        return []


def stage_process(child: subprocess.Popen) -> psutil.Process | None:
    """The stage's own Python process, once DVC has started it."""
    for process in descendants(child):
        with contextlib.suppress(psutil.Error):
            if any(part.startswith("stages/") for part in process.cmdline()):
                return process
    return None


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler: the stage's code has started (pipeline.core.cli
    installs one before any work; Python alone does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def wait_for(condition, child: subprocess.Popen):
    """Poll until `condition()` gives something true (returned) or DVC exits (None); bounded by HANG_S."""
    deadline = time.monotonic() + HANG_S
    while child.poll() is None and time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.002)
    return None


def working(child: subprocess.Popen) -> psutil.Process | None:
    """The stage's process once its own code runs (imports done), or None if DVC exited first."""

    def started():
        process = stage_process(child)
        return process if process is not None and catches_sigterm(process.pid) else None

    return wait_for(started, child)


def group_gone(child: subprocess.Popen) -> bool:
    """DVC, the stage and every worker it started have exited (within the hang bound)."""
    deadline = time.monotonic() + HANG_S
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


def recover(repo: Path, stage: str, before: dict) -> subprocess.CompletedProcess:
    """The rerun, forced: the stage's own code deals with what the fault left. (A plain `dvc repro`
    would check the previous outputs out of DVC's cache, which a stage's first run does not have.)
    Returns that rerun's output."""
    check_cache(repo)
    if not lock_intact(repo, stage, before):
        # DVC rewrites dvc.lock in place (dvc/utils/serialize/_common.py opens it "w+"), so a kill at
        # that moment truncates it. The recovery in docs/reliability.md: put it back and repro.
        (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": before}, sort_keys=False))
    return run(repo, "dvc", "repro", "--force", "--single-item", stage)


def check_recovered(repo: Path, stage: str, expected: dict, rerun: subprocess.CompletedProcess) -> None:
    """The rerun ran the stage's own code, left the undisturbed bytes and no temporary, and DVC sees
    every stage, the downstream ones whose deps are whole directories included, as up to date."""
    assert f"Running stage '{stage}'" in rerun.stdout  # the stage's own recovery, not DVC's cached copy
    assert {name: ((repo / name).stat().st_size, md5(repo / name)) for name in expected} == expected
    assert not leftovers(repo), f"{stage}: temporaries left after the rerun: {leftovers(repo)}"
    assert "up to date" in run(repo, "dvc", "status", *([stage] if stage.startswith("download") else [])).stdout
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


def leftovers(repo: Path, keep_partial_downloads: bool = False) -> list[Path]:
    """Temporaries under data/; an interrupted download's .part (and its .part.json) stays on purpose
    when asked: the next run resumes from it."""
    kept = ("*.part", "*.part.json") if keep_partial_downloads else ()
    return [path for pattern in TEMPORARY if pattern not in kept for path in (repo / "data").rglob(pattern)]


def fresh_training(repo: Path) -> None:
    """Forget the finished run, so a forced train stage trains from step 0 again."""
    for path in (repo / "data/model/checkpoints").iterdir():
        path.unlink()


def trainer_child(child: subprocess.Popen):
    """A spawned child of the stage (a trainer or a counting worker), once it runs."""
    for process in descendants(child):
        with contextlib.suppress(psutil.Error):
            if any("spawn_main" in part for part in process.cmdline()):
                return process
    return None


def temporary_with_bytes(repo: Path, name: str):
    path = repo / name
    return path if path.exists() and path.stat().st_size > 0 else None


# For each stage, a moment in the middle of its work that leaves something for the rerun to deal with.
MID_WORK = {
    "corpus@00": lambda repo, child: temporary_with_bytes(repo, "data/corpus/00.txt.tmp"),
    "words@00": lambda repo, child: (repo / "data/words/00.runs.tmp").is_dir() and trainer_child(child),
    "pretokenize@00": lambda repo, child: temporary_with_bytes(repo, "data/tokens/00.bin.tmp"),
    "tokenizer": lambda repo, child: trainer_child(child),
    "train": lambda repo, child: (repo / "data/model/checkpoints/last.ckpt").exists(),
}


def checkpoint_step(repo: Path) -> int | None:
    import torch

    last = repo / "data/model/checkpoints/last.ckpt"
    return int(torch.load(last, weights_only=True, map_location="cpu")["global_step"]) if last.exists() else None


@pytest.mark.parametrize("stage", list(MID_WORK))
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
    # a second run from scratch (train: from step 0 again) makes the bytes the first one made
    assert {name: ((repo / name).stat().st_size, md5(repo / name)) for name in expected} == expected
    if stage in LOGGED:
        made = {
            path.relative_to(repo): path.read_bytes() for path in (repo / LOGGED[stage]).rglob("*") if path.is_file()
        }
        assert made == {
            path.relative_to(built): path.read_bytes() for path in (built / LOGGED[stage]).rglob("*") if path.is_file()
        }
    rng = random.Random(stage)

    # Ctrl-C (SIGINT to the whole group, as a terminal sends it) and SIGTERM to the stage alone (as
    # `kill` or a batch system's grace period sends it), in the middle of the stage's own work:
    # a prompt, clean exit, workers stopped, nothing half-written left. The signal lands at a seeded
    # moment of the stage's own work (after its imports); should the stage beat it, an earlier one.
    for signum, to_group in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        fraction = rng.uniform(0.1, 0.5)
        for _ in range(4):
            with disturbed(repo, stage, expected, f"after {signum.name}", cleans_up=True) as (child, watcher):
                process = working(child)
                assert process is not None, f"{stage}: dvc exited before the stage started"
                time.sleep(fraction * work_s)
                watcher.fault_at = watcher.passes
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

    # SIGKILL of the whole group (a power cut, the OOM killer, scancel): once in the middle of the
    # stage's work, where it leaves something for the rerun, then at a seeded random moment.
    with disturbed(repo, stage, expected, "after a kill mid-work") as (child, watcher):
        assert wait_for(lambda: MID_WORK[stage](repo, child), child), f"{stage}: ended before its mid-work moment"
        watcher.fault_at = watcher.passes
        os.killpg(child.pid, signal.SIGKILL)
    if stage in ("corpus@00", "words@00", "pretokenize@00"):
        assert leftovers(repo), "the kill should have left the stage's temporary for the rerun to replace"
    step = checkpoint_step(repo) if stage == "train" else None
    rerun = recover(repo, stage, watcher.before)
    if stage == "train":  # resumed where the kill left it, and trained only the rest
        assert f"train: resuming from data/model/checkpoints/last.ckpt at step {step}" in rerun.stderr
        assert f"this run trained {6 - step} (from step {step})" in rerun.stdout
    check_recovered(repo, stage, expected, rerun)

    with disturbed(repo, stage, expected, "at a seeded moment") as (child, watcher):
        try:
            child.wait(timeout=rng.uniform(0.2, 1.0) * duration)
        except subprocess.TimeoutExpired:
            watcher.fault_at = watcher.passes
            os.killpg(child.pid, signal.SIGKILL)
    check_recovered(repo, stage, expected, recover(repo, stage, watcher.before))


@contextlib.contextmanager
def disturbed(repo: Path, stage: str, expected: dict, when: str, cleans_up: bool = False):
    """Start the stage under a watcher, let the caller disturb it, then check it is gone and that no
    partial output was ever seen (nor, when it could clean up, any temporary). A clean stop leaves
    nothing to recover from: the next run starts as the undisturbed one did. A kill's rerun is the
    caller's, which checks what recovery it took."""
    if stage == "train":
        fresh_training(repo)
    watcher = Watcher(repo, expected)
    watcher.before = recorded(repo)
    watcher.fault_at = 0
    watcher.start()
    child = start(repo, stage)
    yield child, watcher
    assert group_gone(child), f"{stage}: still running {HANG_S} s {when}"
    watcher.finish(watcher.fault_at, when)
    if cleans_up:
        assert not leftovers(repo, stage.startswith("download")), f"{stage}: temporaries left {when}"


def test_a_download_killed_or_interrupted_mid_transfer_resumes_from_its_partial_file(built, tmp_path, http_server):
    """The mirror sends 1.2 MB of the file, then goes silent; the stage is stopped there by each signal.
    Ctrl-C and SIGTERM keep the partial file for later; so does SIGKILL, by nature. The rerun asks the
    mirror for the rest only, and the file is the undisturbed one."""
    base, server = http_server
    body = (REPO / "data/sample/train/00.jsonl.zst").read_bytes()
    server.files["/train/00.jsonl.zst"] = body
    server.stall_s = HANG_S
    repo = copy_of(built, tmp_path)
    edit_params(repo, lambda raw: raw["data"].update(source=base))
    expected = {name: ((repo / name).stat().st_size, md5(repo / name)) for name in OUTPUTS["download@00"]}
    stops = {
        "SIGINT": lambda child: os.killpg(child.pid, signal.SIGINT),
        "SIGTERM": lambda child: stage_process(child).send_signal(signal.SIGTERM),
        "SIGKILL": lambda child: os.killpg(child.pid, signal.SIGKILL),
    }
    for name, stop in stops.items():
        server.faults = [("stall", STALL_AFTER)]
        (repo / PART).unlink(missing_ok=True)
        with disturbed(repo, "download@00", expected, f"after {name}") as (child, watcher):
            at_stall = wait_for(lambda: temporary_with_bytes(repo, PART), child)  # the first 1 MB chunk is on disk
            assert at_stall and working(child), f"the download ended before the stall:\n{child.log_path.read_text()}"
            watcher.fault_at = watcher.passes
            stop(child)
        kept = (repo / PART).stat().st_size
        assert 0 < kept <= STALL_AFTER and body.startswith((repo / PART).read_bytes())
        asked = len(server.requests)
        rerun = recover(repo, "download@00", watcher.before)
        assert [r["headers"].get("Range") for r in server.requests[asked:]] == [f"bytes={kept}-"]  # the rest only
        check_recovered(repo, "download@00", expected, rerun)


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
    before = {path.name: md5(path) for path in (repo / checkpoints).iterdir() if path.suffix == ".ckpt"}
    room = (repo / checkpoints / "last.ckpt").stat().st_size // 2
    rc, after, stderr = in_small_filesystem(repo, checkpoints, room, "python stages/train.py")
    assert rc == 1, stderr
    assert f"{checkpoints}/last.ckpt: cannot write it: No space left on device" in stderr
    # last.ckpt is still the good step-6 file, no checkpoint was written after the failed one (best.ckpt,
    # validated at step 9, was queued behind it), and no temporary is left; run.json records the job
    assert {name: digest for name, digest in after.items() if name != "run.json"} == before
    assert (repo / "data/model/model.safetensors").read_bytes() == (built / "data/model/model.safetensors").read_bytes()
