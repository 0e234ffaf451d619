"""The train stage: a Lightning Trainer built from params, resumable, exported at the end."""

import contextlib
import dataclasses
import io
import json
import logging
import shutil
import time
import uuid
import warnings
from pathlib import Path

import pytorch_lightning as pl
import sentencepiece as spm
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from pipeline.config import layout
from pipeline.config.layout import METRICS_DIR, MODEL_DIR, TOKENIZER_DIR
from pipeline.config.schema import Params
from pipeline.core import files, plots, progress
from pipeline.core.errors import PipelineError
from pipeline.encode import token_files
from pipeline.model.gpt import GPT, GPTConfig
from pipeline.training.callbacks import FiniteWeights, MixtureReport, StepProgress, TokenThroughput
from pipeline.training.module import GPTModule
from pipeline.training.windows import TokenDataModule, train_paths

CHECKPOINT_DIR = MODEL_DIR / "checkpoints"
RUN_FILE = CHECKPOINT_DIR / "run.json"
TRAIN_METRICS_DIR = METRICS_DIR / "train"
LOSS_CURVE = TRAIN_METRICS_DIR / "loss.png"
# Settings that do not change the weights a run arrives at: a resume may differ in these.
NOT_TRAJECTORY = {
    "max_steps",
    "val_check_interval",
    "val_windows",
    "checkpoint_every",
    "log_every",
    "resume",
    "num_workers",
    "peak_flops",
    "wandb",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "compile",
    "num_threads",
}


def trajectory(p: Params, train_metas: list[dict]) -> dict:
    """Everything that decides the weights at a given step; a checkpoint resumes only under the same."""
    train = {k: v for k, v in dataclasses.asdict(p.train).items() if k not in NOT_TRAJECTORY}
    return {
        "model": dataclasses.asdict(p.model),
        "train": train,
        "data": [
            {
                **{k: m[k] for k in ("source", "n_tokens", "tokenizer_sha256")},
                "group": layout.shard(p.data, key).group or "train",
            }
            for key, m in zip(layout.keys(p.data, "train"), train_metas)
        ],
    }


def _previous_run(current: dict, resume: str, rank_zero: bool) -> tuple[Path | None, str]:
    """(checkpoint to resume from, W&B run id). Rank zero clears another run's checkpoints, saying why.

    The decision reads only run.json and last.ckpt, and rank zero's clearing cannot change it, so
    every rank of a distributed run reaches the same one whenever it looks.
    """
    last = CHECKPOINT_DIR / "last.ckpt"
    previous = json.loads(RUN_FILE.read_text()) if RUN_FILE.exists() else None
    if resume == "auto" and previous and previous["trajectory"] == current and last.exists():
        step = _check_loads_safely(last)
        if rank_zero:
            _rewind_dvclive(TRAIN_METRICS_DIR, step)
            progress.note(f"train: resuming from {last} at step {step:,}")
        return last, previous["wandb_id"]
    run_id = uuid.uuid4().hex[:8]
    if not rank_zero:
        return None, run_id
    if CHECKPOINT_DIR.exists() and any(CHECKPOINT_DIR.iterdir()):
        if resume == "never":
            why = "train.resume is never"
        elif previous is None:
            why = "they carry no run.json"
        elif previous["trajectory"] != current:
            why = "they belong to other params: " + ", ".join(_changed(previous["trajectory"], current))
        else:
            why = "there is no last.ckpt"
        print(f"train: starting afresh and clearing {CHECKPOINT_DIR}: {why}", flush=True)
        shutil.rmtree(CHECKPOINT_DIR)
    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    files.write_json_atomic(RUN_FILE, {"trajectory": current, "wandb_id": run_id})
    return None, run_id


