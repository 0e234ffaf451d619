"""The test suite's own arrangement on pytest-xdist workers (tests/conftest.py)."""

import os

import pytest
from conftest import CORES_SHARED  # pytest's own copy of tests/conftest.py (tests.conftest would be a second)


def test_each_worker_runs_torch_on_its_share_of_the_cores_not_all_of_them(pytestconfig):
    workers = pytestconfig.stash.get(CORES_SHARED, None)
    if workers is None:
        pytest.skip("one process, or OMP_NUM_THREADS set by the user: nothing to share")
    import torch

    assert torch.get_num_threads() == max(1, len(os.sched_getaffinity(0)) // workers)
