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


def split_units(draws: PosteriorDraws) -> list[PosteriorDraws]:
    """The U draws of a unit-batched ``PosteriorDraws`` (params (U, S, ...), every info entry
    with leading axis U, as the drivers return them for U keys) as a list of U draws."""
    leaves = jax.tree_util.tree_leaves(draws.params)
    if not leaves or np.ndim(leaves[0]) < 2:
        raise ValueError("draws.params must carry a leading unit axis (U, S, ...), got shapes "
                         f"{[np.shape(leaf) for leaf in leaves]}")
    units = int(np.shape(leaves[0])[0])
    for name, value in draws.info.items():
        if np.ndim(value) == 0 or np.shape(value)[0] != units:
            raise ValueError(f"draws.info[{name!r}] has shape {np.shape(value)}; a unit-batched "
                             f"info entry needs leading axis U={units}")
    return [PosteriorDraws(jax.tree_util.tree_map(lambda a, u=u: np.asarray(a[u]), draws.params),
                           draws.method, {k: np.asarray(v[u]) for k, v in draws.info.items()})
            for u in range(units)]


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
