"""One call from posterior draws to every calibration and amplification number of the paper.

    problem = datasets.ring_problem()                   # what is binned, against which truth
    plan = Plan(calibration_bins=(5, 10), num_samples=100_000)   # sizes, solver, estimators
    result = evaluate(key, field, draws, problem, plan, num_train=10_000)  # EvaluationResult
    figures = plot_all(result)                                      # see ``figures``

``evaluate`` = ``histogram_same_noise`` (``plan.calibration_bins``, ``plan.num_samples``
shared-noise points per draw) + ``histogram_scaled`` (``plan.scaled_bins``,
``plan.samples_per_cell · n_Q`` fresh points per draw and binning) + ``analyse`` of both; an int
n of a plan is the problem's grid ``problem.binning(n)``. The result carries the raw histograms
(``result.histograms``), so a caller never reads them back within a run. ``analyse`` works on
saved ``PosteriorHistograms`` too, so the numbers and figures can be redone without generating
again (``save_histograms`` / ``load_histograms``, npz with atomic writes). ``save_results``
writes the compact ``summarise(result)`` (every reported number, no per-cell arrays) as JSON;
``to_dict`` turns any result into plain nested dicts.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from bayesiamp_jax import _checks
from bayesiamp_jax.binning import Binning, product_binning
from bayesiamp_jax.checkpoint import DamagedFileError, atomic_write_bytes, atomic_write_json
from bayesiamp_jax.datasets import Problem
from bayesiamp_jax.evaluation.amplification import (
    Amplification,
    Closure,
    PowerLawFit,
    amplification,
    closure,
    fit_power_law,
)
from bayesiamp_jax.evaluation.calibration import NOMINAL_LEVELS, Calibration, calibrate
from bayesiamp_jax.evaluation.differential import differential_amplification
from bayesiamp_jax.evaluation.generate import (
    SAME_NOISE,
    SCALED,
    PosteriorHistograms,
    histogram_same_noise,
    histogram_scaled,
)
from bayesiamp_jax.evaluation.plan import (
    CALIBRATION_BINS,  # noqa: F401 (re-exported: bayesiamp_jax.evaluation.CALIBRATION_BINS)
    FIT_BINS,
    SCALED_BINS,  # noqa: F401
    Plan,
    check_plan,
)
from bayesiamp_jax.evaluation.regions import (
    RegionAmplification,
    averaging_amplification,
    region_fractions,
)
from bayesiamp_jax.evaluation.summary import summarise


class BinningResult(NamedTuple):
    """Everything computed for one binning: shape (n_1, …, n_k) (the ring: (n_r, n_φ)), points
    per draw, the first observable's edges and the truth (for plots), and the calibration,
    amplification and closure results. These analyse the cells in the 2-D layout
    ``Binning.grid_shape`` (first observable value × all others flattened), so per-"radial"
    results (``deviation_r``, ``curve_r``) are per bin of the first observable.
    ``amplification_corrected``: the generation-noise-corrected N_eq (fresh points per draw,
    i.e. scaled histograms with >= 5 draws; None otherwise). ``averaging``: the averaging
    amplification (``regions``) of the slices of the first observable (the grid's rows;
    the ring: radial slices), for the same binnings."""

    label: str
    shape: tuple
    num_samples: int
    r_edges: np.ndarray
    truth: np.ndarray
    calibration: Calibration
    amplification: Amplification
    closure: Closure
    amplification_corrected: Amplification | None = None
    names: tuple | None = None
    averaging: RegionAmplification | None = None


class EvaluationResult(NamedTuple):
    """same_noise / scaled: dict label -> BinningResult (e.g. "50x50"); fit: power law of
    the scaled amplification (of the same-noise one when no scaled binnings were evaluated;
    None if fewer than 2 binnings were selected); num_train; fit_corrected: the same fit of
    the generation-noise-corrected amplification (None without scaled binnings);
    differential: observable value name -> ``KSAmplification`` (None without a truth
    sampler); histograms: phase ("same_noise", "scaled") -> the raw ``PosteriorHistograms``
    analysed (only the phases that ran; what ``output_dir`` saves)."""

    same_noise: dict
    scaled: dict
    fit: PowerLawFit | None
    num_train: int
    fit_corrected: PowerLawFit | None = None
    differential: dict | None = None
    histograms: dict | None = None


def analyse(key: jax.Array, histograms: PosteriorHistograms, num_train: int,
            levels=NOMINAL_LEVELS, closure_repeats: int = 100) -> dict:
    """Calibration, amplification and closure of every binning: dict label -> BinningResult.

    Scaled histograms (fresh points per draw) with >= 5 draws also get the
    generation-noise-corrected amplification (``num_generated`` = points per draw).
    """
    n_train = _checks.positive_int("num_train", num_train)
    out = {}
    keys = jax.random.split(key, max(len(histograms.binnings), 1))
    for k, b, frac, n in zip(keys, histograms.binnings, histograms.fractions,
                             histograms.num_samples, strict=True):
        grid = b.grid_shape
        frac = frac.reshape(frac.shape[:2] + grid)
        truth = b.truth.reshape(grid)
        truth_std = None if b.truth_std is None else b.truth_std.reshape(grid)
        amp = amplification(frac, truth, n_train)
        fresh = histograms.mode == SCALED and frac.shape[1] >= 5 and n >= 2
        out[b.label] = BinningResult(
            label=b.label, shape=b.shape, num_samples=int(n), r_edges=b.r, truth=b.truth,
            calibration=calibrate(frac, truth, levels, truth_std=truth_std),
            amplification=amp,
            closure=closure(k, frac, truth, amp.n_eq, closure_repeats),
            amplification_corrected=(amplification(frac, truth, n_train, num_generated=int(n))
                                     if fresh else None),
            names=b.names,
            averaging=slice_averaging(frac, truth, n_train, int(n)) if fresh else None,
        )
    return out


def slice_averaging(fractions, truth, num_train: int, num_generated: int):
    """Averaging amplification of the n_1 slices of the first observable (the rows of
    fractions (R, S, n_1, M)); None where a slice's truth is not inside (0, 1)."""
    rows = np.asarray(truth, np.float64).sum(axis=1)
    if np.any((rows <= 0) | (rows >= 1)):
        return None
    masks = np.broadcast_to(np.eye(rows.size)[:, :, None], (rows.size,) + np.shape(truth))
    return averaging_amplification(region_fractions(fractions, masks), rows, num_train,
                                   num_generated)


