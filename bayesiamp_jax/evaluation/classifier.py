"""Classifier two-sample test of generated against held-out (reference) events, all dimensions.

Histograms of chosen observables and a KS test per marginal cannot see a mismodelled
correlation. The multivariate check the field uses (calorimeter-challenge style evaluations,
Lopez-Paz & Oquab, "Revisiting classifier two-sample tests", arXiv:1610.06545) trains a
classifier to tell generated (label 0) from reference (label 1) events and tests its AUC on a
disjoint test split against the AUC's null distribution.

**Classifier.** The project's MLP (``network._MLP``, ELU by default) with one output, the logit
f(x), on inputs standardised with the mean and standard deviation of the reference training
split; class-balanced binary cross-entropy (each class weighs half), Adam
(``training.adam``) over mini-batches (``training.build_epochs``), early stopping on the
balanced validation loss (the parameters of the best validation epoch; stop after ``patience``
epochs without improvement). With balanced classes the minimiser of the loss is
f(x) = log p_ref(x)/p_gen(x), so the logit *is* the learned log likelihood ratio log r(x)
(returned as ``LogRatio``). All randomness (splits, initialisation, mini-batches) comes from
one key; repetitions (pseudo-experiments, null retrainings) are vmapped into one compiled
program per shape and configuration.

**AUC and its null.** AUC = U / (n_ref n_gen), U the Mann–Whitney statistic of the reference
test scores against the generated test scores (mid-ranks for ties; ``scipy.stats.mannwhitneyu``).
The classifier never sees the test split, so under H0 (same law) the test scores of both
samples are i.i.d. and their labels exchangeable: the label-permutation distribution of the AUC
is its exact null *whatever the training did* (training noise changes the power, not the size).
The p-value is the one-sided Mann–Whitney p-value (AUC > 1/2; the permutation null in its
tie-corrected normal form), ``null_permutation`` the AUCs of ``num_permutations`` label
permutations of the test scores and ``critical_auc`` their (1 − α) quantile;
z = (AUC − 1/2)/σ₀ with σ₀² = (n₁ + n₂ + 1)/(12 n₁n₂) (the null variance of U/(n₁n₂) for
continuous scores). As a check of the whole pipeline (leakage, a bias of the training),
``num_retrain`` classifiers are also retrained from scratch on label-permuted pools (the n + m
events pooled and re-split at random into n and m: the full permutation test, training noise
included); with the same sizes they run in the same vmapped program as the test itself, and
give ``p_value_retrained`` = (1 + #{null AUC >= AUC})/(K + 1) (no smaller than 1/(K + 1)).

**Differential amplification on the likelihood-ratio summary** (successor paper, Bahl et al.,
arXiv:2509.08048): the KS amplification of ``regions.ks_amplification`` computed on the 1-D
summary log r(x) of the generated events of each posterior draw against held-out reference
events, instead of on each marginal (``marginal_ks_amplification``, more optimistic: blind to
correlations). For continuous values the null law of √(nm/(n + m))·D of two i.i.d. samples is
distribution-free, so its median c comes from pseudo-experiments of uniform variates
(``regions.ks_null_median``) and a finite reference suffices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from bayesiamp_jax import _checks, observables, training
from bayesiamp_jax.evaluation.regions import KSAmplification, ks_amplification, ks_null_median
from bayesiamp_jax.network import _MLP, ACTIVATIONS

__all__ = ["ClassifierAUCs", "ClassifierConfig", "ClassifierTest", "LogRatio", "auc_test",
           "classifier_aucs", "classifier_test", "log_ratio_observable",
           "lr_ks_amplification", "marginal_ks_amplification"]


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The classifier and its training (frozen, hashable: one compiled program per config).

    Attributes:
        hidden: widths of the hidden layers of the MLP.
        activation: one of ``network.ACTIVATIONS``.
        learning_rate, betas: Adam (``training.adam``).
        batch_size: mini-batch size (capped at the training-set size).
        max_epochs: most epochs; patience: stop after this many epochs without a better
            validation loss (the best epoch's parameters are kept).
        train_fraction, validation_fraction: of each sample; the rest is the test split.
    """

    hidden: tuple[int, ...] = (32, 32)
    activation: str = "elu"
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10
    train_fraction: float = 0.5
    validation_fraction: float = 0.2

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for i, w in enumerate(self.hidden):
            _checks.positive_int(f"hidden[{i}]", w)
        _checks.one_of("activation", self.activation, tuple(ACTIVATIONS))
        _checks.positive("learning_rate", self.learning_rate)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        _checks.positive_int("batch_size", self.batch_size)
        _checks.positive_int("max_epochs", self.max_epochs)
        _checks.positive_int("patience", self.patience)
        _checks.probability("train_fraction", self.train_fraction, open_interval=True)
        _checks.probability("validation_fraction", self.validation_fraction, open_interval=True)
        if self.train_fraction + self.validation_fraction >= 1:
            raise ValueError(f"train_fraction + validation_fraction must be < 1 (the rest is the "
                             f"test split), got {self.train_fraction} + "
                             f"{self.validation_fraction}")

    @property
    def module(self) -> _MLP:
        return _MLP(self.hidden, 1, "highest", self.activation)

    def split_sizes(self, name: str, num: int) -> tuple[int, int, int]:
        """(train, validation, test) sizes of a sample of ``num`` events (each >= 2)."""
        n_train = int(num * self.train_fraction)
        n_val = int(num * self.validation_fraction)
        sizes = (n_train, n_val, num - n_train - n_val)
        if min(sizes) < 2:
            raise ValueError(f"{name} has {num} events, too few for train/validation/test "
                             f"splits of >= 2 events each (sizes {sizes})")
        return sizes


