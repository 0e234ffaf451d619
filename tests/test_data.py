"""Training windows: a seeded order without replacement, resumable, split across ranks, checked."""

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import PipelineError
from pipeline.encode import token_files
from pipeline.training import windows


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32), st.integers(0, 5))
def test_permutation_is_a_bijection_for_any_size_seed_and_epoch(n, seed, epoch):
    assert sorted(windows.permute(np.arange(n), n, seed, epoch).tolist()) == list(range(n))


def test_permutation_changes_with_seed_and_epoch():
    base = windows.permute(np.arange(1000), 1000, 1, 0)
    assert not np.array_equal(base, windows.permute(np.arange(1000), 1000, 2, 0))
    assert not np.array_equal(base, windows.permute(np.arange(1000), 1000, 1, 1))
    assert np.array_equal(base, windows.permute(np.arange(1000), 1000, 1, 0))


def write_array(path, values, vocab_size=100, sha="a" * 64):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.asarray(values, dtype=np.uint16).tofile(path)
    token_files.metadata_path(path).write_text(
        json.dumps(
            {
                "format": token_files.FORMAT,
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
    dataset = windows.Windows([a, b], block_size=4)
    assert len(dataset) == 7
    x, y = dataset[4]
    assert x.tolist() == [16, 17, 18, 19] and y.tolist() == [17, 18, 19, 20]
    assert dataset[5][0].tolist() == [50, 51, 52, 53] and dataset[6][1].tolist() == [55, 56, 57, 58]


def test_an_epoch_reads_every_window_once_then_a_new_order_begins(tmp_path):
    shuffled = windows.ShuffledWindows(windows.Windows([write_array(tmp_path / "a.bin", range(401))], 4), seed=3)
    first, second = shuffled.windows_of(list(range(100))), shuffled.windows_of(list(range(100, 200)))
    assert sorted(first) == sorted(second) == list(range(100)) and first != second
    assert shuffled.windows_of([98, 99, 100, 101]) == first[98:] + second[:2]


def test_ranks_read_disjoint_samples_that_add_up_to_one_device_with_twice_the_batch():
    one = iter(windows.TrainBatches(start=0, batch_size=8, rank=0, world_size=1))
    ranks = [iter(windows.TrainBatches(start=0, batch_size=4, rank=r, world_size=2)) for r in range(2)]
    for _ in range(5):
        mine = [next(r) for r in ranks]
        assert not set(mine[0]) & set(mine[1])
        assert sorted(mine[0] + mine[1]) == next(one)


def test_resumed_sampler_continues_where_the_run_stopped():
    run = iter(windows.TrainBatches(0, 4, 0, 1))
    seen = [next(run) for _ in range(6)]
    resumed = iter(windows.TrainBatches(3 * 4, 4, 0, 1))  # after 3 steps of 4 samples
    assert [next(resumed) for _ in range(3)] == seen[3:]


def test_validation_windows_are_fixed_and_dealt_out_to_ranks():
    alone = [w for batch in windows.ValBatches(100, 10, 4, 0, 1) for w in batch]
    again = [w for batch in windows.ValBatches(100, 10, 4, 0, 1) for w in batch]
    split = [[w for batch in windows.ValBatches(100, 10, 4, r, 2) for w in batch] for r in range(2)]
    assert alone == again == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]  # the same windows, spread evenly
    assert sorted(split[0] + split[1]) == sorted(alone) and not set(split[0]) & set(split[1])


def test_arrays_from_another_tokenizer_are_refused_naming_the_file(tmp_path):
    model = tmp_path / "spm.model"
    model.write_bytes(b"model")
    good = write_array(tmp_path / "good.bin", range(10), sha=hashlib.sha256(b"model").hexdigest())
    token_files.check_arrays([good], model, 100)
    stale = write_array(tmp_path / "stale.bin", range(10))
    with pytest.raises(PipelineError, match=r"stale\.bin: made with another tokenizer"):
        token_files.check_arrays([good, stale], model, 100)
    with pytest.raises(PipelineError, match=r"good\.bin: made with another tokenizer .*100 pieces.*200 pieces"):
        token_files.check_arrays([good], model, 200)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=8), st.integers(0, 10**9))
def test_every_1000_consecutive_samples_hold_each_group_within_one_percent_of_its_weight(weights, start):
    mixture = windows.Mixture({f"g{i}": w for i, w in enumerate(weights)})
    group, _ = mixture.assign(np.arange(start, start + 5000))
    share = np.array(weights) / sum(weights)
    for offset in range(0, 4001, 250):
        held = np.bincount(group[offset : offset + 1000], minlength=len(weights)) / 1000
        assert np.all(np.abs(held - share) <= 0.01), (offset, held, share)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=6), st.integers(0, 10**9), st.integers(1, 3000))
def test_a_samples_rank_in_its_group_counts_the_groups_earlier_samples(weights, start, n):
    """So the assignment of sample k depends on k alone: a resumed run or another rank computes the same."""
    mixture = windows.Mixture({f"g{i}": w for i, w in enumerate(weights)})
    group, rank = mixture.assign(np.arange(start, start + n))
    before = mixture.counts(start)
    for g, name in enumerate(mixture.names):
        mine = rank[group == g]
        assert mine.tolist() == list(range(before[name], before[name] + len(mine)))
    after = mixture.counts(start + n)
    assert {name: after[name] - before[name] for name in after} == {
        name: int((group == g).sum()) for g, name in enumerate(mixture.names)
    }
    assert sum(after.values()) == start + n


def test_a_mixed_run_draws_each_groups_windows_in_a_seeded_order_and_a_small_group_wraps(tmp_path):
    big = windows.Windows([write_array(tmp_path / "big.bin", range(4001))], 4)  # 1000 windows
    small = windows.Windows([write_array(tmp_path / "small.bin", range(4000, 4041))], 4)  # 10 windows
    mixed = windows.MixedWindows({"big": big, "small": small}, {"big": 3.0, "small": 1.0}, seed=5)
    batch = mixed.__getitems__(list(range(80)))
    from_small = [int(x[0]) for x, _, _ in batch if int(x[0]) >= 4000]
    # each sample carries its window's id, the groups' windows numbered one group after the other
    assert all(w == (1000 + (x[0] - 4000) // 4 if x[0] >= 4000 else x[0] // 4) for x, _, w in batch)
    assert len(from_small) == 20  # a quarter of the samples
    drawn = [(start - 4000) // 4 for start in from_small]
    assert sorted(drawn[:10]) == sorted(drawn[10:]) == list(range(10))  # each epoch: every window once
    assert drawn[:10] != drawn[10:]  # the second epoch in a new order
    assert [int(x[0]) for x, _, _ in mixed.__getitems__(list(range(40, 80)))] == [int(x[0]) for x, _, _ in batch[40:]]