def fit_scaled(results: dict, select: int | Sequence | None = FIT_BINS,
               corrected: bool = False) -> PowerLawFit | None:
    """Power-law fit of amplification vs n_Q over ``results`` (dict of BinningResult).

    ``select``: a sequence of n (n × … × n grids of k values, i.e. n_Q = n^k), an int k (k
    largest n_Q) or None (all); None is returned when fewer than two binnings qualify.
    ``corrected``: fit the generation-noise-corrected amplification (None if a binning lacks
    it).
    """
    if not results:
        return None
    if corrected and any(r.amplification_corrected is None for r in results.values()):
        return None
    n_cells = np.array([np.prod(r.shape) for r in results.values()], float)
    num_values = len(next(iter(results.values())).shape)
    amps = np.stack([(r.amplification_corrected if corrected else r.amplification).amplification
                     for r in results.values()], axis=1)
    if isinstance(select, Sequence) and not isinstance(select, str):
        wanted = [n**num_values for n in select if n**num_values in n_cells.tolist()]
        if len(wanted) < 2:
            return None
        select = wanted
    elif isinstance(select, (int, np.integer)) and min(select, n_cells.size) < 2:
        return None
    if np.any(~np.isfinite(amps)) or np.any(amps <= 0):
        return None
    return fit_power_law(n_cells, amps, select)


