"""One rank of the distributed RateLoss tests (tests/test_torch_rate_dq.py): run under
``python -m torch.distributed.run --nproc_per_node 2 tests/dist_rate_worker.py MODE OUT`` (gloo, CPU).

MODE ``ddp``: the model wrapped in DistributedDataParallel; ``fsdp``: every Linear and the root under
FSDP2's ``fully_shard`` (parameters become DTensor shards; the first layer's 97 rows do not split evenly).
Each rank trains 4 SGD steps on its half of a fixed batch with ``loss = mse + rate()`` (after the first step
the small weights are shrunk toward zero: the rate loss's drift trigger refreshes early, at step 2, before
``refresh_every=3``) and writes, per step, the rate value, the whole gradients, the loss and the number of
refreshes to ``OUT/rank{r}.pt``; the test compares them with one process on the whole batch (``reference``)."""

import os
import sys

import torch
import torch.distributed as dist

from bslcodec.torch import RateLoss

STEPS = 4
REFRESH_EVERY = 3


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 97), torch.nn.GELU(), torch.nn.Linear(97, 160),
                               torch.nn.GELU(), torch.nn.Linear(160, 8))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 48, generator=g), torch.randn(32, 8, generator=g)


def full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def train(m, rate, x, y, params):
    opt = torch.optim.SGD(params, lr=0.05)
    out = []
    for _ in range(STEPS):
        opt.zero_grad()
        r = rate()
        loss = torch.nn.functional.mse_loss(m(x), y) + r
        loss.backward()
        grads = {n: full(p.grad).detach().clone() for n, p in named(m)}
        out.append({"rate": float(r.detach()), "grads": grads, "bits": rate.total_bits,
                    "refreshes": rate.refreshes})
        opt.step()
        if len(out) == 1:
            shrink(m)
    return out


def shrink(m):
    """Reshape the weights (elementwise, so shards do what one process does): |w| < 0.05 -> w / 4."""
    with torch.no_grad():
        for _, p in named(m):
            if p.ndim == 2:
                loc = p.to_local() if hasattr(p, "to_local") else p
                loc.mul_(torch.where(loc.abs() < 0.05, 0.25, 1.0))


def named(m):
    mod = m.module if isinstance(m, torch.nn.parallel.DistributedDataParallel) else m
    return list(mod.named_parameters())


def reference(calibrate):
    """One process, the whole batch."""
    m = model()
    x, y = batch()
    rate = RateLoss(m, 2.0, expert={"rel_step": 1 / 8}, refresh_every=REFRESH_EVERY, calibrate=calibrate)
    return train(m, rate, x, y, m.parameters())


def main(mode, out, calibrate):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    m = model()
    x, y = batch()
    half = x.shape[0] // world
    x, y = x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]
    if mode == "ddp":
        m = torch.nn.parallel.DistributedDataParallel(m)
        rate = RateLoss(m.module, 2.0, expert={"rel_step": 1 / 8}, refresh_every=REFRESH_EVERY, calibrate=calibrate)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in m:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
        rate = RateLoss(m, 2.0, expert={"rel_step": 1 / 8}, refresh_every=REFRESH_EVERY, calibrate=calibrate)
        assert type(m[0].weight).__name__ == "DTensor"
    res = train(m, rate, x, y, m.parameters())
    torch.save(res, f"{out}/rank{rank}.pt")
    dist.barrier()  # both ranks' results are on disk and no collective is in flight


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
    # Leave without the interpreter's teardown: once in CI (a loaded 2-core clone) rank 0 of the FSDP2 run died
    # after its work with "terminate called without an active exception" (SIGABRT: a gloo C++ thread still
    # joinable when its owner was destroyed at exit); torch's teardown is not what this test checks.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
