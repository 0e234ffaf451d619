"""How long `make run` takes: `dvc repro` on the embedded sample in a fresh copy, stage by stage.

What README and docs/training.md state about the sample's run time comes from here
(tests/test_docs_figures.py holds them equal). The virtual environment is this one, so the install
step `make run` does first on a clean clone is not timed. Each stage's time runs from DVC's
"Running stage" line to the next one (or the end), so it includes DVC's own work for that stage.

    python bench/make_run.py               # the time only
    python bench/make_run.py --write-lock  # and the copy's dvc.lock and metrics/ into this checkout

Writes the `make_run` entry of bench/results/sample.json, keeping the file's other entries. The copy
starts as a clean clone does (no dvc.lock, metrics/ or data outputs), so with --write-lock one run both
measures `make run` and regenerates what CI checks `make run` against: commit first, with nothing stray.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS, fresh_copy, machine

RESULT_FILE = RESULTS / "sample.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-lock", action="store_true", help="copy the run's dvc.lock and metrics/ here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="make-run-") as folder:
        repo = fresh_copy(Path(folder) / "repo")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(repo),
            "PILE_GPT_PROGRESS": "0",
        }
        started = time.monotonic()
        child = subprocess.Popen(
            ["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        marks: list[tuple[str, float]] = []
        for line in child.stdout:
            found = re.match(r"Running stage '([^']+)'", line)
            if found:
                marks.append((found.group(1), time.monotonic() - started))
        if child.wait():
            raise SystemExit(f"dvc repro failed ({child.returncode})")
        seconds = time.monotonic() - started
        if args.write_lock:
            shutil.copy2(repo / "dvc.lock", REPO / "dvc.lock")
            shutil.rmtree(REPO / "metrics")
            shutil.copytree(repo / "metrics", REPO / "metrics")
    ends = [at for _, at in marks[1:]] + [seconds]
    stages = {name: round(end - at, 1) for (name, at), end in zip(marks, ends)}
    results = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.exists() else {}
    results.pop("machine", None)
    results["make_run"] = {
        "what": "`dvc repro` of the sample in a fresh copy, the virtual environment already installed",
        "measured": True,
        "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 1),
        "stages": stages,
        "load_average_after": round(os.getloadavg()[1], 2),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULT_FILE.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(json.dumps(results["make_run"], indent=2))


if __name__ == "__main__":
    main()
