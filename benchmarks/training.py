"""Training epochs: deterministic flow matching and mean-field VI (k = 10, reference KL).

An epoch is N_train / batch steps (10 × 1,000 at the cpu/paper sizes). The JAX epochs run
``size.epochs_per_call`` epochs inside one jitted ``lax.scan``; the time is reported per epoch.
The PyTorch epochs are plain Python loops over mini-batches (one epoch per timed call).
Run ``python -m benchmarks.training --size tiny``.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.common import record, time_jax, time_torch
from benchmarks.floor import REVERSE_MULTIPLIER, field_flops, floor

KL_WEIGHT = 10.0


def _epoch_floor(ctx, seconds, extra_bytes=0):
    """Forward + backward of every training point once; data and params read once."""
    n = ctx.size.num_train // ctx.size.batch_size * ctx.size.batch_size
    flops = REVERSE_MULTIPLIER * n * field_flops(ctx.field)
    steps = n // ctx.size.batch_size
    num_bytes = n * 3 * 4 + steps * 4 * ctx.field.num_params() * 4 * 3 + extra_bytes
    return floor(flops, num_bytes, ctx.device, seconds)


def bench_fm_epoch(ctx) -> list[dict]:
    from bayesiamp_jax.training import adam, build_epochs, flow_matching_loss_fn, init_train_state

    data = ctx.train_data()
    opt = adam()
    run = build_epochs(flow_matching_loss_fn(ctx.field), opt, ctx.size.batch_size)
    state = init_train_state(ctx.field.init(ctx.key(3)), opt)
    epochs = ctx.size.epochs_per_call
    t = time_jax(lambda k, s, x, c: run(k, s, x, c, epochs), ctx.key(4), state, data.x, data.c,
                 repeats=ctx.size.repeats)
    secs = t["median_s"] / epochs
    recs = [record("fm_epoch", "jax", t, per=epochs, unit="epoch", epochs_per_call=epochs,
                   final_loss=float(t["output"][1].loss[-1]), **_epoch_floor(ctx, secs))]
    if ctx.baseline:
        recs.append(_torch_epoch(ctx, data, bayes=False))
    return recs


def bench_vi_epoch(ctx) -> list[dict]:
    from bayesiamp_jax.posteriors import vi
    from bayesiamp_jax.posteriors.model import cfm_loss_fn

    data = ctx.train_data()
    template = ctx.field.init(ctx.key(3))
    svi = vi.build_svi(template, cfm_loss_fn(ctx.field))
    run = vi.build_vi_runner(svi, ctx.size.batch_size)
    batch = (data.x, data.c)
    first = jax.tree_util.tree_map(lambda a: a[: ctx.size.batch_size], batch)
    state = jax.jit(lambda k, b, g: vi.init_vi_state(k, svi, b, g))(
        ctx.key(5), first, vi.init_guide_params(ctx.key(6), template))
    site_scale = vi.kl_site_scale(template, KL_WEIGHT, ctx.size.batch_size, "reference")
    epochs = ctx.size.epochs_per_call
    t = time_jax(lambda k, s, b, sc: run(k, s, b, sc, epochs), ctx.key(7), state, batch,
                 site_scale, repeats=ctx.size.repeats)
    secs = t["median_s"] / epochs
    recs = [record("vi_epoch", "jax", t, per=epochs, unit="epoch", epochs_per_call=epochs,
                   kl_weight=KL_WEIGHT, final_loss=float(t["output"][1][-1]),
                   **_epoch_floor(ctx, secs))]
    if ctx.baseline:
        recs.append(_torch_epoch(ctx, data, bayes=True))
    return recs


def _torch_epoch(ctx, data, bayes: bool) -> dict:
    import torch

    from benchmarks import torch_ref

    torch.manual_seed(ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    x, c = torch.as_tensor(np.array(data.x)), torch.as_tensor(np.array(data.c))
    if bayes:
        field = torch_ref.BayesField()
        opt = torch_ref.adam(list(field.mu) + list(field.rho))
        fn = lambda: torch_ref.vi_epoch(field, opt, x, c, ctx.size.batch_size, KL_WEIGHT, gen)
    else:
        field = torch_ref.TorchField()
        opt = torch_ref.adam(field.parameters())
        fn = lambda: torch_ref.fm_epoch(field, opt, x, c, ctx.size.batch_size, gen)
    t = time_torch(fn, repeats=ctx.size.repeats)
    name = "vi_epoch" if bayes else "fm_epoch"
    return record(name, "torch", t, unit="epoch", final_loss=float(t["output"]),
                  **_epoch_floor(ctx, t["median_s"]))


BENCHMARKS = {"fm_epoch": bench_fm_epoch, "vi_epoch": bench_vi_epoch}

if __name__ == "__main__":
    from benchmarks.runner import main

    main(BENCHMARKS, prog="python -m benchmarks.training", description=__doc__)