class LogRatio(NamedTuple):
    """The learned log r(x) = log p_ref(x)/p_gen(x) (the classifier's logit): call it on x
    (..., d) -> (...,). params: the MLP's; mean, scale (d,): the input standardisation."""

    params: object
    mean: jax.Array
    scale: jax.Array
    config: ClassifierConfig

    def __call__(self, x) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        _checks.last_dim("x", x, self.mean.shape[-1])
        return _logit(self.config, self.params, self.mean, self.scale, x)


class ClassifierTest(NamedTuple):
    """Result of ``classifier_test``.

    auc: test-split AUC (reference scored above generated); p_value: one-sided Mann–Whitney
    p-value (label-permutation null); reject: p_value < alpha; alpha; z: (AUC − 1/2)/σ₀;
    critical_auc: (1 − α) quantile of null_permutation (P,) (AUCs of permuted test labels);
    null_retrained (K,): AUCs of classifiers retrained on label-permuted pools (full
    permutation null), z_retrained (K,) and p_value_retrained = (1 + #{null_retrained >= auc})
    / (K + 1) (NaN for K = 0); log_ratio: the learned ``LogRatio``; validation_loss (balanced BCE of
    the kept parameters; log 2 = chance), best_epoch, stop_epoch; num_test (n_gen, n_ref);
    generated_test_index, reference_test_index: the held-out events (never trained on) — use
    ``reference[reference_test_index]`` as the reference of ``lr_ks_amplification``.
    """

    auc: float
    p_value: float
    reject: bool
    alpha: float
    z: float
    critical_auc: float
    null_permutation: np.ndarray
    null_retrained: np.ndarray
    z_retrained: np.ndarray
    p_value_retrained: float
    log_ratio: LogRatio
    validation_loss: float
    best_epoch: int
    stop_epoch: int
    num_test: tuple[int, int]
    generated_test_index: np.ndarray
    reference_test_index: np.ndarray


class ClassifierAUCs(NamedTuple):
    """Per pseudo-experiment (B,): auc, p_value (one-sided Mann–Whitney), z, validation_loss,
    best_epoch, stop_epoch; num_test (n_gen, n_ref) of each test split."""

    auc: np.ndarray
    p_value: np.ndarray
    z: np.ndarray
    validation_loss: np.ndarray
    best_epoch: np.ndarray
    stop_epoch: np.ndarray
    num_test: tuple[int, int]


