"""dvc.lock merged stage by stage: by the pure function, as git's merge driver, and by `pile-gpt gather`."""

import subprocess

import pytest
import yaml

from pipeline.core.errors import PipelineError
from pipeline.ops import gather
from tests.helpers import child_env


def entry(md5: str) -> dict:
    return {"cmd": "python stages/pretokenize.py x", "outs": [{"path": "data/tokens/x.bin", "md5": md5}]}


def lock(**stages) -> dict:
    return {"schema": "2.0", "stages": dict(stages)}


def test_entries_on_one_side_are_taken_and_equal_ones_kept():
    base = lock(tokenizer=entry("t"))
    merged = gather.merge_locks(
        base, lock(tokenizer=entry("t"), a=entry("1")), lock(tokenizer=entry("t"), b=entry("2"))
    )
    assert merged == lock(tokenizer=entry("t"), a=entry("1"), b=entry("2"))


def test_a_change_on_one_side_wins_and_different_changes_conflict_naming_the_stage():
    base = lock(a=entry("old"), b=entry("b"))
    assert gather.merge_locks(base, lock(a=entry("new"), b=entry("b")), base)["stages"]["a"] == entry("new")
    assert gather.merge_locks(base, base, lock(a=entry("new"), b=entry("b")))["stages"]["a"] == entry("new")
    with pytest.raises(gather.Conflict, match="stage a differs"):
        gather.merge_locks(base, lock(a=entry("x"), b=entry("b")), lock(a=entry("y"), b=entry("b")))
    with pytest.raises(gather.Conflict, match="stage c differs"):  # added on both sides, differently
        gather.merge_locks(base, lock(c=entry("1"), **base["stages"]), lock(c=entry("2"), **base["stages"]))


def git(repo, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def repo(tmp_path):
    """A git repository whose main branch has a dvc.lock, and two worker branches that each add a stage
    at the same place in the file (where a line-by-line merge conflicts)."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / ".gitattributes").write_text("dvc.lock merge=dvclock\n")
    (tmp_path / "dvc.lock").write_text(gather.dump(lock(tokenizer=entry("t"), z=entry("z"))))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    for worker, md5 in (("a", "1"), ("b", "2")):
        git(tmp_path, "checkout", "-q", "-b", f"worker/{worker}", "main")
        stages = {"tokenizer": entry("t"), f"pretokenize@{worker}": entry(md5), "z": entry("z")}
        (tmp_path / "dvc.lock").write_text(gather.dump(lock(**stages)))
        git(tmp_path, "commit", "-qam", f"worker {worker}")
    git(tmp_path, "checkout", "-q", "main")
    return tmp_path


def test_plain_git_conflicts_without_the_driver(repo):
    git(repo, "merge", "-q", "--no-edit", "worker/a")
    failed = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "merge", "--no-edit", "worker/b"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0 and "CONFLICT" in failed.stdout


def test_gather_merges_both_workers_and_commits(repo, monkeypatch):
    monkeypatch.chdir(repo)
    commit = gather.gather(["worker/a", "worker/b"])
    assert git(repo, "rev-parse", "HEAD").strip() == commit and not git(repo, "status", "--porcelain").strip()
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert stages == {
        "tokenizer": entry("t"),
        "pretokenize@a": entry("1"),
        "z": entry("z"),
        "pretokenize@b": entry("2"),
    }


def test_a_stage_prepared_differently_stops_the_gather_and_changes_nothing(repo, monkeypatch):
    git(repo, "checkout", "-q", "-b", "worker/c", "main")
    (repo / "dvc.lock").write_text(
        gather.dump(lock(tokenizer=entry("t"), z=entry("z"), **{"pretokenize@a": entry("9")}))
    )
    git(repo, "commit", "-qam", "worker c, same shard as a, other result")
    git(repo, "checkout", "-q", "main")
    before = git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(repo)
    with pytest.raises(PipelineError, match=r"merging worker/c .* stage pretokenize@a differs"):
        gather.gather(["worker/a", "worker/c"])
    assert git(repo, "rev-parse", "HEAD") == before and not git(repo, "status", "--porcelain").strip()


def test_plain_git_merge_works_once_make_install_registered_the_driver(repo):
    git(repo, "config", "merge.dvclock.driver", gather.driver_command())
    git(repo, "merge", "-q", "--no-edit", "worker/a")
    git(repo, "merge", "-q", "--no-edit", "worker/b")
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"] == {
        "tokenizer": entry("t"),
        "pretokenize@a": entry("1"),
        "z": entry("z"),
        "pretokenize@b": entry("2"),
    }  # every worker's own entry, with its hashes
