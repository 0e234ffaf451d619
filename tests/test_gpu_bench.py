"""bench/gpu.py, the one-GPU benchmark, at its toy shape on CPU: it runs every variant and writes them,
so that the script is ready whenever a GPU is."""

import json
import subprocess
import sys

from tests.helpers import REPO, child_env


def test_the_gpu_benchmark_runs_every_variant_at_a_toy_shape_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run(
        [sys.executable, "bench/gpu.py", "--toy", "--out", str(out)],
        cwd=REPO,
        env=child_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    results = json.loads(out.read_text())
    assert results["toy"] and results["device"] == "cpu"
    assert set(results["variants"]) == {"old eager", "new eager", "old compiled", "new compiled"}
    assert all(v["tokens_per_s"] > 0 for v in results["variants"].values())
    assert all(len(rounds) == 1 for rounds in results["rounds"].values())
