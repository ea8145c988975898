"""What several benchmarks share within one run: size preset, device peaks, a trained field."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from benchmarks.common import Size, format_record, torch_available
from benchmarks.floor import measure_device


@dataclasses.dataclass
class Context:
    """Built once per run; ``trained_params`` trains lazily (``size.pretrain_epochs`` epochs)."""

    size: Size
    seed: int = 0
    device: dict | None = None
    baseline: bool = True
    progress: bool = False
    _trained: object = None

    def __post_init__(self):
        from bayesiamp_jax import VectorField

        self.field = VectorField()
        if self.device is None:
            self.device = measure_device()
        self.baseline = self.baseline and torch_available()

    def log(self, rec: dict) -> dict:
        """Print a record as soon as it is measured (with ``progress``); returns it."""
        if self.progress:
            print(format_record(rec), flush=True)
            rec["_logged"] = True
        return rec

    def key(self, i: int) -> jax.Array:
        return jax.random.fold_in(jax.random.PRNGKey(self.seed), i)

    def train_data(self):
        from bayesiamp_jax import sample_ring

        return sample_ring(self.key(1), self.size.num_train)

    def trained_params(self):
        """Flow-matching parameters after ``size.pretrain_epochs`` epochs (cached)."""
        if self._trained is None:
            from bayesiamp_jax import fit

            data = self.train_data()
            self._trained = fit(self.key(2), self.field, data.x, data.c,
                                self.size.pretrain_epochs,
                                batch_size=min(self.size.batch_size, self.size.num_train),
                                progress=False).state.params
        return self._trained

    def torch_field(self, params=None):
        from benchmarks.torch_ref import TorchField

        return TorchField().load_jax(self.trained_params() if params is None else params)


def as_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)
