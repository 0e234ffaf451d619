"""Honest throughput: dense peaks from the data sheets, the FLOPs a step really does, training time
without validation, every learning rate, and checks at the steps Lightning logs."""

import re
import time

import pytest
import pytorch_lightning as pl
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config.load import load_params
from pipeline.config.schema import TrainParams
from pipeline.model.gpt import GPT, GPTConfig
from pipeline.training.module import GPTModule, is_report_step
from pipeline.training.schedule import lr_factor
from pipeline.training.throughput import DENSE_BF16_PEAKS, TokenThroughput, dense_peak, rates
from pipeline.training.windows import TokenDataModule
from tests.training import project, train

# names as torch.cuda.get_device_name() reports them on the machines people rent
REPORTED = {
    "NVIDIA H100 80GB HBM3": ("H100 SXM", 989.5e12),
    "NVIDIA H100 PCIe": ("H100 PCIe", 756.5e12),
    "NVIDIA H100 NVL": ("H100 NVL", 835.5e12),
    "NVIDIA H200": ("H200 SXM", 989.5e12),
    "NVIDIA H200 NVL": ("H200 NVL", 835.5e12),
    "NVIDIA GH200 480GB": ("GH200", 989.5e12),
    "NVIDIA A100-SXM4-80GB": ("A100", 312e12),
    "NVIDIA A100 80GB PCIe": ("A100", 312e12),
    "NVIDIA A100-PCIE-40GB": ("A100", 312e12),
    "NVIDIA L40S": ("L40S", 362.05e12),
    "NVIDIA B200": ("B200", 2.25e15),
    "AMD Instinct MI300X": ("MI300X", 1307.4e12),
}


@pytest.mark.parametrize("name", list(REPORTED))
def test_each_gpu_people_rent_gets_its_dense_bf16_peak(name):
    assert dense_peak(name) is not None and (dense_peak(name)[0], dense_peak(name)[1].flops) == REPORTED[name]


def test_every_peak_is_the_dense_figure_of_the_source_it_cites():
    """Each entry quotes its data sheet: a figure "with sparsity" is halved, a dense one taken as is."""
    for _, label, peak in DENSE_BF16_PEAKS:
        quoted = re.search(r"BF16 ([\d,.]+) (T|P)FLOPS (dense|with sparsity)", peak.source)
        if quoted is None:  # a chip that is another's: it names that figure
            assert re.search(r"the H100's 989.5", peak.source), (label, peak.source)
            continue
        figure = float(quoted.group(1).replace(",", "")) * (1e12 if quoted.group(2) == "T" else 1e15)
        dense = figure / 2 if quoted.group(3) == "with sparsity" else figure
        assert peak.flops == pytest.approx(dense, rel=1e-4), (label, peak.flops, peak.source)
        assert re.search(r"\b(nvidia|amd)\.com\b", peak.source), label
    assert dense_peak("NVIDIA GeForce GTX 1080") is None  # not listed: no MFU rather than a guess


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_flops_per_token_are_the_flops_a_training_step_computes(arch):
    """torch's FLOP counter over a forward and backward pass, per token (attention through SDPA's math
    kernel, whose matmuls it counts), is GPT.flops_per_token less what the counter does not see: RoPE's
    elementwise turns and the 6 FLOPs per norm gain that 6N counts by convention."""
    pieces = {"position": "learned", "norm": "layernorm", "mlp": "gelu", "qk_norm": False, "tie_embeddings": True}
    if arch == "modern":
        pieces = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "tie_embeddings": False}
    config = GPTConfig(vocab_size=512, block_size=32, n_layer=2, n_head=2, n_embd=64, arch=arch, **pieces)
    model = GPT(config)
    x = torch.randint(0, 512, (2, 32))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x).float().logsumexp(-1).mean().backward()
    rope = 9 * 2 * config.n_embd * config.n_layer if arch == "modern" else 0
    gains = sum(p.numel() for p in model.parameters() if p.dim() < 2)
    assert counter.get_total_flops() / x.numel() == model.flops_per_token() - rope - 6 * gains


def test_rates_are_tokens_over_training_seconds_and_mfu_is_their_flops_over_every_devices_peak():
    assert rates(1000, 2.0, 6e6, 4, None) == {"train/tokens_per_s": 500.0}
    assert rates(1000, 2.0, 6e6, 4, 1e12)["train/mfu"] == pytest.approx(1000 * 6e6 / (2.0 * 4e12))


