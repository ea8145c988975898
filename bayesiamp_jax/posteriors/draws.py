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
from bayesiamp_jax.checkpoint import DamagedFileError, load_pytree, restore, save_pytree


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


_HISTORIES = ("losses", "member_loss", "bandwidth",  # info entries indexed by epoch
              "holdout_epochs", "holdout_curve")


def to_inference_data(draws):
    """arviz ``InferenceData`` of one ``PosteriorDraws`` (one chain) or a list of R of them
    (runs as chains; equal S; for unit-batched draws pass ``split_units(draws)``).

    Group ``posterior``: one variable per params leaf, named by its path ("Dense_0/kernel"),
    dims (chain, draw, *leaf shape). Group ``sample_stats``: the info entries with one value
    per draw ("acceptance_rate", "accept_prob", "diverging", "loss", …; not the per-epoch
    training histories "losses", "member_loss", "bandwidth"). Needs the optional
    ``arviz`` package (``pip install -e ".[arviz]"``).
    """
    try:
        import arviz
    except ImportError as err:  # optional extra
        raise ImportError("to_inference_data needs arviz: pip install arviz "
                          "(or the project's [arviz] extra)") from err
    runs = [draws] if isinstance(draws, PosteriorDraws) else list(draws)
    if not runs:
        raise ValueError("draws must hold at least one PosteriorDraws, got an empty list")
    sizes = {r.num_draws for r in runs}
    if len(sizes) != 1:
        raise ValueError(f"every run needs the same number of draws, got {sorted(sizes)}")
    (num_draws,) = sizes
    posterior = {}
    paths = jax.tree_util.tree_flatten_with_path(runs[0].params)[0]
    for i, (path, _) in enumerate(paths):
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                        for k in path) or f"param{i}"
        posterior[name] = np.stack([np.asarray(jax.tree_util.tree_leaves(r.params)[i])
                                    for r in runs])
    stats = {}
    for key in runs[0].info:
        values = [np.asarray(r.info.get(key, np.nan)) for r in runs]
        if key in _HISTORIES or key == "chain":  # per epoch, not per draw
            continue
        if all(v.ndim >= 1 and v.shape[0] == num_draws for v in values):
            stats[key] = np.stack(values)
    return arviz.from_dict(posterior=posterior, sample_stats=stats or None)


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
    if not isinstance(raw, dict) or "params" not in raw or "method" not in raw:
        raise DamagedFileError(f"file {str(path)!r} is not a draws file of save_draws (it "
                               "holds no params and method); delete it to recompute it")
    params = raw["params"]
    if template is not None:
        leaves = jax.tree_util.tree_leaves(params)
        s = np.shape(leaves[0])[0] if leaves and np.ndim(leaves[0]) else 0
        target = jax.tree_util.tree_map(lambda leaf: np.zeros((s,) + np.shape(leaf)), template)
        try:
            params = restore(target, params)
        except (ValueError, KeyError, TypeError) as e:
            first = str(e).splitlines()[0] if str(e) else repr(e)
            raise ValueError(f"file {str(path)!r} does not hold draws of the template's "
                             f"params: {first}") from None
    return PosteriorDraws(params, str(raw["method"]), dict(raw.get("info", {})))