class _Fit(NamedTuple):
    params: object
    mean: jax.Array
    scale: jax.Array
    score_gen: jax.Array
    score_ref: jax.Array
    validation_loss: jax.Array
    best_epoch: jax.Array
    stop_epoch: jax.Array


@partial(jax.jit, static_argnums=0)
def _logit(config: ClassifierConfig, params, mean, scale, x):
    return config.module.apply({"params": params}, (x - mean) / scale)[..., 0]


def _fit_one(config: ClassifierConfig, key, gen, ref) -> _Fit:
    """Standardise, train with early stopping and score the test split, for one pair gen (n, d),
    ref (m, d) whose rows are already in random order (splits: [train | validation | test])."""
    (g_tr, g_va, _), (r_tr, r_va, _) = (config.split_sizes("generated", gen.shape[0]),
                                        config.split_sizes("reference", ref.shape[0]))
    k_init, k_train = jax.random.split(key)
    mean = jnp.mean(ref[:r_tr], axis=0)
    std = jnp.std(ref[:r_tr], axis=0)
    scale = jnp.where(std > 0, std, 1.0)
    gen, ref = (gen - mean) / scale, (ref - mean) / scale
    module = config.module

    # training set: labels 0 (generated) / 1 (reference), weights balancing the classes
    n_tr = g_tr + r_tr
    x = jnp.concatenate([gen[:g_tr], ref[:r_tr]])
    label = jnp.concatenate([jnp.zeros(g_tr), jnp.ones(r_tr)])
    weight = jnp.concatenate([jnp.full(g_tr, n_tr / (2 * g_tr)), jnp.full(r_tr, n_tr / (2 * r_tr))])
    c = jnp.stack([label, weight], axis=-1)

    def loss_fn(_key, params, xb, cb):
        logit = module.apply({"params": params}, xb)[..., 0]
        return jnp.mean(cb[:, 1] * optax.sigmoid_binary_cross_entropy(logit, cb[:, 0]))

    x_gen_va, x_ref_va = gen[g_tr:g_tr + g_va], ref[r_tr:r_tr + r_va]

    def validation_loss(params):
        lg = module.apply({"params": params}, x_gen_va)[..., 0]
        lr = module.apply({"params": params}, x_ref_va)[..., 0]
        return 0.5 * (jnp.mean(optax.sigmoid_binary_cross_entropy(lg, 0.0))
                      + jnp.mean(optax.sigmoid_binary_cross_entropy(lr, 1.0)))

    optimizer = training.adam(config.learning_rate, *config.betas)
    run = training.build_epochs(loss_fn, optimizer, min(config.batch_size, n_tr))
    params = module.init(k_init, x[:1])["params"]
    state = training.init_train_state(params, optimizer)

    def not_done(carry):
        state, _, _, best_epoch = carry
        return (state.epoch < config.max_epochs) & (state.epoch - best_epoch < config.patience)

    def one_epoch(carry):
        state, best, best_loss, best_epoch = carry
        state, _ = run(k_train, state, x, c, 1)
        loss = validation_loss(state.params)
        better = loss < best_loss
        best = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), state.params, best)
        return (state, best, jnp.where(better, loss, best_loss),
                jnp.where(better, state.epoch, best_epoch))

    init = (state, params, validation_loss(params), jnp.asarray(0, jnp.int32))
    state, best, best_loss, best_epoch = jax.lax.while_loop(not_done, one_epoch, init)
    score_gen = module.apply({"params": best}, gen[g_tr + g_va:])[..., 0]
    score_ref = module.apply({"params": best}, ref[r_tr + r_va:])[..., 0]
    return _Fit(best, mean, scale, score_gen, score_ref, best_loss, best_epoch, state.epoch)


