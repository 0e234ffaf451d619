"""Many machines, one dvc.lock: workers' branches merged stage by stage.

Each worker prepares some shards and commits `dvc.lock` on its own branch. Git merges two such
files line by line and conflicts, since the new entries land at the same place; DVC's merge driver
covers `.dvc` files, not `dvc.lock`. Here a lock file is merged as what it is, a mapping from stage
to entry: an entry present on one side only is taken, entries equal on both sides are kept, an
entry changed on one side only takes the change, and an entry that two sides changed differently
(the same shard prepared with different results) is a conflict that names the stage.

Two ways in: the git merge driver (`python -m pipeline.ops.gather %O %A %B`, named in .gitattributes and
registered by `make install`), so a plain `git merge` of worker branches works; and `gather(refs)`
(`make gather REFS=...`, `pile-gpt gather`), which merges the refs one after another, commits, and
on any conflict leaves the repository exactly as it was.
"""

import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.core.errors import PipelineError

LOCK_FILE = "dvc.lock"


def driver_command() -> str:
    """The merge driver as git runs it: this interpreter, so the project is importable."""
    return f"{sys.executable} -m pipeline.ops.gather %O %A %B"


class Conflict(PipelineError):
    """Two sides changed one stage's entry differently."""

    def __init__(self, stages: list[str]):
        super().__init__(
            f"{LOCK_FILE}: stage {', '.join(stages)} differs between the sides merged "
            "(the same stage prepared with different results); nothing was merged"
        )
        self.stages = stages


def merge_locks(ancestor: dict | None, ours: dict, theirs: dict) -> dict:
    """The three-way merge of parsed lock files, stage by stage; raises Conflict."""
    base = (ancestor or {}).get("stages", {})
    mine, other = ours.get("stages", {}), theirs.get("stages", {})
    merged, conflicts = {}, []
    for stage in list(mine) + [s for s in other if s not in mine]:  # ours' order, then new stages of theirs
        a, b, o = mine.get(stage), other.get(stage), base.get(stage)
        if a == b or b == o:
            chosen = a
        elif a == o:
            chosen = b
        else:
            conflicts.append(stage)
            continue
        if chosen is not None:  # a stage one side removed, and the other left as it was, stays removed
            merged[stage] = chosen
    if conflicts:
        raise Conflict(conflicts)
    schema = ours.get("schema") or theirs.get("schema") or "2.0"
    return {"schema": schema, "stages": merged}


def load(path: Path) -> dict:
    text = Path(path).read_text()
    return yaml.safe_load(text) or {}


def dump(lock: dict) -> str:
    return yaml.safe_dump(lock, sort_keys=False, default_flow_style=False, allow_unicode=True)


def merge_driver(ancestor: Path, ours: Path, theirs: Path) -> int:
    """git's merge driver protocol: write the result over `ours`; exit 0 when merged, 1 on conflict."""
    try:
        merged = merge_locks(load(ancestor), load(ours), load(theirs))
    except Conflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    Path(ours).write_text(dump(merged))
    return 0


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and result.returncode:
        raise PipelineError(f"git {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def gather(refs: list[str]) -> str:
    """Merge `refs` into the current branch, dvc.lock stage by stage; return the new commit.
    On a conflict, the repository is reset to where it was and the stage and ref are named."""
    if not refs:
        raise PipelineError('gather: name the workers\' refs to merge, e.g. make gather REFS="worker/a worker/b"')
    if _git("status", "--porcelain", "--untracked-files=no").stdout.strip():
        raise PipelineError("gather: the working tree has uncommitted changes; commit or stash them first")
    start = _git("rev-parse", "HEAD").stdout.strip()
    # the driver named in .gitattributes, given here too, so gathering needs no `make install`
    driver = ["-c", f"merge.dvclock.driver={driver_command()}", "-c", "merge.dvclock.name=dvc.lock, stage by stage"]
    for ref in refs:
        _git("rev-parse", "--verify", f"{ref}^{{commit}}")
        merged = _git(*driver, "merge", "--no-ff", "--no-edit", "-m", f"gather: {ref}", ref, check=False)
        if merged.returncode:
            _git("merge", "--abort", check=False)
            _git("reset", "--hard", start)
            said = (merged.stderr + merged.stdout).strip().splitlines()
            reason = next(
                (line.removeprefix("error: ") for line in said if LOCK_FILE + ": stage" in line),
                said[-1] if said else "merge failed",
            )
            raise PipelineError(
                f"gather: merging {ref} into {_git('rev-parse', '--abbrev-ref', 'HEAD').stdout.strip()}"
                f" stopped: {reason}; the repository is as it was ({start[:12]})"
            )
    return _git("rev-parse", "HEAD").stdout.strip()


if __name__ == "__main__":
    sys.exit(merge_driver(*map(Path, sys.argv[1:4])))