def _check_loads_safely(checkpoint: Path) -> int:
    """Refuse a checkpoint that needs more than tensors and plain data to load: it could run code.
    Return its step."""
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception as exc:  # torch raises several types for a refused or damaged pickle
        raise PipelineError(
            f"{checkpoint}: refused: it does not load as plain tensors and data "
            f"(weights_only=True: {str(exc).splitlines()[0]}); it may hold code. Delete it, "
            "or set train.resume: never to start afresh"
        ) from None


def _rewind_dvclive(directory: Path, step: int) -> None:
    """Bring DVCLive's files back to the checkpoint's step before a resume appends to them.

    A killed run may have logged steps past its last checkpoint (the resumed run logs them again,
    identically) or died mid-write; DVCLive would then read half a metrics.json, or append to half a line.
    """
    for tsv in directory.glob("plots/**/*.tsv"):
        lines = tsv.read_text().split("\n")
        complete = lines[:-1]  # text after the last newline is a line cut short
        kept = complete[:1] + [row for row in complete[1:] if int(row.split("\t")[0]) < step]
        tsv.write_text("".join(row + "\n" for row in kept))
    summary = directory / "metrics.json"
    try:
        json.loads(summary.read_text())
    except FileNotFoundError:
        pass
    except ValueError:
        summary.unlink()  # rewritten at the next log


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _loggers(p: Params, run_id: str, resuming: bool) -> list:
    from dvclive.lightning import DVCLiveLogger

    class StepsLogger(DVCLiveLogger):
        """DVCLive without the `epoch` Lightning adds to every log call: training is one endless epoch."""

        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    loggers = [StepsLogger(dir=str(TRAIN_METRICS_DIR), dvcyaml=None, save_dvc_exp=False, resume=resuming)]
    if p.train.wandb.mode != "disabled":
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        # The run is started here, on rank zero, rather than by WandbLogger, whose call to wandb.init
        # passes a deprecated `anonymous` setting that W&B warns about on every run.
        run = None
        if rank_zero_only.rank == 0:
            run = wandb.init(
                project=p.train.wandb.project,
                entity=p.train.wandb.entity,
                id=run_id,
                resume="allow",
                mode=p.train.wandb.mode,
                dir=".",
                settings=wandb.Settings(silent=True),  # where the run is: in the stage summary
            )
        loggers.append(WandbLogger(experiment=run, log_model=False))
        loggers[-1].log_hyperparams({"model": dataclasses.asdict(p.model), "train": dataclasses.asdict(p.train)})
    return loggers


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name, flushed, then renamed (pipeline.core.files): a write
    cut short by a kill or a full disk never replaces the last good one. Lightning's own save goes
    through the system's temporary directory, and a move from another filesystem is a plain copy."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()  # as Lightning does; writing to the file directly, torch hides ENOSPC in a RuntimeError
        torch.save(checkpoint, buffer)
        with files.replacing(Path(path)) as (tmp,):
            tmp.write_bytes(buffer.getbuffer())


def export(trainer: pl.Trainer, config: GPTConfig, tokenizer_model: Path) -> None:
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
    # run.json and the checkpoints of the run being resumed live there (see _previous_run)
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
    except RuntimeError as exc:
        if "DataLoader worker" not in str(exc):
            raise
        raise PipelineError(
            f"train: {str(exc).strip().splitlines()[0]} (a DataLoader worker process died: often the "
            "out-of-memory killer). The last checkpoint is intact: rerun to resume from it exactly; lower "
            "train.num_workers or train.batch_size if memory is short"
        ) from None