@partial(jax.jit, static_argnums=0)
def _fit_batch(config: ClassifierConfig, keys, gen, ref) -> _Fit:
    """``_fit_one`` vmapped over B pairs: keys (B,), gen (B, n, d), ref (B, m, d)."""
    return jax.vmap(lambda k, g, r: _fit_one(config, k, g, r))(keys, gen, ref)


def auc_test(score_reference, score_generated) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC = U/(n₁n₂) of reference scores (..., n₁) against generated scores (..., n₂) (ties
    count 1/2), its one-sided Mann–Whitney p-value (AUC > 1/2) and z = (AUC − 1/2)/σ₀ with
    σ₀² = (n₁ + n₂ + 1)/(12 n₁n₂); vectorised over leading axes."""
    a = np.asarray(score_reference, np.float64)
    b = np.asarray(score_generated, np.float64)
    n1, n2 = a.shape[-1], b.shape[-1]
    res = scipy.stats.mannwhitneyu(a, b, alternative="greater", axis=-1)
    auc = np.asarray(res.statistic) / (n1 * n2)
    z = (auc - 0.5) / np.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))
    return auc, np.asarray(res.pvalue), z


def _events(name: str, x, batched: bool = False) -> np.ndarray:
    ndim = 3 if batched else 2
    shape = np.shape(x)
    if len(shape) != ndim or shape[-1] < 1:
        want = "(B, n, d)" if batched else "(n, d)"
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(shape)}")
    return _checks.finite(name, np.asarray(x, np.float32))


def _check_pair(generated, reference, batched: bool = False):
    g = _events("generated", generated, batched)
    r = _events("reference", reference, batched)
    if g.shape[-1] != r.shape[-1]:
        raise ValueError(f"generated and reference must have the same event dimension d, got "
                         f"shapes {tuple(g.shape)} and {tuple(r.shape)}")
    if batched and g.shape[0] != r.shape[0]:
        raise ValueError(f"generated and reference must have the same number B of "
                         f"pseudo-experiments, got shapes {tuple(g.shape)} and {tuple(r.shape)}")
    return g, r


def _numpy_rng(key) -> np.random.Generator:
    """A numpy generator seeded with the bits of a JAX key (host-side index shuffles: no
    compilation, reproducible from the key)."""
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).reshape(-1).tolist())


def _row_permutations(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    """(rows, size) independent random permutations of 0..size−1."""
    return np.argsort(rng.random((rows, size)), axis=1, kind="stable")


def _permuted_aucs(rng: np.random.Generator, ranks: np.ndarray, n1: int,
                   num: int) -> np.ndarray:
    """AUCs of ``num`` random relabellings: the first n1 of each random order of the pooled
    mid-ranks ``ranks`` (n1 + n2,) are "reference"; chunked to bound memory."""
    size = ranks.size
    n2 = size - n1
    chunk = max(1, 4_000_000 // size)
    out = []
    for start in range(0, num, chunk):
        u = rng.random((min(chunk, num - start), size))
        chosen = np.argpartition(u, n1 - 1, axis=1)[:, :n1]
        out.append((ranks[chosen].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n2))
    return np.concatenate(out)


def classifier_aucs(key: jax.Array, generated, reference, *,
                    config: ClassifierConfig = ClassifierConfig()) -> ClassifierAUCs:
    """The classifier test of B pseudo-experiments in one vmapped program (p-values from the
    Mann–Whitney null, no retraining): generated (B, n, d), reference (B, m, d) ->
    ``ClassifierAUCs`` of arrays (B,). Same shapes and config: no recompilation (and B = 1 +
    ``num_retrain`` with the sizes of a ``classifier_test`` shares its program)."""
    if not isinstance(config, ClassifierConfig):
        raise ValueError(f"config must be a ClassifierConfig, got {config!r}")
    g, r = _check_pair(generated, reference, batched=True)
    config.split_sizes("generated", g.shape[1])
    config.split_sizes("reference", r.shape[1])
    k_fit, k_shuffle = jax.random.split(key)
    rng = _numpy_rng(k_shuffle)
    g = np.take_along_axis(g, _row_permutations(rng, g.shape[0], g.shape[1])[..., None], 1)
    r = np.take_along_axis(r, _row_permutations(rng, r.shape[0], r.shape[1])[..., None], 1)
    fit = _fit_batch(config, jax.random.split(k_fit, g.shape[0]), g, r)
    auc, p, z = auc_test(fit.score_ref, fit.score_gen)
    return ClassifierAUCs(auc, p, z, np.asarray(fit.validation_loss),
                          np.asarray(fit.best_epoch), np.asarray(fit.stop_epoch),
                          (int(fit.score_gen.shape[-1]), int(fit.score_ref.shape[-1])))


def classifier_test(key: jax.Array, generated, reference, *,
                    config: ClassifierConfig = ClassifierConfig(), alpha: float = 0.05,
                    num_permutations: int = 1000, num_retrain: int = 9) -> ClassifierTest:
    """Classifier two-sample test of generated (n, d) against reference (m, d) events.

    Trains on the train/validation splits of both samples, tests on the disjoint rest (module
    docstring): AUC, its p-value against the label-permutation null, the verdict at ``alpha``,
    ``num_permutations`` permuted test-split AUCs, and ``num_retrain`` retrainings of the whole
    pipeline on label-permuted pools (the full permutation null: the n + m events pooled,
    re-split at random into n "generated" and m "reference"; same sizes, so they run in the
    same vmapped program as the test itself; 0 skips them), and the learned log likelihood
    ratio. Returns ``ClassifierTest``.
    """
    if not isinstance(config, ClassifierConfig):
        raise ValueError(f"config must be a ClassifierConfig, got {config!r}")
    alpha = _checks.probability("alpha", alpha, open_interval=True)
    num_permutations = _checks.positive_int("num_permutations", num_permutations)
    if isinstance(num_retrain, bool) or not isinstance(num_retrain, (int, np.integer)) \
            or num_retrain < 0:
        raise ValueError(f"num_retrain must be an integer >= 0, got {num_retrain!r}")
    g, r = _check_pair(generated, reference)
    n, m = g.shape[0], r.shape[0]
    _, _, n_test = config.split_sizes("generated", n)
    _, _, m_test = config.split_sizes("reference", m)
    k_fit, k_shuffle = jax.random.split(key)
    rng = _numpy_rng(k_shuffle)

    # row 0: the test itself (each sample shuffled); rows 1..K: label-permuted pools
    order_g, order_r = rng.permutation(n), rng.permutation(m)
    pool = np.concatenate([g, r])
    pooled = pool[_row_permutations(rng, num_retrain, n + m)]
    gens = np.concatenate([g[order_g][None], pooled[:, :n]])
    refs = np.concatenate([r[order_r][None], pooled[:, n:]])
    fits = _fit_batch(config, jax.random.split(k_fit, 1 + num_retrain), gens, refs)
    aucs, ps, zs = auc_test(fits.score_ref, fits.score_gen)
    auc, p, z = float(aucs[0]), float(ps[0]), float(zs[0])
    null_re, z_re = aucs[1:], zs[1:]
    p_re = float((1 + np.sum(null_re >= auc)) / (num_retrain + 1)) if num_retrain else np.nan

    # label-permutation null of the test-split AUC: mid-ranks once, random reference subsets
    s_ref, s_gen = np.asarray(fits.score_ref[0]), np.asarray(fits.score_gen[0])
    ranks = scipy.stats.rankdata(np.concatenate([s_ref, s_gen]))
    null_perm = _permuted_aucs(rng, ranks, m_test, num_permutations)

    fit = jax.tree_util.tree_map(lambda a: a[0], fits)
    log_ratio = LogRatio(fit.params, fit.mean, fit.scale, config)
    return ClassifierTest(auc, p, bool(p < alpha), alpha, z,
                          float(np.quantile(null_perm, 1 - alpha)), null_perm, null_re, z_re,
                          p_re, log_ratio, float(fit.validation_loss), int(fit.best_epoch),
                          int(fit.stop_epoch), (n_test, m_test), order_g[n - n_test:],
                          order_r[m - m_test:])


def _uniform_sampler(key, size):
    """Continuous pseudo-truth for the distribution-free KS null."""
    return np.asarray(jax.random.uniform(key, (size,)), np.float64)


def _summary_ks(key, generated, reference, num_train, num_pseudo) -> KSAmplification:
    g, r = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
    null = ks_null_median(key, _uniform_sampler, g.shape[-1], r.size, num_pseudo)
    return ks_amplification(key, g, r, None, num_train, num_pseudo, null=null)


def _draw_events(generated) -> np.ndarray:
    shape = np.shape(generated)
    if len(shape) not in (2, 3) or shape[-2] < 2:
        raise ValueError(f"generated must have shape (n, d) or (S, n, d) with n >= 2, got shape "
                         f"{tuple(shape)}")
    arr = np.asarray(generated, np.float32)
    return _checks.finite("generated", arr)


def _reference_events(reference, d: int) -> np.ndarray:
    shape = np.shape(reference)
    if len(shape) != 2 or shape[0] < 2 or shape[1] != d:
        raise ValueError(f"reference must have shape (m, {d}) with m >= 2, got shape "
                         f"{tuple(shape)}")
    return _checks.finite("reference", np.asarray(reference, np.float32))


def lr_ks_amplification(key: jax.Array, log_ratio: Callable, generated, reference, *,
                        num_train: int | None = None, num_pseudo: int = 200) -> KSAmplification:
    """KS differential amplification on the likelihood-ratio summary log r(x).

    Args:
        key: key of the null pseudo-experiments.
        log_ratio: x (..., d) -> (...,), e.g. ``ClassifierTest.log_ratio``.
        generated: (n, d) or (S, n, d) generated events of each posterior draw, not used to
            train ``log_ratio``.
        reference: (m, d) held-out reference events, not used to train ``log_ratio``
            (``reference[test.reference_test_index]``).
        num_train, num_pseudo: as in ``regions.ks_amplification``; the null median c is the
            distribution-free one of two i.i.d. continuous samples of sizes n, m.

    Returns ``KSAmplification`` with arrays () or (S,).
    """
    if not callable(log_ratio):
        raise ValueError(f"log_ratio must be a callable x (..., d) -> (...,), got {log_ratio!r}")
    g = _draw_events(generated)
    r = _reference_events(reference, g.shape[-1])
    summary_g, summary_r = np.asarray(log_ratio(g)), np.asarray(log_ratio(r))
    if summary_g.shape != g.shape[:-1] or summary_r.shape != r.shape[:-1]:
        raise ValueError(f"log_ratio must map events (..., d) to (...,), got shape "
                         f"{summary_g.shape} for generated of shape {g.shape}")
    return _summary_ks(key, summary_g, summary_r, num_train, num_pseudo)


def log_ratio_observable(log_ratio: Callable, name: str = "log_r") -> observables.Function:
    """log r as a one-value observable (``observables.Function``; a closure, so it hashes by
    identity), for the study's per-draw generation, e.g. ``differential.differential_amplification
    (..., observable=log_ratio_observable(res.log_ratio))`` with an exact truth sampler."""
    if not callable(log_ratio):
        raise ValueError(f"log_ratio must be a callable x (..., d) -> (...,), got {log_ratio!r}")
    return observables.Function(lambda x: log_ratio(x)[..., None], (name,))


def marginal_ks_amplification(key: jax.Array, generated, reference, *,
                              num_train: int | None = None,
                              num_pseudo: int = 200) -> tuple[KSAmplification, ...]:
    """KS differential amplification of each coordinate (marginal) of generated (n, d) or
    (S, n, d) against reference (m, d) events, one ``KSAmplification`` per coordinate (the
    distribution-free null of ``lr_ks_amplification``; the same key gives the same null)."""
    g = _draw_events(generated)
    r = _reference_events(reference, g.shape[-1])
    return tuple(_summary_ks(key, g[..., j], r[:, j], num_train, num_pseudo)
                 for j in range(g.shape[-1]))
