"""Many devices and machines: the strategy (DDP; FSDP one block a unit, with optional activation
checkpointing), the job's world as Lightning will make it, and one decision for every rank.

Every rank reads the checkpoint folder on its own (pipeline.training.resume.plan, which writes
nothing). Once the processes are connected, the ranks compare what they decided; if any differs
from rank zero, every rank stops, naming the rank and what it saw. Then rank zero alone changes the
folder (clears another run's checkpoints, records the job in run.json), and every rank reads back
the job's id: a rank that cannot is not reading the same folder (one clone per node with local
checkpoints), and the job stops before any step, instead of ranks resuming from different places.
"""

import socket
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist
from lightning_fabric.plugins.environments import SLURMEnvironment

from pipeline.config.schema import TrainParams
from pipeline.core.errors import PipelineError
from pipeline.model.gpt import Block
from pipeline.training import resume


def strategy(train: TrainParams):
    """Lightning's strategy from params. FSDP shards one transformer block a unit (the whole model as
    one unit would gather every weight at once), and checkpoints activations block by block when
    train.activation_checkpointing asks (the other strategies do that in the model: GPT.checkpoint_activations)."""
    if train.strategy != "fsdp":
        return train.strategy
    from pytorch_lightning.strategies import FSDPStrategy

    return FSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if train.activation_checkpointing else None,
        state_dict_type="full",
    )


def cluster_plugins() -> list:
    """On SLURM, Lightning's SLURM environment without its own requeue handling: that would save
    hpc_ckpt_N.ckpt outside the run's folder and load it later past every check; a SIGUSR1 is
    pipeline.training.checkpoints.Preemption's."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def world(train: TrainParams) -> tuple[int, int]:
    """(processes, this one's global rank) of the job, as Lightning will run it: its devices and nodes
    under the launcher it finds (its own, torchrun, SLURM), known before any process starts."""
    probe = pl.Trainer(
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=strategy(train),
        plugins=cluster_plugins(),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return probe.world_size, probe.global_rank


def gather(value) -> list:
    """`value` of every rank, in rank order (this rank's alone when it is the only one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class OneDecision(pl.Callback):
    """Before the first step: every rank's resume decision equals rank zero's, and every rank reads the
    folder rank zero writes; otherwise every rank stops, naming the rank and what it saw."""

    def __init__(self, decision: resume.Decision, directory: Path):
        self.decision, self.directory, self.agreed = decision, directory, False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.agreed:  # a fresh run validates, then fits: one decision for both
            return
        here = {
            "rank": trainer.global_rank,
            "where": f"host {socket.gethostname()}, {self.directory.resolve()}",
            "view": self.decision.view(),
            "decided": self.decision.describe(),
        }
        seen = gather(here)
        differing = [rank for rank in seen if rank["view"] != seen[0]["view"]]
        if differing:
            first, other = seen[0], differing[0]
            raise PipelineError(
                f"train: rank {other['rank']} of {len(seen)} decided otherwise than rank 0 on how to start. "
                f"Rank 0 ({first['where']}): {first['decided']}; rank {other['rank']} ({other['where']}): "
                f"{other['decided']}. Every rank must read one checkpoint folder: put {self.directory} on a "
                "filesystem that every node shares (docs/training.md, Many machines)"
            )
        job = None
        if trainer.is_global_zero:
            job = resume.begin_job(self.directory, self.decision, trainer.world_size, socket.gethostname())
        job = trainer.strategy.broadcast(job, src=0)
        trainer.strategy.barrier("run.json written")
        blind = [rank for rank in gather({**here, "sees": resume.last_job(self.directory)}) if rank["sees"] != job]
        if blind:
            raise PipelineError(
                f"train: rank {blind[0]['rank']} ({blind[0]['where']}) does not see the job rank 0 recorded in "
                f"{self.directory / resume.RUN_FILE}: the ranks read different checkpoint folders. Put "
                f"{self.directory} on a filesystem that every node shares (docs/training.md, Many machines)"
            )
        self.agreed = True
