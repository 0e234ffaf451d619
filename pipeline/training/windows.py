"""Training and validation windows over the token arrays, as a LightningDataModule.

Every train array is cut into windows of block_size + 1 tokens (consecutive windows share one
token). The k-th sample of the run, counting from 0 over all devices and steps, is window
`permute(k mod N)` of epoch k // N: a seeded bijection computed on demand (a Feistel network), so
nothing of size N is ever built, and

- a resumed run starts at the sample its checkpoint recorded (pipeline.training.resume): no batch is
  replayed or skipped, whatever number of devices the job has;
- rank r of W reads samples [base + r*B, base + (r+1)*B) of each micro-step: disjoint across ranks,
  and the same samples per step for 1 device x 2B, 1 device x B accumulated twice, or 2 devices x B;
- within an epoch, no window repeats.

With train.mixture, training shards are drawn by group (each shard's `group`): which group sample
k comes from follows a deterministic weighted interleave (Mixture), so every stretch of samples holds
each group in its share; the i-th sample of a group is window permute(i mod N_g) of that group's
epoch i // N_g, seeded per group. A group that runs out of windows starts a new epoch alone.

Arrays are memory-mapped lazily in each DataLoader worker and never read whole. A training sample
carries its window's id (an index into the concatenated windows; with a mixture, into the groups'
windows one after another) as far as the batch's last stop on the host, where train.record_windows
writes it down: which windows each step trained, by rank.
"""

import functools
import hashlib
from pathlib import Path
from typing import TextIO

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.config import layout
from pipeline.config.schema import DataParams, TrainParams
from pipeline.core.errors import PipelineError
from pipeline.encode import token_files

MASK64 = (1 << 64) - 1


