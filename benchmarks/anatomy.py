"""Where the time of generation and of a training epoch goes (no baseline: JAX parts only).

- ``field_anatomy``: the generation's inner loop (80 field evaluations in a ``lax.scan``, as
  RK4-20, on one chunk of ``size.chunk`` × 8 points) with the reference MLP as it is
  (``VectorField``), with its inputs prebuilt (no time embedding), and with the ELU replaced by
  the identity and by ReLU: the difference is the cost of ELU's ``expm1``, which
  ``floor.field_flops`` counts as one operation.
- ``epoch_anatomy``: one flow-matching epoch (``training.build_epochs``) against its parts: the
  10 optimiser steps with and without drawing t and z, the mini-batch permutation of the
  epoch by ``jax.random.permutation`` and by ``shuffle.permutation`` (the same integers).

Run ``python -m benchmarks.anatomy --size cpu``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import record, time_jax
from benchmarks.floor import field_flops, floor

EVALS = 80  # RK4-20


def bench_field_anatomy(ctx) -> list[dict]:
    field, params = ctx.field, ctx.field.init(ctx.key(20))
    n = ctx.size.chunk * 8
    x = jax.random.normal(ctx.key(21), (n, field.data_dim))
    c = jnp.full((n, field.cond_dim), 4.0)
    layers = [params[f"Dense_{i}"] for i in range(len(field.hidden) + 1)]

    def mlp(h, act):
        for layer in layers[:-1]:
            h = act(jnp.dot(h, layer["kernel"], precision=field.precision) + layer["bias"])
        return jnp.dot(h, layers[-1]["kernel"], precision=field.precision) + layers[-1]["bias"]

    def prebuilt(act):
        emb = jnp.zeros((n, 2 * field.num_frequencies))
        return lambda t, y: mlp(jnp.concatenate([emb + t, y, c], axis=-1), act)

    variants = {"VectorField (as generated)": lambda t, y: field(params, t, y, c),
                "MLP, ELU, inputs prebuilt": prebuilt(jax.nn.elu),
                "MLP, ReLU instead of ELU": prebuilt(jax.nn.relu),
                "MLP, identity instead of ELU": prebuilt(lambda a: a)}
    flops = EVALS * n * field_flops(field)
    recs = []
    for name, v in variants.items():
        def run(y, v=v):
            def body(y, time):
                return y + 0.0125 * v(time, y), None
            return jax.lax.scan(body, y, jnp.linspace(1.0, 0.0, EVALS))[0]

        timing = time_jax(run, x, repeats=ctx.size.repeats)
        recs.append(ctx.log(record("field_anatomy", name, timing, per=EVALS * n,
                                   unit="point-evaluation", points=n, evals=EVALS,
                                   **floor(flops, 0, ctx.device, timing["median_s"]))))
    return recs


def bench_epoch_anatomy(ctx) -> list[dict]:
    from bayesiamp_jax import flow, shuffle
    from bayesiamp_jax.training import adam, build_epochs, flow_matching_loss_fn, init_train_state

    field, data, opt = ctx.field, ctx.train_data(), adam()
    params = field.init(ctx.key(3))
    epochs, batch = ctx.size.epochs_per_call, ctx.size.batch_size
    steps = ctx.size.num_train // batch
    n = steps * batch
    xb, cb = data.x[:batch], data.c[:batch]
    t0, z0 = flow.draw_cfm_noise(ctx.key(22), xb)
    run = build_epochs(flow_matching_loss_fn(field), opt, batch)

    def scanned(step):
        def go(key, state):
            def body(s, k):
                return step(k, s), None
            return jax.lax.scan(body, state, jax.random.split(key, steps * epochs))[0]
        return go

    def sgd_step(loss):
        def step(k, s):
            p, o = s
            g = jax.grad(lambda q: loss(k, q))(p)
            u, o = opt.update(g, o, p)
            return optax.apply_updates(p, u), o
        return step

    state = (params, opt.init(params))
    parts = {
        "epoch (build_epochs)": (lambda k: run(k, init_train_state(params, opt), data.x, data.c,
                                               epochs), (ctx.key(4),)),
        "10 steps, t and z drawn": (scanned(sgd_step(
            lambda k, q: flow.cfm_loss(k, field, q, xb, cb))), (ctx.key(5), state)),
        "10 steps, t and z fixed": (scanned(sgd_step(
            lambda k, q: flow.cfm_loss_from_noise(field, q, xb, cb, t0, z0))), (ctx.key(5), state)),
        "permutation, jax.random": (lambda k: jax.vmap(lambda kk: jax.random.permutation(kk, n))(
            jax.random.split(k, epochs)), (ctx.key(6),)),
        "permutation, shuffle.permutation": (lambda k: jax.vmap(lambda kk: shuffle.permutation(
            kk, n))(jax.random.split(k, epochs)), (ctx.key(6),)),
    }
    recs = []
    for name, (fn, args) in parts.items():
        t = time_jax(fn, *args, repeats=ctx.size.repeats)
        recs.append(ctx.log(record("epoch_anatomy", name, t, per=epochs, unit="epoch",
                                   epochs_per_call=epochs)))
    return recs


BENCHMARKS = {"field_anatomy": bench_field_anatomy, "epoch_anatomy": bench_epoch_anatomy}

if __name__ == "__main__":
    from benchmarks.runner import main

    main(BENCHMARKS, prog="python -m benchmarks.anatomy", description=__doc__)