def evaluate(
    key: jax.Array,
    field,
    draws,
    problem: Problem,
    plan: Plan = Plan(),  # noqa: B008 (an immutable NamedTuple)
    *,
    num_train: int,
    has_run_axis: bool = False,
    devices: Sequence | None = None,
    progress: bool = True,
    output_dir: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Generate, histogram and analyse posterior draws of one or several runs.

    Args:
        key: PRNG key (split into noise keys for both phases and the closure test).
        field: the vector field (``VectorField`` or any hashable ``field(params, t, x, c)``).
        draws: ``PosteriorDraws`` / params pytree with leading draw axis S (one run), a
            sequence of those (R runs), or a pytree with leading (R, S) (``has_run_axis``).
        problem: ``datasets.Problem``: what is binned (``problem.flow_observable``), the
            condition(s) generation uses (``problem.condition``: a scalar or per-point (M, k)),
            the grid of an int n (``problem.binning(n)``, the ring: its truth-quantile grid)
            and the exact truth sampler of the KS differential amplification
            (``problem.sampler``; None: no ``differential``).
        plan: ``Plan``: binnings, sample sizes, solver and estimator settings (checked by
            ``check_plan``; default: the paper's).
        num_train: N_train, the training-set size (amplification = N_eq / N_train).
        has_run_axis, devices, progress: how the draws are laid out and where the generation
            runs (``histogram_same_noise``); they change no number.
        output_dir: if given, raw histograms are saved there (``same_noise.npz``,
            ``scaled.npz``) and the compact JSON summary to ``results.json``; while running,
            generation checkpoints ``*.partial.g<g>.msgpack`` live there, so an interrupted
            call with the same arguments resumes where it stopped (both phases).
    Returns: ``EvaluationResult``; its ``histograms`` hold the raw ``PosteriorHistograms`` of
    the phases that ran ("same_noise", "scaled"), nothing has to be read back from disk.
    """
    plan = check_plan(plan)
    n_train = _checks.positive_int("num_train", num_train)
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a datasets.Problem, got {type(problem).__name__}")
    cond_dim = getattr(field, "cond_dim", 1)
    if problem.condition is None and cond_dim:
        raise ValueError(f"problem.condition is None but the field takes cond_dim={cond_dim} "
                         "conditions; set the problem's condition (a scalar or (M, k))")
    calibration_bins = _made(plan.calibration_bins, problem.binning)
    scaled_bins = _made(plan.scaled_bins, problem.binning)
    k_same, k_scaled, k_a, k_b = jax.random.split(key, 4)
    out = None if output_dir is None else Path(output_dir)
    common = dict(c=problem.condition, solver=plan.solver, chunk_size=plan.chunk_size,
                  devices=devices, has_run_axis=has_run_axis, progress=progress,
                  observable=problem.flow_observable)
    histograms = {}

    def phase(name, histogram, bins, size, key_generate, key_analyse):
        if not len(bins):
            return {}
        hist = histogram(
            key_generate, field, draws, bins, size, **common,
            checkpoint_path=None if out is None else out / f"{name}.partial",
            keep_checkpoint=True)
        if out is not None:
            save_histograms(out / f"{name}.npz", hist)
        histograms[name] = hist
        return analyse(key_analyse, hist, n_train, plan.levels, plan.closure_repeats)

    same = phase(SAME_NOISE, histogram_same_noise, calibration_bins, plan.num_samples, k_same,
                 k_a)

    def scaled_histogram(*args, **kwargs):
        return histogram_scaled(*args, **kwargs, shared=plan.shared_sample)

    scaled = phase(SCALED, scaled_histogram, scaled_bins, plan.samples_per_cell, k_scaled, k_b)
    diff = None
    if problem.sampler is not None and plan.differential_samples:
        diff = differential_amplification(
            jax.random.fold_in(key, 7), field, draws, problem.truth_sampler, n_train,
            num_generated=plan.differential_samples, num_reference=plan.differential_samples,
            observable=problem.flow_observable, c=problem.condition, solver=plan.solver,
            has_run_axis=has_run_axis)
    result = EvaluationResult(same, scaled, fit_scaled(scaled or same, plan.fit_bins), n_train,
                              fit_scaled(scaled, plan.fit_bins, corrected=True), diff,
                              histograms)
    if out is not None:
        save_results(out / "results.json", result)
        for partial in [*out.glob("same_noise.partial*"), *out.glob("scaled.partial*")]:
            partial.unlink(missing_ok=True)
    return result


def _made(specs, binning):
    """Int n -> ``binning(n)`` (the problem's grid); ``Binning``s are kept."""
    if isinstance(specs, (int, np.integer, Binning)):
        specs = [specs]
    return [binning(int(s)) if isinstance(s, (int, np.integer)) else s for s in specs]


def analyse_saved(key: jax.Array, same_noise: PosteriorHistograms | None,
                  scaled: PosteriorHistograms | None, num_train: int,
                  fit_bins: int | Sequence | None = FIT_BINS, levels=NOMINAL_LEVELS,
                  closure_repeats: int = 100) -> EvaluationResult:
    """``evaluate``'s analysis part on saved histograms (either may be None)."""
    _, _, k_a, k_b = jax.random.split(key, 4)  # the keys ``evaluate`` uses for the analysis
    same = {} if same_noise is None else analyse(k_a, same_noise, num_train, levels,
                                                 closure_repeats)
    sc = {} if scaled is None else analyse(k_b, scaled, num_train, levels, closure_repeats)
    hists = {name: h for name, h in ((SAME_NOISE, same_noise), (SCALED, scaled))
             if h is not None}
    return EvaluationResult(same, sc, fit_scaled(sc or same, fit_bins), int(num_train),
                            fit_scaled(sc, fit_bins, corrected=True), None, hists)


# ------------------------------------------------------------------------------- save/load


def save_histograms(path: str | os.PathLike, histograms: PosteriorHistograms) -> Path:
    """Save raw histograms (counts, sizes, edges, truth, labels, mode) to npz atomically."""
    arrays = {"mode": np.array(histograms.mode), "num_binnings": np.array(len(histograms.counts))}
    for i, (cnt, n, b) in enumerate(zip(histograms.counts, histograms.num_samples,
                                        histograms.binnings, strict=True)):
        arrays |= {f"counts_{i}": np.asarray(cnt), f"num_samples_{i}": np.array(n),
                   f"num_values_{i}": np.array(len(b.edges)), f"truth_{i}": b.truth,
                   f"label_{i}": np.array(b.label)}
        arrays |= {f"edges_{i}_{j}": e for j, e in enumerate(b.edges)}
        if b.truth_std is not None:
            arrays[f"truth_std_{i}"] = b.truth_std
        if b.names is not None:
            arrays[f"names_{i}"] = np.array(list(b.names))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_histograms(path: str | os.PathLike) -> PosteriorHistograms:
    """Load histograms saved by ``save_histograms``; a file that cannot be read back as one
    raises ``bayesiamp_jax.checkpoint.DamagedFileError`` (a ValueError) naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} does not exist")
    try:
        with np.load(path) as f:
            num = int(f["num_binnings"])
            counts = tuple(f[f"counts_{i}"] for i in range(num))
            nums = tuple(int(f[f"num_samples_{i}"]) for i in range(num))
            bins = tuple(_load_binning(f, i) for i in range(num))
            mode = str(f["mode"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DamagedFileError(
            f"histogram file {str(path)!r} is damaged or not a histogram file "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "delete it to regenerate") from None
    for i, (cnt, b) in enumerate(zip(counts, bins, strict=True)):
        if cnt.ndim != 2 + len(b.shape) or cnt.shape[2:] != b.shape:
            raise DamagedFileError(f"histogram file {str(path)!r}: counts_{i} has shape "
                                   f"{cnt.shape}, not (R, S) + {b.shape} of binning {b.label!r}")
    return PosteriorHistograms(counts, nums, bins, mode)


def _load_binning(f, i) -> Binning:
    if f"num_values_{i}" in f.files:
        edges = [f[f"edges_{i}_{j}"] for j in range(int(f[f"num_values_{i}"]))]
    else:  # written before observables: the ring's r and φ edges
        edges = [f[f"r_{i}"], f[f"phi_{i}"]]
    std = f[f"truth_std_{i}"] if f"truth_std_{i}" in f.files else None
    names = tuple(str(x) for x in f[f"names_{i}"]) if f"names_{i}" in f.files else (
        None if f"num_values_{i}" in f.files else ("r", "phi"))
    return product_binning(edges, f[f"truth_{i}"], str(f[f"label_{i}"]), truth_std=std,
                           names=names)


def to_dict(tree):
    """NamedTuples -> dicts, arrays -> lists, recursively (JSON-ready)."""
    if isinstance(tree, tuple) and hasattr(tree, "_asdict"):
        return {k: to_dict(v) for k, v in tree._asdict().items()}
    if isinstance(tree, dict):
        return {str(k): to_dict(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_dict(v) for v in tree]
    if isinstance(tree, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(tree)
        return _json_number(arr.item()) if arr.ndim == 0 else _nan_to_none(arr.tolist())
    return _json_number(tree) if isinstance(tree, float) else tree


def _json_number(v):
    return None if isinstance(v, float) and not np.isfinite(v) else v


def _nan_to_none(v):
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return _json_number(v)


def save_results(path: str | os.PathLike, result, **summary_options) -> Path:
    """Write the compact ``summarise(result, **summary_options)`` as JSON atomically."""
    return atomic_write_json(path, summarise(result, **summary_options))


def load_results(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
