"""Short demo: train a CNF on the Gamma ring, sample it and score it."""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import bayesiamp_jax as bj


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def main(argv=None, prog: str = "python -m experiments.demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--epochs", type=_positive, default=300,
                        help="flow-matching epochs (default: 300)")
    parser.add_argument("--num-train", type=_positive, default=10_000,
                        help="training points (default: 10000)")
    parser.add_argument("--num-samples", type=_positive, default=100_000,
                        help="generated points (default: 100000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of all keys (default: 0)")
    args = parser.parse_args(argv)
    key_data, key_fit, key_sample = jax.random.split(jax.random.key(args.seed), 3)
    train = bj.sample_ring(key_data, args.num_train)
    field = bj.VectorField()
    t0 = time.perf_counter()
    result = bj.fit(key_fit, field, train.x, train.c, args.epochs)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s, "
          f"final loss {result.losses[-1]:.4f}")
    c = jnp.full((args.num_samples, 1), bj.data.DEFAULT_R_MEAN)
    x = bj.sample(key_sample, field, result.state.params, c, bj.Solver("rk4", num_steps=20))
    r, _ = bj.to_polar(x)
    print(f"generated {args.num_samples} samples: mean r {float(r.mean()):.3f} (truth 5.000)")
    lp = bj.log_prob(field, result.state.params, train.x[:2000], train.c[:2000])
    truth = bj.data.truth_log_prob(train.x[:2000])
    print(f"mean log p on training points: model {float(lp.mean()):.3f}, "
          f"truth {float(truth.mean()):.3f}")
    return 0


if __name__ == "__main__":  # the same parser as `bayesiamp demo`
    from experiments.cli import module_main

    module_main("demo")
