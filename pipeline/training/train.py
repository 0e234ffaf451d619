"""The train stage: a Lightning Trainer built from params, resumable, exported at the end."""

import contextlib
import dataclasses
import logging
import shutil
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from pipeline.config import layout
from pipeline.config.layout import METRICS_DIR, MODEL_DIR, TOKENIZER_DIR
from pipeline.config.schema import ModelParams, Params, TrainParams
from pipeline.core import files, plots, progress
from pipeline.core.errors import PipelineError
from pipeline.encode import token_files
from pipeline.model.gpt import GPT, GPTConfig
from pipeline.tokenizer import pieces
from pipeline.training import distributed, resume
from pipeline.training.callbacks import FiniteWeights, MixtureReport, StepProgress, StopAtTarget
from pipeline.training.checkpoints import (
    BackgroundCheckpointIO,
    FailedWrites,
    Preemption,
    StableCheckpoint,
    checkpoint_callbacks,
    wait_for_checkpoints,
)
from pipeline.training.module import GPTModule
from pipeline.training.throughput import TokenThroughput
from pipeline.training.windows import TokenDataModule, training_arrays

CHECKPOINT_DIR = MODEL_DIR / "checkpoints"  # the run's folder: its checkpoints, run.json, the windows it trained
TRAIN_METRICS_DIR = METRICS_DIR / "train"
LOSS_CURVE = TRAIN_METRICS_DIR / "loss.png"


def loggers(train: TrainParams, model: ModelParams, run_id: str, resuming: bool, rank_zero: bool) -> list:
    from dvclive.lightning import DVCLiveLogger
    from pytorch_lightning.utilities import rank_zero_only

    class StepsLogger(DVCLiveLogger):
        """DVCLive without the `epoch` Lightning adds to every log call: training is one endless epoch."""

        tracked = True  # its files are DVC outputs: no wall-clock figure goes to it (TokenThroughput)

        @rank_zero_only  # as DVCLive's own: the other ranks' experiment is a stand-in
        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
            # the schedule (train/lr/<group>, train/momentum/<group>) is plotted, not a headline figure:
            # out of metrics.json, so `dvc metrics show` stays one screen wide
            train = self.experiment.summary.get("train")
            if isinstance(train, dict) and [train.pop(key) for key in ("lr", "momentum") if key in train]:
                self.experiment.make_summary()

    found = [StepsLogger(dir=str(TRAIN_METRICS_DIR), dvcyaml=None, save_dvc_exp=False, resume=resuming)]
    if train.wandb.mode != "disabled":
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        # The run is started here, on rank zero, rather than by WandbLogger, whose call to wandb.init
        # passes a deprecated `anonymous` setting that W&B warns about on every run.
        run = None
        if rank_zero:
            run = wandb.init(
                project=train.wandb.project,
                entity=train.wandb.entity,
                id=run_id,
                resume="allow",
                mode=train.wandb.mode,
                dir=".",
                settings=wandb.Settings(silent=True),  # where the run is: in the stage summary
            )
        found.append(WandbLogger(experiment=run, log_model=False))
        found[-1].log_hyperparams({"model": dataclasses.asdict(model), "train": dataclasses.asdict(train)})
    return found


def export_weights(trainer: pl.Trainer, config: GPTConfig, tokenizer_model: Path) -> None:
    """model.safetensors, config.json and the tokenizer in data/model, from the full weights."""
    state = trainer.strategy.lightning_module_state_dict()  # every rank takes part under FSDP
    if trainer.is_global_zero:
        model = GPT(config)
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        model.save_pretrained(MODEL_DIR)
        with files.replacing(MODEL_DIR / "tokenizer.model") as (copy,):
            shutil.copyfile(tokenizer_model, copy)


def loss_points(directory: Path, split: str) -> list[tuple[float, float]]:
    """(tokens seen, loss) of every logged point of `split` (train or val), from DVCLive's files."""

    def column(name: str) -> dict[int, float]:
        path = directory / "plots" / "metrics" / split / f"{name}.tsv"
        rows = path.read_text().splitlines()[1:] if path.exists() else []
        return {int(step): float(value) for step, value in (row.split("\t") for row in rows)}

    losses, seen = column("loss"), column("tokens")
    return sorted((seen[step], loss) for step, loss in losses.items() if step in seen)


