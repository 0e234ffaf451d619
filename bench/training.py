"""Training benchmarks on the sample model (params.yaml), same batches side by side:

5. data loader: tokens/s the training DataLoader delivers (in the training process, num_workers=0,
   the least it can do) vs tokens/s a training step consumes;
6. trainer overhead: step time of the Lightning loop (GPTModule, the Trainer as the train stage sets
   it up, without loggers or checkpoints) vs a plain PyTorch loop doing the same work (AdamW with the
   same groups, the schedule, gradient clipping): rounds alternated, each the median step after warm-up,
   and the overhead the median of the rounds' ratios (this machine's speed drifts by 10-20%).

    python bench/training.py     # needs data/tokens (dvc repro pretokenize)

Writes bench/results/training.json and prints a table for bench/README.md.
"""

import statistics
import time
from dataclasses import asdict, replace

import pytorch_lightning as pl
import sentencepiece as spm
import torch
from common import REPO, save
from torch.utils.data import DataLoader

from pipeline.config.load import load_params
from pipeline.config.schema import TrainParams
from pipeline.model.gpt import GPT, GPTConfig
from pipeline.training.module import GPTModule
from pipeline.training.schedule import lr_factor
from pipeline.training.windows import ShuffledWindows, TrainBatches, Windows, training_arrays

STEPS, WARMUP, ROUNDS = 16, 4, 5


def loader_tokens_per_s(loader: DataLoader, batches: int) -> float:
    iterator = iter(loader)
    next(iterator)
    started = time.perf_counter()
    n = sum(x.numel() for (x, _, _), _ in zip(iterator, range(batches)))  # (x, y, window ids)
    return n / (time.perf_counter() - started)


def plain_loop(config: GPTConfig, t: TrainParams, batches: list) -> list[float]:
    torch.manual_seed(t.seed)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.optimizer_groups(t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, t))
    times, last = [], time.perf_counter()
    for x, y in batches:
        loss = model(x, y)  # as GPTModule.training_step
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        schedule.step()
        loss.item()  # Lightning reads the loss every step too (its NaN check, the progress bar)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times[WARMUP:]


class StepClock(pl.Callback):
    def __init__(self):
        self.times, self.last = [], None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def lightning_loop(config: GPTConfig, t: TrainParams, batches: list) -> list[float]:
    torch.manual_seed(t.seed)
    clock = StepClock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=t.precision,
        max_steps=len(batches),
        gradient_clip_val=t.grad_clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(GPTModule(config, t, t.batch_size), train_dataloaders=DataLoader(batches, batch_size=None))
    return clock.times[WARMUP - 1 :]  # the first interval ends at step 2


def main() -> None:
    p = load_params()
    t = replace(p.train, optimizer="adamw")  # the plain loop below is AdamW: like against like
    torch.set_num_threads(t.num_threads)
    vocab = spm.SentencePieceProcessor(model_file=str(REPO / "data/tokenizer/spm.model")).get_piece_size()
    config = GPTConfig(vocab_size=vocab, **asdict(p.model))
    windows = ShuffledWindows(Windows([REPO / path for path, _ in training_arrays(p.data)], config.block_size), t.seed)
    loader = DataLoader(windows, batch_sampler=TrainBatches(0, t.batch_size, 0, 1), num_workers=0)
    loader_rate = loader_tokens_per_s(loader, 400)
    batches = [(x, y) for (x, y, _), _ in zip(loader, range(STEPS))]
    plain, lightning, ratios = [], [], []
    for _ in range(ROUNDS):  # alternated, so drift in the machine's speed hits both
        plain.append(statistics.median(plain_loop(config, t, batches)))
        lightning.append(statistics.median(lightning_loop(config, t, batches)))
        ratios.append(lightning[-1] / plain[-1])
    step_plain, step_lightning = statistics.median(plain), statistics.median(lightning)
    tokens_per_step = t.batch_size * config.block_size
    results = {
        "loader_tokens_per_s": loader_rate,
        "train_tokens_per_s": tokens_per_step / step_lightning,
        "loader_vs_train": loader_rate / (tokens_per_step / step_lightning),
        "step_s_plain": step_plain,
        "step_s_lightning": step_lightning,
        "lightning_overhead": statistics.median(ratios) - 1,
        "overhead_by_round": [r - 1 for r in ratios],
        "steps_timed_per_round": STEPS - WARMUP,
        "model": f"{config.n_layer} layers, {config.n_embd} wide, context {config.block_size}, batch {t.batch_size}",
    }
    save("training", results)
    r = results
    print(f"""| measure | result |
|---|---|
| data loader, in the training process | {r["loader_tokens_per_s"]:,.0f} tokens/s |
| training step ({r["model"]}, {t.num_threads} threads) | {r["train_tokens_per_s"]:,.0f} tokens/s (loader **{r["loader_vs_train"]:,.0f}x** faster) |
| step time, plain PyTorch loop vs Lightning ({ROUNDS} alternated rounds of {r["steps_timed_per_round"]} steps) | {r["step_s_plain"] * 1e3:.0f} ms vs {r["step_s_lightning"] * 1e3:.0f} ms: **{r["lightning_overhead"]:+.1%}** (median of the rounds; they ranged {min(r["overhead_by_round"]):+.1%} to {max(r["overhead_by_round"]):+.1%}) |""")


if __name__ == "__main__":
    main()
