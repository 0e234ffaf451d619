"""No-op `dvc repro` on the fully built sample pipeline: what checking that nothing is stale costs
(best and median of 5 runs, beside `dvc status` on the same repository).

    python bench/dvc_noop.py     # after `make run`

Writes bench/results/dvc_noop.json and prints a table for bench/README.md.
"""

import statistics
import subprocess
import sys

from common import REPO, save, timed


def dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=REPO, capture_output=True, text=True)


def main() -> None:
    status = dvc("status")
    if "Data and pipelines are up to date" not in status.stdout:
        sys.exit("error: the sample pipeline is not fully built; run `make run` first\n" + status.stdout)
    repro = [timed(lambda: dvc("repro")) for _ in range(5)]
    assert "Running stage" not in dvc("repro").stdout
    stat = [timed(lambda: dvc("status")) for _ in range(5)]
    stages = len(dvc("stage", "list").stdout.splitlines())
    results = {
        "stages": stages,
        "repro_s_best": min(repro),
        "repro_s_median": statistics.median(repro),
        "status_s_best": min(stat),
        "status_s_median": statistics.median(stat),
    }
    save("dvc_noop", results)
    print(f"""| measure | result |
|---|---|
| no-op `dvc repro`, {stages} stages, everything cached | {results["repro_s_median"]:.2f} s median (best {results["repro_s_best"]:.2f} s) |
| `dvc status` on the same repository | {results["status_s_median"]:.2f} s median (best {results["status_s_best"]:.2f} s) |""")


if __name__ == "__main__":
    main()
