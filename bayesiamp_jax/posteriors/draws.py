"""The common result type of every weight-posterior method.

``PosteriorDraws.params`` is one params pytree whose leaves carry a leading draw axis (S, ...);
``info`` holds per-method diagnostics (a dict of arrays). Evaluation code only sees this type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from bayesiamp_jax import _checks
from bayesiamp_jax.checkpoint import load_pytree, restore, save_pytree


class PosteriorDraws(NamedTuple):
    """S weight draws as one pytree with leading axis S, the method's label and diagnostics."""

    params: object
    method: str
    info: dict

    @property
    def num_draws(self) -> int:
        return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

    def draw(self, i: int):
        """The i-th draw as an ordinary params pytree."""
        return jax.tree_util.tree_map(lambda leaf: leaf[i], self.params)


def stack_params(params_list) -> object:
    """Stack a list of params pytrees of one structure into one pytree with a leading axis."""
    if len(params_list) == 0:
        raise ValueError("params_list must hold at least one params pytree, got an empty list")
    for i, p in enumerate(params_list[1:], start=1):
        _checks.same_structure("params_list[0]", params_list[0], f"params_list[{i}]", p)
    return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *params_list)


def save_draws(path: str | os.PathLike, draws: PosteriorDraws) -> Path:
    """Save draws atomically (msgpack; see ``bayesiamp_jax.checkpoint``)."""
    return save_pytree(
        path, {"params": draws.params, "method": str(draws.method), "info": dict(draws.info)}
    )


def load_draws(path: str | os.PathLike, template=None) -> PosteriorDraws:
    """Load draws saved by ``save_draws``.

    ``template`` (one params pytree, without the draw axis) restores the exact pytree type and
    checks shapes; without it the params come back as nested dicts of numpy arrays.
    """
    raw = load_pytree(path)
    params = raw["params"]
    if template is not None:
        s = jax.tree_util.tree_leaves(params)[0].shape[0]
        target = jax.tree_util.tree_map(lambda leaf: np.zeros((s,) + np.shape(leaf)), template)
        params = restore(target, params)
    return PosteriorDraws(params, str(raw["method"]), dict(raw.get("info", {})))


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def keys_to_data(tree):
    """Replace typed PRNG-key leaves by their raw uint32 data (for saving a sampler state)."""
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def keys_from_data(tree, template):
    """Inverse of ``keys_to_data``: re-wrap the leaves that are typed keys in ``template``."""
    return jax.tree_util.tree_map(
        lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
        tree, template,
    )
