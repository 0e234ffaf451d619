"""Training windows: a seeded order without replacement, resumable, split across ranks, checked."""

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import data, tokens
from pipeline.errors import PipelineError


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32), st.integers(0, 5))
def test_permutation_is_a_bijection_for_any_size_seed_and_epoch(n, seed, epoch):
    assert sorted(data.permute(np.arange(n), n, seed, epoch).tolist()) == list(range(n))


def test_permutation_changes_with_seed_and_epoch():
    base = data.permute(np.arange(1000), 1000, 1, 0)
    assert not np.array_equal(base, data.permute(np.arange(1000), 1000, 2, 0))
    assert not np.array_equal(base, data.permute(np.arange(1000), 1000, 1, 1))
    assert np.array_equal(base, data.permute(np.arange(1000), 1000, 1, 0))


def write_array(path, values, vocab_size=100, sha="a" * 64):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.asarray(values, dtype=np.uint16).tofile(path)
    tokens.metadata_path(path).write_text(
        json.dumps(
            {
                "format": tokens.FORMAT,
                "dtype": "uint16",
                "vocab_size": vocab_size,
                "n_tokens": len(values),
                "tokenizer_sha256": sha,
                "source": str(path),
            }
        )
    )
    return path


def test_windows_span_every_file_with_targets_shifted_by_one(tmp_path):
    a = write_array(tmp_path / "a.bin", range(0, 21))  # (21 - 1) // 4 = 5 windows
    b = write_array(tmp_path / "b.bin", range(50, 59))  # 2 windows
    windows = data.Windows([a, b], block_size=4)
    assert len(windows) == 7
    x, y = windows[4]
    assert x.tolist() == [16, 17, 18, 19] and y.tolist() == [17, 18, 19, 20]
    assert windows[5][0].tolist() == [50, 51, 52, 53] and windows[6][1].tolist() == [55, 56, 57, 58]


def test_an_epoch_reads_every_window_once_then_a_new_order_begins(tmp_path):
    shuffled = data.ShuffledWindows(data.Windows([write_array(tmp_path / "a.bin", range(401))], 4), seed=3)
    first, second = shuffled.windows_of(list(range(100))), shuffled.windows_of(list(range(100, 200)))
    assert sorted(first) == sorted(second) == list(range(100)) and first != second
    assert shuffled.windows_of([98, 99, 100, 101]) == first[98:] + second[:2]


def test_ranks_read_disjoint_samples_that_add_up_to_one_device_with_twice_the_batch():
    one = iter(data.TrainBatches(start=0, batch_size=8, rank=0, world_size=1))
    ranks = [iter(data.TrainBatches(start=0, batch_size=4, rank=r, world_size=2)) for r in range(2)]
    for _ in range(5):
        mine = [next(r) for r in ranks]
        assert not set(mine[0]) & set(mine[1])
        assert sorted(mine[0] + mine[1]) == next(one)


def test_resumed_sampler_continues_where_the_run_stopped():
    run = iter(data.TrainBatches(0, 4, 0, 1))
    seen = [next(run) for _ in range(6)]
    resumed = iter(data.TrainBatches(3 * 4, 4, 0, 1))  # after 3 steps of 4 samples
    assert [next(resumed) for _ in range(3)] == seen[3:]


def test_validation_windows_are_fixed_and_dealt_out_to_ranks():
    alone = [w for batch in data.ValBatches(100, 10, 4, 0, 1) for w in batch]
    again = [w for batch in data.ValBatches(100, 10, 4, 0, 1) for w in batch]
    split = [[w for batch in data.ValBatches(100, 10, 4, r, 2) for w in batch] for r in range(2)]
    assert alone == again == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]  # the same windows, spread evenly
    assert sorted(split[0] + split[1]) == sorted(alone) and not set(split[0]) & set(split[1])


def test_arrays_from_another_tokenizer_are_refused_naming_the_file(tmp_path):
    model = tmp_path / "spm.model"
    model.write_bytes(b"model")
    good = write_array(tmp_path / "good.bin", range(10), sha=hashlib.sha256(b"model").hexdigest())
    tokens.check_arrays([good], model, 100)
    stale = write_array(tmp_path / "stale.bin", range(10))
    with pytest.raises(PipelineError, match=r"stale\.bin: made with another tokenizer"):
        tokens.check_arrays([good, stale], model, 100)
    with pytest.raises(PipelineError, match=r"good\.bin: made with another tokenizer .*100 pieces.*200 pieces"):
        tokens.check_arrays([good], model, 200)