def run_stage(p: Params) -> None:
    if p.train.num_threads:
        torch.set_num_threads(p.train.num_threads)
    quiet_lightning()
    tokenizer_model = TOKENIZER_DIR / "spm.model"
    vocab_size = spm.SentencePieceProcessor(model_file=str(tokenizer_model)).get_piece_size()
    metas = token_files.check_arrays(train_paths(p) + [layout.tokens_path("val")], tokenizer_model, vocab_size)
    config = GPTConfig(vocab_size=vocab_size, **dataclasses.asdict(p.model))
    resume_from, run_id = _previous_run(trajectory(p, metas[:-1]), p.train.resume, rank_zero_only.rank == 0)

    pl.seed_everything(p.train.seed, workers=True, verbose=False)
    module = GPTModule(config, p.train)
    data = TokenDataModule(p, tokenizer_model, vocab_size)
    last = ModelCheckpoint(
        dirpath=CHECKPOINT_DIR,
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,
        every_n_train_steps=p.train.checkpoint_every,
    )
    # only validations inside fit choose the best: not the step-0 loss, not the end of an epoch
    best = ModelCheckpoint(
        dirpath=CHECKPOINT_DIR,
        filename="best",
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=False,
    )
    loggers = _loggers(p, run_id, resuming=resume_from is not None)
    strategy = p.train.strategy
    if strategy == "fsdp":
        from pytorch_lightning.strategies import FSDPStrategy

        strategy = FSDPStrategy(state_dict_type="full")
    steps_bar = StepProgress(p.train.max_steps, p.train.log_every)
    callbacks = [
        last,
        best,
        TokenThroughput(p.train, config.block_size, module.flops_per_token),
        steps_bar,
        FiniteWeights(p.train),
    ]
    if p.train.mixture is not None:
        callbacks.append(MixtureReport(p.train, config.block_size))
    trainer = pl.Trainer(
        accelerator=p.train.accelerator,
        devices=p.train.devices,
        num_nodes=p.train.num_nodes,
        strategy=strategy,
        precision=p.train.precision,
        max_steps=p.train.max_steps,
        accumulate_grad_batches=p.train.grad_accum,
        gradient_clip_val=p.train.grad_clip or None,
        val_check_interval=p.train.val_check_interval * p.train.grad_accum,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=p.train.log_every,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(MODEL_DIR),
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    started = time.monotonic()
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
    trainer.save_checkpoint(CHECKPOINT_DIR / "last.ckpt", weights_only=False)
    export(trainer, config, tokenizer_model)
    for logger in loggers:
        logger.finalize("success")
    if p.train.wandb.mode != "disabled":
        import wandb

        wandb.finish()
    if trainer.is_global_zero:
        plots.loss_curve(loss_points(TRAIN_METRICS_DIR, "train"), loss_points(TRAIN_METRICS_DIR, "val"), LOSS_CURVE)
        val_loss = float(trainer.callback_metrics["val/loss"])
        steps = trainer.global_step
        progress.summary(
            "train",
            {
                "model": f"{module.model.n_params():,} parameters ({config.n_layer} layers, {config.n_embd} wide, "
                f"context {config.block_size}, vocabulary {vocab_size:,})",
                "run": ("resumed from " + str(resume_from) if resume_from else "fresh")
                + f", W&B id {run_id}"
                + (
                    f" ({p.train.wandb.mode}: `wandb sync wandb/offline-run-*-{run_id}` uploads it)"
                    if p.train.wandb.mode == "offline"
                    else ""
                ),
                "steps": f"{steps:,} ({module.tokens_seen():,} tokens); this run trained "
                + (
                    f"{steps - steps_bar.first_step:,} (from step {steps_bar.first_step:,})"
                    if steps_bar.first_step is not None
                    else "none"
                ),
                "loss": (f"train {float(train_loss):.4f}, " if train_loss is not None else "")
                + f"val {val_loss:.4f} at step {steps:,}"
                + (
                    f" (best {float(best.best_model_score):.4f}: {CHECKPOINT_DIR / Path(best.best_model_path).name})"
                    if best.best_model_score is not None
                    else ""
                ),
                "exported": f"{MODEL_DIR}/model.safetensors, config.json, tokenizer.model",
                "loss curve": str(LOSS_CURVE),
                "time": f"{time.monotonic() - started:.0f} s on {trainer.world_size} x {trainer.strategy.root_device}",
            },
        )