def _mix(values: np.ndarray, key: int) -> np.ndarray:
    """splitmix64's finaliser over uint64 values, keyed: a cheap, well-spread round function."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(key & MASK64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=8)
def _round_keys(seed: int | str, epoch: int, rounds: int = 6) -> list[int]:
    digest = hashlib.sha256(f"pile-gpt windows {seed} {epoch}".encode()).digest()
    return [int.from_bytes(digest[4 * i : 4 * i + 4] + digest[24 + i : 28 + i], "little") for i in range(rounds)]


def permute(positions: np.ndarray, n: int, seed: int | str, epoch: int) -> np.ndarray:
    """A seeded permutation of range(n), evaluated at `positions`; a different one each epoch."""
    half_bits = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    half_mask = np.uint64((1 << half_bits) - 1)
    keys = _round_keys(seed, epoch)
    out = np.asarray(positions, dtype=np.uint64).copy()
    todo = np.ones(out.shape, dtype=bool)
    while todo.any():  # cycle-walking: re-encrypt values that land outside [0, n); fewer than 4 rounds expected
        left, right = out[todo] >> np.uint64(half_bits), out[todo] & half_mask
        for key in keys:
            left, right = right, left ^ (_mix(right, key) & half_mask)
        out[todo] = (left << np.uint64(half_bits)) | right
        todo = out >= np.uint64(n)
    return out.astype(np.int64)


class Windows(Dataset):
    """Window w of the concatenated arrays -> (x, y), each (block_size,) int64, y shifted by one."""

    def __init__(self, paths: list[Path], block_size: int):
        self.paths = [Path(p) for p in paths]
        self.block_size = block_size
        lengths = [token_files.read_metadata(p)["n_tokens"] for p in self.paths]
        per_file = np.array([max(0, (n - 1) // block_size) for n in lengths], dtype=np.int64)
        if per_file.sum() == 0:
            raise PipelineError(
                f"{', '.join(map(str, self.paths))}: fewer tokens than one window of "
                f"{block_size + 1}; lower model.block_size"
            )
        self.starts = np.concatenate(([0], np.cumsum(per_file)))
        self._arrays: list[np.memmap] | None = None  # opened in the worker that first reads

    def __len__(self) -> int:
        return int(self.starts[-1])

    def window(self, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): the window's block_size tokens and the next token of each."""
        if self._arrays is None:
            self._arrays = [token_files.open_tokens(p) for p in self.paths]
        f = int(np.searchsorted(self.starts, w, side="right") - 1)
        offset = (w - int(self.starts[f])) * self.block_size
        chunk = torch.from_numpy(self._arrays[f][offset : offset + self.block_size + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]

    __getitem__ = window


class ShuffledWindows(Dataset):
    """Sample k of the run -> its window, through the seeded per-epoch permutation."""

    def __init__(self, windows: Windows, seed: int | str):
        self.windows, self.seed = windows, seed

    def windows_of(self, ks: list[int]) -> list[int]:
        n = len(self.windows)
        ks = np.asarray(ks, dtype=np.int64)
        out = np.empty_like(ks)
        for epoch in np.unique(ks // n):  # a batch may straddle two epochs
            mine = ks // n == epoch
            out[mine] = permute(ks[mine] % n, n, self.seed, int(epoch))
        return out.tolist()

    def __getitems__(self, ks: list[int]):
        """A whole batch at once (DataLoader calls this when it exists): one vectorised permutation;
        each sample (x, y, its window's id)."""
        return [(*self.windows[w], w) for w in self.windows_of(ks)]

    def __getitem__(self, k: int):
        return self.__getitems__([k])[0]


class Mixture:
    """Sample k -> (its group, its rank among that group's samples): a weighted interleave that depends
    only on k. The groups are split in two, recursively; of the j samples that reach a split, the
    first half takes L(j) = floor(j * p + 1/2), p being its share of the weight, so every split's count
    stays within half a sample of its share, and every group's within one sample per level:
    over 1,000 consecutive samples, a group of 8 is within 0.4% of its weight."""

    def __init__(self, weights: dict[str, float]):
        self.names = list(weights)
        self.weights = np.array([weights[name] for name in self.names], dtype=np.float64)

    def _share(self, lo: int, mid: int, hi: int) -> float:
        return float(self.weights[lo:mid].sum() / self.weights[lo:hi].sum())

    def assign(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(group index, rank within the group) of each global sample index in `ks`."""
        group, rank = np.empty(len(ks), dtype=np.int64), np.empty(len(ks), dtype=np.int64)
        self._route(np.asarray(ks, dtype=np.float64), np.arange(len(ks)), 0, len(self.names), group, rank)
        return group, rank

    def _route(self, j: np.ndarray, where: np.ndarray, lo: int, hi: int, group, rank) -> None:
        if hi - lo == 1:
            group[where], rank[where] = lo, j.astype(np.int64)
            return
        mid = (lo + hi) // 2
        share = self._share(lo, mid, hi)
        before, after = np.floor(j * share + 0.5), np.floor((j + 1) * share + 0.5)
        first = after > before
        self._route(before[first], where[first], lo, mid, group, rank)
        self._route((j - before)[~first], where[~first], mid, hi, group, rank)

    def counts(self, k: int) -> dict[str, int]:
        """How many of the first k samples each group holds."""
        out: dict[str, int] = {}

        def split(n: int, lo: int, hi: int) -> None:
            if hi - lo == 1:
                out[self.names[lo]] = n
                return
            mid = (lo + hi) // 2
            first = int(np.floor(n * self._share(lo, mid, hi) + 0.5))
            split(first, lo, mid)
            split(n - first, mid, hi)

        split(k, 0, len(self.names))
        return out


class MixedWindows(Dataset):
    """Sample k of the run -> a window of its group (Mixture), through that group's seeded per-epoch
    permutation."""

    def __init__(self, groups: dict[str, Windows], weights: dict[str, float], seed: int):
        self.groups, self.seed = groups, seed
        self.mixture = Mixture({name: weights[name] for name in groups})
        self.sizes = {name: len(windows) for name, windows in groups.items()}
        # window ids run through the groups one after another
        first = np.cumsum([0] + [self.sizes[name] for name in self.mixture.names])
        self.first_id = dict(zip(self.mixture.names, first.tolist()))

    def __getitems__(self, ks: list[int]):
        group, rank = self.mixture.assign(np.asarray(ks, dtype=np.int64))
        out = [None] * len(ks)
        for g, name in enumerate(self.mixture.names):
            mine = np.flatnonzero(group == g)
            if len(mine):
                windows = ShuffledWindows(self.groups[name], f"{self.seed}/{name}").windows_of(rank[mine])
                for position, w in zip(mine, windows):
                    out[position] = (*self.groups[name][w], self.first_id[name] + w)
        return out

    def __getitem__(self, k: int):
        return self.__getitems__([k])[0]


class TrainBatches(Sampler):
    """This rank's micro-batches of global sample indices, endless, from `start`."""

    def __init__(self, start: int, batch_size: int, rank: int, world_size: int):
        self.start, self.batch_size, self.rank, self.world_size = start, batch_size, rank, world_size

    def __iter__(self):
        base = self.start + self.rank * self.batch_size
        while True:
            yield list(range(base, base + self.batch_size))
            base += self.batch_size * self.world_size


class ValBatches(Sampler):
    """A fixed set of windows spread evenly over the validation array, dealt out to the ranks."""

    def __init__(self, n_windows: int, count: int, batch_size: int, rank: int, world_size: int):
        chosen = np.linspace(0, n_windows - 1, num=min(count, n_windows)).round().astype(np.int64)
        mine = chosen[rank::world_size].tolist()
        self.batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def training_arrays(data: DataParams) -> list[tuple[Path, str]]:
    """(token array, group) of every training shard, in the order of data.shards; a shard without a
    group is in `train`."""
    return [(layout.tokens_path(key), layout.shard(data, key).group or "train") for key in layout.keys(data, "train")]


class TokenDataModule(pl.LightningDataModule):
    """Train windows from every training array ((path, group) in `arrays`), validation windows from
    `val_array`; training reads from sample `start_sample` on (a resume's recorded position). With
    `record_windows` (a folder), each rank appends to rank-R.tsv the windows of every micro-batch it
    trains: `step<TAB>id,id,...`, after a `# job` line saying where the job began."""

    def __init__(
        self,
        arrays: list[tuple[Path, str]],
        val_array: Path,
        block_size: int,
        train: TrainParams,
        tokenizer_model: Path,
        vocab_size: int,
        start_sample: int = 0,
        record_windows: Path | None = None,
    ):
        super().__init__()
        self.arrays, self.val_array, self.block_size, self.train = arrays, val_array, block_size, train
        self.tokenizer_model, self.vocab_size = tokenizer_model, vocab_size
        self.start_sample, self.record_windows = start_sample, record_windows
        self._record: TextIO | None = None

    def setup(self, stage: str | None = None) -> None:
        paths = [path for path, _ in self.arrays]
        token_files.check_arrays(paths + [self.val_array], self.tokenizer_model, self.vocab_size)
        t = self.train
        if t.mixture is None:
            self.train_set = ShuffledWindows(Windows(paths, self.block_size), t.seed)
        else:
            groups: dict[str, list[Path]] = {}
            for path, group in self.arrays:
                groups.setdefault(group, []).append(path)
            windows = {name: Windows(group_paths, self.block_size) for name, group_paths in groups.items()}
            self.train_set = MixedWindows(windows, t.mixture, t.seed)
        self.val_set = Windows([self.val_array], self.block_size)

    def train_dataloader(self) -> DataLoader:
        t, trainer = self.train, self.trainer
        sampler = TrainBatches(self.start_sample, t.batch_size, trainer.global_rank, trainer.world_size)
        return DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=t.num_workers, persistent_workers=t.num_workers > 0
        )

    def val_dataloader(self) -> DataLoader:
        t = self.train
        sampler = ValBatches(
            len(self.val_set), t.val_windows, t.batch_size, self.trainer.global_rank, self.trainer.world_size
        )
        return DataLoader(self.val_set, batch_sampler=sampler, num_workers=0)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """The batch's last stop on the host: record a training batch's window ids, then drop them."""
        if len(batch) == 2:  # validation windows carry no ids
            return batch
        x, y, windows = batch
        if self.record_windows is not None and self.trainer.training:
            self._write_windows(windows)
        return x, y

    def _write_windows(self, windows: torch.Tensor) -> None:
        trainer = self.trainer
        if self._record is None:
            self.record_windows.mkdir(parents=True, exist_ok=True)
            self._record = open(self.record_windows / f"rank-{trainer.global_rank}.tsv", "a", buffering=1)
            devices = f"{trainer.world_size} device" + ("s" if trainer.world_size > 1 else "")
            self._record.write(f"# job from step {trainer.global_step} on {devices}\n")
        self._record.write(f"{trainer.global_step}\t{','.join(map(str, windows.tolist()))}\n")

    def teardown(self, stage: str) -> None:
        if self._record is not None:
            self._record.close()
            self._record = None
