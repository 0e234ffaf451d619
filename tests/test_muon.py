"""Our Muon: on one process torch.optim.Muon's math to the bit; Q, K and V orthogonalised apart on
request; on 2 gloo processes each rank orthogonalises only its share, and the weights, the momentum
and a checkpoint's continuation on 1 process are single-process Muon's."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.training import muon
from pipeline.training.muon import Muon, shares

# distinct shapes, so a shape names its matrix: a stacked Q, K, V (3 blocks), wide and tall ones
SHAPES = [(48, 16), (20, 20), (64, 16), (16, 64), (32, 24), (24, 40)]
QKV = 0
STEPS, CHECKPOINT_AT = 6, 3
HYPER = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95}


def matrices() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]


def set_gradients(params, step: int) -> None:
    """The same gradients on every rank, as DDP's all-reduce leaves them."""
    generator = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)


def lr_at(step: int) -> float:
    return 0.02 * (1 - step / (2 * STEPS))  # a schedule moves the lr between steps


def test_on_one_process_it_is_torch_muon_to_the_bit_and_their_checkpoints_load_into_each_other():
    ours, theirs = matrices(), matrices()
    a = Muon(ours, **HYPER)
    b = torch.optim.Muon(theirs, **HYPER, adjust_lr_fn="original")
    for step in range(STEPS):
        if step == CHECKPOINT_AT:  # each continues from the other's state: old checkpoints resume
            state_a, state_b = a.state_dict(), b.state_dict()
            a.load_state_dict(state_b)
            b.load_state_dict(state_a)
        for optimizer in (a, b):
            optimizer.param_groups[0]["lr"] = lr_at(step)
        set_gradients(ours, step)
        set_gradients(theirs, step)
        a.step()
        b.step()
        assert all(torch.equal(x, y) for x, y in zip(ours, theirs)), step
    assert not torch.equal(ours[0], matrices()[0])


def test_split_qkv_orthogonalises_q_k_v_as_three_matrices_with_their_own_lr_scale():
    """A stacked [3n, n] weight split in 3 steps as torch.optim.Muon steps three [n, n] weights."""
    stacked = matrices()[QKV]
    split = Muon([stacked], **HYPER, blocks={stacked: 3})
    apart = [torch.nn.Parameter(block.detach().clone()) for block in stacked.chunk(3)]
    reference = torch.optim.Muon(apart, **HYPER, adjust_lr_fn="original")
    whole = matrices()[QKV]
    unsplit = Muon([whole], **HYPER)
    for step in range(STEPS):
        set_gradients([stacked], step)
        whole.grad = stacked.grad.clone()
        for p, gradient in zip(apart, stacked.grad.chunk(3)):
            p.grad = gradient.clone()
        for optimizer in (split, reference, unsplit):
            optimizer.step()
        assert torch.equal(stacked, torch.cat(list(apart))), step
    assert not torch.allclose(stacked, whole, atol=1e-3)  # splitting changes the trajectory


def test_shares_are_deterministic_and_balanced_by_size():
    n = 128  # a model's blocks: qkv, proj, and a SwiGLU's three matrices, 4 layers
    sizes = [3 * n * n, n * n, 4 * n * n, 4 * n * n, 4 * n * n] * 4
    for world in (2, 3, 4):
        owner = shares(sizes, world)
        loads = [sum(s for s, o in zip(sizes, owner) if o == rank) for rank in range(world)]
        assert owner == shares(sizes, world) and set(owner) == set(range(world))
        assert max(loads) - min(loads) <= max(sizes), (world, loads)
    assert shares(sizes, 2).count(0) < len(sizes)
    assert sorted(shares([5, 3], 4)) == [0, 1]  # more ranks than matrices: some orthogonalise nothing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(rank: int, world: int, port: int, out, resume_from=None) -> None:
    """Train the matrices STEPS steps on `world` processes (gloo when more than one); save the weights
    after each step, the state at CHECKPOINT_AT, and the shape of every matrix this rank orthogonalised.
    resume_from: a (weights, state) pair of step CHECKPOINT_AT to continue from."""
    torch.set_num_threads(1)  # the same matmul kernels in every process
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    orthogonalised = []
    plain = muon.newton_schulz

    def counted(update, *args, **kwargs):
        orthogonalised.append(tuple(update.shape))
        return plain(update, *args, **kwargs)

    muon.newton_schulz = counted
    params = matrices()
    optimizer = Muon(params, **HYPER, blocks={params[QKV]: 3})
    first = 0
    if resume_from is not None:
        weights, state = torch.load(resume_from[0]), torch.load(resume_from[1])
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(w)
        optimizer.load_state_dict(state)
        first = CHECKPOINT_AT
    trajectory = {}
    for step in range(first, STEPS):
        if step == CHECKPOINT_AT:
            torch.save(optimizer.state_dict(), out / f"state-rank{rank}.pt")
            torch.save([p.detach().clone() for p in params], out / f"weights-at-checkpoint-rank{rank}.pt")
        optimizer.param_groups[0]["lr"] = lr_at(step)
        set_gradients(params, step)
        optimizer.step()
        trajectory[step] = [p.detach().clone() for p in params]
    torch.save({"trajectory": trajectory, "orthogonalised": orthogonalised}, out / f"rank{rank}.pt")
    if world > 1:
        dist.destroy_process_group()


def spawn(world: int, out, resume_from=None) -> list[dict]:
    out.mkdir(parents=True)
    mp.spawn(run, args=(world, free_port(), out, resume_from), nprocs=world)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(world)]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(a, b))


@pytest.mark.slow
def test_two_gloo_processes_share_the_orthogonalisation_and_step_as_one_process_even_across_a_resume(tmp_path):
    one = spawn(1, tmp_path / "one")[0]
    two = spawn(2, tmp_path / "two")
    for step in range(STEPS):
        assert same(two[0]["trajectory"][step], one["trajectory"][step]), step
        assert same(two[1]["trajectory"][step], one["trajectory"][step]), step
    # each rank orthogonalised its own matrices, each step: none twice, none left out (Q, K, V: 3 blocks)
    per_step = [sorted(set(rank["orthogonalised"])) for rank in two]
    assert not set(per_step[0]) & set(per_step[1])
    everything = {(16, 16) if i == QKV else shape for i, shape in enumerate(SHAPES)}
    assert set(per_step[0]) | set(per_step[1]) == everything
    assert len(two[0]["orthogonalised"]) + len(two[1]["orthogonalised"]) == len(one["orthogonalised"])
    # every rank holds the whole momentum: rank 1's checkpoint is rank 0's, and 1 process continues it
    state = [torch.load(tmp_path / "two" / f"state-rank{rank}.pt") for rank in range(2)]
    assert all(
        torch.equal(state[0]["state"][i]["momentum_buffer"], state[1]["state"][i]["momentum_buffer"])
        for i in range(len(SHAPES))
    )
    resumed = spawn(
        1,
        tmp_path / "resumed",
        resume_from=(tmp_path / "two/weights-at-checkpoint-rank0.pt", tmp_path / "two/state-rank0.pt"),
    )[0]
    for step in range(CHECKPOINT_AT, STEPS):
        assert same(resumed["trajectory"][step], two[0]["trajectory"][step]), step
