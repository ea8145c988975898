"""Run a ``bayesiamp`` study whose flow-matching Adam follows a cosine-decayed learning rate.

A stopgap for the pair-frame Z → ee study (docs/results/open_data.md): the study's
deterministic stage trains with the library's default optimiser (Adam, constant 1e-3,
betas 0.99/0.99) and has no schedule setting, while the measurements
(docs/open_data/field_measurements_pair.json) show that a constant rate leaves the m_ee peak
shifted by 0.3–0.7 GeV (the last iterate's noise) and a cosine decay does not. For this process
only, ``training.fit``'s default optimiser becomes

    Adam(optax.cosine_decay_schedule(1e-3, decay_steps, alpha=0.01), b1=0.99, b2=0.99)

with decay_steps = epochs × ⌊num_train / batch_size⌋ (the rate reaches 1e-5 at the last step).
Trainers that bring their own optimiser (AdamMCMC, VI, the classifier) are unchanged. The
schedule is not part of the study's ``config.json`` or its stage fingerprints: the command file
names it.

    python -m benchmarks.open_data.study_cosine --decay-steps 20000 -- paper --preset quick ...
"""

from __future__ import annotations

import argparse
import sys

import optax

from bayesiamp_jax import optim, training


def cosine_adam(decay_steps: int) -> optax.GradientTransformation:
    """The reference Adam on a cosine decay from 1e-3 to 1e-5 over ``decay_steps`` steps."""
    if decay_steps < 1:
        raise ValueError(f"decay_steps must be a positive integer, got {decay_steps!r}")
    return optim.adam(optax.cosine_decay_schedule(optim.LEARNING_RATE, decay_steps, alpha=0.01))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--decay-steps", type=int, required=True,
                   help="optimiser steps of the decay: epochs x (num_train // batch_size)")
    a = p.parse_args(argv[:cut])
    training._DEFAULT_OPTIMIZER = cosine_adam(a.decay_steps)  # this process only
    from experiments import cli

    return cli.main(argv[cut + 1:])


if __name__ == "__main__":
    sys.exit(main())