def quiet_lightning() -> None:
    """Keep Lightning's start-up notices (accelerators found, tips) off the console: the stage prints
    its own summary. Warnings still show, but for two that this stage's design triggers on purpose."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # run.json and the checkpoints of the run being resumed live there (pipeline.training.resume)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning 2.6's own use of a torch.utils._pytree name that torch 2.13 deprecates; not our call
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


@contextlib.contextmanager
def lightning_call(trainer: pl.Trainer):
    """Around trainer.fit / validate: Lightning answers Ctrl-C (and SIGTERM, which pipeline.core.cli turns
    into the same) with its own shutdown and sys.exit(1); make it the stage's interrupt again (the
    message, exit 130). The death of a DataLoader worker (PyTorch notices it at once, through
    SIGCHLD) is told as what it is and what to do, instead of a traceback."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    except Exception as exc:
        death = dead_worker(exc)
        if death is None:
            raise
        raise PipelineError(
            f"train: {str(death).strip().splitlines()[0]} (a DataLoader worker process died: often the "
            "out-of-memory killer). The last checkpoint is intact: rerun to resume from it exactly; lower "
            "train.num_workers or train.batch_size if memory is short"
        ) from None


def dead_worker(exc: BaseException) -> RuntimeError | None:
    """PyTorch's report of a dead DataLoader worker in the chain of `exc`: its SIGCHLD handler raises
    wherever the main thread happens to be, and library code there may wrap it (inspect turns it into
    "TypeError: unsupported callable")."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def run_stage(p: Params) -> None:
    """The train stage: the GPT trained on every training array, resumed where it belongs, exported."""
    if p.train.num_threads:
        torch.set_num_threads(p.train.num_threads)
    quiet_lightning()
    tokenizer_model = TOKENIZER_DIR / "spm.model"
    vocab_size = pieces.processor(tokenizer_model).get_piece_size()
    token_files.check_folder(layout.TOKENS_DIR, list(p.data.shards), "train")
    arrays, val_array = training_arrays(p.data), layout.tokens_path("val")
    read = arrays + [(val_array, "val")]
    metas = token_files.check_arrays([path for path, _ in read], tokenizer_model, vocab_size)
    world_size, rank = distributed.world(p.train)
    decision = resume.plan(CHECKPOINT_DIR, p.model, p.train, read, metas, world_size)
    if decision.checkpoint is not None and rank == 0:
        resume.rewind_dvclive(TRAIN_METRICS_DIR, decision.step)
        progress.note(f"train: {decision.why.replace('resumed', 'resuming')}")
    pl.seed_everything(p.train.seed, workers=True, verbose=False)
    config = GPTConfig(vocab_size=vocab_size, **dataclasses.asdict(p.model))
    module = GPTModule(config, p.train, decision.batch.global_batch, metas[-1]["n_tokens"] / metas[-1]["n_bytes"])
    windows_record = CHECKPOINT_DIR / "windows" if p.train.record_windows else None
    data = TokenDataModule(
        arrays, val_array, p.model.block_size, p.train, tokenizer_model, vocab_size, decision.samples, windows_record
    )
    resuming = decision.checkpoint is not None
    found_loggers = loggers(p.train, p.model, decision.wandb_id, resuming, rank == 0)
    trainer = build_trainer(p.train, decision, found_loggers)
    started = time.monotonic()
    train_loss = fit(trainer, module, data, decision.checkpoint)
    reached = next(c for c in trainer.callbacks if isinstance(c, StopAtTarget)).reached
    if trainer.is_global_zero:
        resume.mark_finished(CHECKPOINT_DIR, trainer.global_step, reached[1] if reached else None)
    export_weights(trainer, config, tokenizer_model)
    for logger in trainer.loggers:
        logger.finalize("success")
    if p.train.wandb.mode != "disabled":
        import wandb

        wandb.finish()
    if trainer.is_global_zero:
        plots.loss_curve(loss_points(TRAIN_METRICS_DIR, "train"), loss_points(TRAIN_METRICS_DIR, "val"), LOSS_CURVE)
        summarize(trainer, module, p.train.wandb.mode, decision, train_loss, time.monotonic() - started)


def build_trainer(train: TrainParams, decision: resume.Decision, found_loggers: list) -> pl.Trainer:
    """A Lightning Trainer from train params and this job's decision: its global batch made by the
    job's accumulation, checkpoints in the run's folder (`last` every checkpoint_every steps and on a
    preemption signal, `stable` before a wsd cooldown, `best` by validation loss) written whole or not
    at all in the background, the callbacks that watch the run, one decision for every rank."""
    callbacks = [
        distributed.OneDecision(decision, CHECKPOINT_DIR),
        resume.DataPosition(decision),
        TokenThroughput(train.log_every, train.peak_flops),
        StepProgress(train.max_steps, train.log_every),
        FiniteWeights(train),
        FailedWrites(train),
        StopAtTarget(train.stop_at_val_bpb),
        Preemption(train, CHECKPOINT_DIR),
        StableCheckpoint(train, CHECKPOINT_DIR),
        *checkpoint_callbacks(train, CHECKPOINT_DIR),
    ]
    if train.mixture is not None:
        callbacks.append(MixtureReport(train))
    return pl.Trainer(
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=distributed.strategy(train),
        precision=train.precision,
        max_steps=train.max_steps,
        accumulate_grad_batches=decision.batch.grad_accum,
        gradient_clip_val=train.grad_clip or None,
        val_check_interval=train.val_check_interval * decision.batch.grad_accum,  # counted in micro-batches
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=train.log_every,
        callbacks=callbacks,
        logger=found_loggers,
        plugins=[BackgroundCheckpointIO(), *distributed.cluster_plugins()],
        default_root_dir=str(CHECKPOINT_DIR),  # where Lightning would look for its own SLURM checkpoints
        enable_model_summary=False,
        enable_progress_bar=False,
    )


def fit(trainer: pl.Trainer, module: GPTModule, data: TokenDataModule, resume_from: Path | None):
    """Validate at step 0 (a fresh run), train (from `resume_from`), validate the final weights unless
    the last step just did, save the final step; return the last training loss logged."""
    if resume_from is None:
        with lightning_call(trainer):
            trainer.validate(module, datamodule=data, verbose=False)  # the loss at step 0, for comparison
    with lightning_call(trainer):
        trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
    train_loss = trainer.callback_metrics.get("train/loss")  # a validation below starts a new set of metrics
    if module.validated_at != trainer.global_step:
        with lightning_call(trainer):
            trainer.validate(module, datamodule=data, verbose=False)  # the final weights' loss, for the summary
    # the final step too (with optimizer state), so a larger max_steps later resumes from here
    trainer.save_checkpoint(CHECKPOINT_DIR / resume.LAST, weights_only=False)
    wait_for_checkpoints(trainer)  # on disk before run.json says the run finished
    return train_loss


def summarize(trainer, module: GPTModule, wandb_mode: str, decision: resume.Decision, train_loss, seconds: float):
    """The stage's one-screen summary."""
    config, steps = module.config, trainer.global_step
    best = next(c for c in trainer.checkpoint_callbacks if c.monitor == "val/loss")
    first = next(c for c in trainer.callbacks if isinstance(c, StepProgress)).first_step
    rates = next(c for c in trainer.callbacks if isinstance(c, TokenThroughput)).last
    run_id = decision.wandb_id
    offline = f" (offline: `wandb sync wandb/offline-run-*-{run_id}` uploads it)" if wandb_mode == "offline" else ""
    progress.summary(
        "train",
        {
            "model": f"{module.model.n_params():,} parameters ({config.n_layer} layers, {config.n_embd} wide, "
            f"context {config.block_size}, vocabulary {config.vocab_size:,})",
            "run": f"{decision.why}; W&B id {run_id}{offline}",
            "batch": f"{decision.batch.global_batch:,} sequences a step ({decision.batch.batch_size} a device x "
            f"grad_accum {decision.batch.grad_accum} x {decision.batch.world_size} device"
            + ("s)" if decision.batch.world_size > 1 else ")"),
            **(
                {"stopped": f"at step {reached[0]:,}: val BPB {reached[1]:.4f} reached train.stop_at_val_bpb"}
                if (reached := next(c for c in trainer.callbacks if isinstance(c, StopAtTarget)).reached)
                else {}
            ),
            "steps": f"{steps:,} ({module.tokens_seen():,} tokens); this run trained "
            + (f"{steps - first:,} (from step {first:,})" if first is not None else "none"),
            "loss": (f"train {float(train_loss):.4f}, " if train_loss is not None else "")
            + f"val {float(trainer.callback_metrics['val/loss']):.4f} at step {steps:,}"
            + (
                f" (best {float(best.best_model_score):.4f}: {CHECKPOINT_DIR / Path(best.best_model_path).name})"
                if best.best_model_score is not None
                else ""
            ),
            "exported": f"{MODEL_DIR}/model.safetensors, config.json, tokenizer.model",
            "loss curve": str(LOSS_CURVE),
            "throughput": (f"{rates['train/tokens_per_s']:,.0f} tokens/s" if rates else "no step logged")
            + (
                f", MFU {rates['train/mfu']:.3%}"
                if "train/mfu" in rates
                else " (no MFU: the device's peak FLOP/s is unknown; train.peak_flops gives it)"
            ),
            "time": f"{seconds:.0f} s on {trainer.world_size} x {trainer.strategy.root_device}",
        },
    )