class SlowFit(pl.Callback):
    """Every validation inside fit lasts at least `pause` seconds and every training step `step_pause`;
    the intervals between log points and the validation time inside each, as this callback sees them."""

    def __init__(self, pause: float, log_every: int, step_pause: float = 0.1):
        self.pause, self.log_every, self.step_pause = pause, log_every, step_pause
        self.marks: list[float] = []
        self.validating: list[float] = [0.0]

    def on_train_start(self, trainer, pl_module):
        self.marks.append(time.perf_counter())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # a step of the tiny model takes milliseconds, as long as the scheduler's jitter between two
        # callbacks on a loaded machine: a longer step keeps the comparison about what is counted
        time.sleep(self.step_pause)

    def on_validation_start(self, trainer, pl_module):
        self.began = time.perf_counter()
        time.sleep(self.pause)  # after TokenThroughput's own start of the validation (callbacks run in order)

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit":
            self.validating[-1] += time.perf_counter() - self.began

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.log_every == 0:
            self.marks.append(time.perf_counter())
            self.validating.append(0.0)


@pytest.mark.slow
def test_tokens_per_s_and_mfu_count_training_time_not_the_validations_inside_it(
    tmp_path, small_model, token_arrays, monkeypatch
):
    """A real Lightning run whose validations sleep 0.75 s each, two per log interval: the
    rates reported are the interval's tokens over its time without validation, far above what the
    interval's whole time gives, and the MFU is those tokens' FLOPs over the peak."""
    directory = project(tmp_path, small_model, token_arrays)
    monkeypatch.chdir(directory)
    block, log_every = 32, 4
    t = TrainParams(
        batch_size=4,
        max_steps=12,
        val_check_interval=2,
        val_windows=4,
        log_every=log_every,
        num_workers=0,
        warmup_steps=2,
        decay_steps=12,
        accelerator="cpu",
    )
    config = GPTConfig(vocab_size=1000, block_size=block, n_layer=1, n_head=2, n_embd=32)
    module = GPTModule(config, t, global_batch=4)
    data = TokenDataModule(
        [(directory / "data/tokens/00.bin", "train")],
        directory / "data/tokens/val.bin",
        block,
        t,
        directory / "data/tokenizer/spm.model",
        1000,
    )
    meter, slow = TokenThroughput(log_every, peak_flops=1e12), SlowFit(0.75, log_every)
    timings = []

    class Keep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if meter.last and (not timings or timings[-1] is not meter.last):
                timings.append(meter.last)

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=12,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[meter, slow, Keep()],
    )
    trainer.fit(module, datamodule=data)
    tokens = log_every * 4 * block
    # intervals 2 and 3 (the first holds the start-up, and gives no rate)
    assert len(timings) == 2
    for timing, start, end, validating in zip(timings, slow.marks[1:], slow.marks[2:], slow.validating[1:]):
        assert validating >= 1.5  # two validations of at least 0.75 s
        training = end - start - validating
        # the meter's clock and this callback's read the same moments, a few callbacks apart
        assert timing["train/tokens_per_s"] == pytest.approx(tokens / training, rel=0.05)
        assert timing["train/tokens_per_s"] > 1.1 * tokens / (end - start)  # what counting validation would give
        assert timing["train/mfu"] == pytest.approx(timing["train/tokens_per_s"] * module.flops_per_token / 1e12)


@pytest.mark.slow
def test_every_parameter_groups_lr_is_logged_and_every_step_lightning_logs_is_checked(
    tmp_path, small_model, token_arrays
):
    """Muon's matrices and AdamW's groups each log their own learning rate (each group's peak times
    the schedule), and every step whose loss Lightning logs is one whose result the stage checks
    (is_report_step): with log_every 3, Lightning logs steps 2, 5, 8, ..."""
    repo = project(tmp_path, small_model, token_arrays, train__log_every=3, train__optimizer="muon")
    train(repo)
    plots = repo / "metrics/train/plots/metrics/train"
    logged = [int(row.split("\t")[0]) for row in (plots / "loss.tsv").read_text().splitlines()[1:]]
    assert logged == [2, 5, 8, 11, 14, 17, 20, 23]
    params = load_params(repo / "params.yaml").train
    assert all(is_report_step(step, params) for step in logged)
    peaks = {
        "muon": params.muon_lr,
        "embedding": params.embedding_lr or params.lr,
        "head": params.head_lr or params.lr,
        "no_decay": params.lr,
    }
    for group, peak in peaks.items():
        rows = (plots / "lr" / f"{group}.tsv").read_text().splitlines()[1:]
        values = {int(step): float(value) for step, value in (row.split("\t") for row in rows)}
        assert sorted(values) == logged, group
        # logged after step s's update, when the scheduler has moved on to step s + 1
        assert all(values[s] == pytest.approx(peak * lr_factor(s + 1, params), rel=1e-6) for s in logged), group
