"""Classifier two-sample test against closed forms and simulated nulls.

Truth: a 2-D Gaussian with N(0, 1) marginals and correlation ρ = 0.5; the distorted model has
ρ = 0 and exactly the same marginals. Every classifier in this file has the same shapes
(B = 8 pairs of 2,000 + 2,000 events, one config), so the whole file compiles one program.
"""

import jax
import numpy as np
import pytest
import scipy.stats

from bayesiamp_jax import observables
from bayesiamp_jax.evaluation.classifier import (
    ClassifierConfig,
    auc_test,
    classifier_aucs,
    classifier_test,
    log_ratio_observable,
    lr_ks_amplification,
    marginal_ks_amplification,
)

RHO, N, B, ALPHA, NUM_TRAIN = 0.5, 2000, 8, 0.05, 1000
CONFIG = ClassifierConfig(hidden=(16, 16), batch_size=64, max_epochs=60, patience=8,
                          learning_rate=3e-3)
COV = np.array([[1.0, RHO], [RHO, 1.0]])


def sample(key, shape, rho):
    """(..., 2) events: x1 = z1, x2 = ρ z1 + √(1 − ρ²) z2, both marginals exactly N(0, 1)."""
    z = np.asarray(jax.random.normal(key, tuple(shape) + (2,)), np.float64)
    return np.stack([z[..., 0], rho * z[..., 0] + np.sqrt(1 - rho**2) * z[..., 1]], axis=-1)


def exact_log_ratio(x):
    """log N(x; 0, Σ_ρ) − log N(x; 0, I): the log p_ref/p_gen the classifier should learn."""
    return (scipy.stats.multivariate_normal(cov=COV).logpdf(x)
            - scipy.stats.multivariate_normal(cov=np.eye(2)).logpdf(x))


@pytest.fixture(scope="module")
def reference():
    return sample(jax.random.key(1), (N,), RHO)


@pytest.fixture(scope="module")
def distorted(reference):
    gen = sample(jax.random.key(2), (N,), 0.0)
    return classifier_test(jax.random.key(3), gen, reference, config=CONFIG, alpha=ALPHA,
                           num_retrain=B - 1)


def test_auc_is_the_mann_whitney_probability_with_ties():
    a, b = np.array([3.0, 2.0, 2.0, 5.0]), np.array([1.0, 2.0, 4.0])
    # pairs a > b count 1, ties 1/2: by direct enumeration over the 12 pairs
    direct = np.mean((a[:, None] > b[None]) + 0.5 * (a[:, None] == b[None]))
    auc, p, z = auc_test(a, b)
    assert auc == pytest.approx(direct)
    assert z == pytest.approx((direct - 0.5) / np.sqrt(8 / (12 * 12)))
    assert 0 < p < 1


def test_truth_against_truth_stays_in_the_null_band(reference):
    # a single test: within the band of its label-permutation null and its retrained null
    res = classifier_test(jax.random.key(4), sample(jax.random.key(5), (N,), RHO), reference,
                          config=CONFIG, alpha=ALPHA, num_retrain=B - 1)
    assert not res.reject and res.p_value > ALPHA
    assert res.auc < res.critical_auc
    assert res.p_value_retrained > ALPHA
    # 32 independent truth-vs-truth pseudo-experiments, 4 calls of one compiled program
    def pseudo(i):
        return classifier_aucs(jax.random.key(10 + i), sample(jax.random.key(20 + i), (B, N), RHO),
                               sample(jax.random.key(30 + i), (B, N), RHO), config=CONFIG)

    rows = [pseudo(0)]
    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        rows += [pseudo(i) for i in range(1, 4)]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiled == []  # the loop over pseudo-experiments does not recompile
    p = np.concatenate([r.p_value for r in rows])
    z = np.concatenate([r.z for r in rows])
    # false alarms: Binomial(32, α) (0.1 % upper tail: 6); p-values uniform; z ~ N(0, 1)
    assert np.sum(p < ALPHA) <= scipy.stats.binom.ppf(0.999, p.size, ALPHA)
    assert scipy.stats.kstest(p, "uniform").pvalue > 1e-3
    assert abs(z.mean()) < 3.5 / np.sqrt(z.size)
    assert 0.6 < z.std(ddof=1) < 1.5


def test_one_changed_correlation_is_rejected_while_every_marginal_passes(distorted, reference):
    assert distorted.reject and distorted.p_value < 1e-6
    assert distorted.auc > distorted.critical_auc
    assert np.all(distorted.null_retrained < distorted.auc)  # full permutation null too
    assert distorted.p_value_retrained == pytest.approx(1 / B)
    # the permutation null of the test split centres on 1/2 with the Mann–Whitney variance
    n1, n2 = distorted.num_test
    assert distorted.null_permutation.mean() == pytest.approx(0.5, abs=0.005)
    assert distorted.null_permutation.std() == pytest.approx(
        np.sqrt((n1 + n2 + 1) / (12 * n1 * n2)), rel=0.1)
    # 8 more distorted pairs: all rejected; their 16 marginal KS tests reject at rate α only
    gen = sample(jax.random.key(41), (B, N), 0.0)
    ref = sample(jax.random.key(42), (B, N), RHO)
    res = classifier_aucs(jax.random.key(40), gen, ref, config=CONFIG)
    assert np.all(res.p_value < ALPHA)
    ks_p = np.array([[scipy.stats.ks_2samp(gen[b, :, j], ref[b, :, j]).pvalue for j in range(2)]
                     for b in range(B)])
    assert np.sum(ks_p < ALPHA) <= scipy.stats.binom.ppf(0.999, ks_p.size, ALPHA)
    gen0 = sample(jax.random.key(2), (N,), 0.0)
    assert all(scipy.stats.ks_2samp(gen0[:, j], reference[:, j]).pvalue > ALPHA for j in range(2))


def test_learned_log_ratio_is_the_closed_form_density_ratio(distorted):
    x = np.concatenate([sample(jax.random.key(50), (N,), 0.0),
                        sample(jax.random.key(51), (N,), RHO)])
    exact = exact_log_ratio(x)
    learned = np.asarray(distorted.log_ratio(x))
    assert learned.shape == (2 * N,)
    assert np.corrcoef(learned, exact)[0, 1] > 0.9
    # calibrated as log p_ref/p_gen (balanced classes): slope ≈ 1, offset ≈ 0
    slope, offset = np.polyfit(exact, learned, 1)
    assert slope == pytest.approx(1.0, abs=0.3)
    assert abs(offset) < 0.2
    # the same function as a one-value observable for the study's generation paths
    obs = log_ratio_observable(distorted.log_ratio)
    assert obs.names == ("log_r",)
    np.testing.assert_allclose(np.asarray(observables.values(obs, x[:100]))[:, 0], learned[:100],
                               rtol=1e-5, atol=1e-5)


def test_ks_amplification_on_the_likelihood_ratio_is_less_optimistic(distorted, reference):
    held_out = reference[distorted.reference_test_index]
    assert held_out.shape == (distorted.num_test[1], 2)
    assert np.unique(distorted.reference_test_index).size == held_out.shape[0]
    draws = sample(jax.random.key(60), (4, N), 0.0)  # fresh events of 4 "posterior draws"
    lr = lr_ks_amplification(jax.random.key(61), distorted.log_ratio, draws, held_out,
                             num_train=NUM_TRAIN)
    marginals = marginal_ks_amplification(jax.random.key(61), draws, held_out,
                                          num_train=NUM_TRAIN)
    assert lr.n_equiv.shape == (4,) and len(marginals) == 2
    best_marginal = np.min([m.n_equiv for m in marginals], axis=0)
    assert np.all(lr.n_equiv < best_marginal)
    assert np.all(lr.amplification < np.min([m.amplification for m in marginals], axis=0))
    assert np.all(lr.p_value < 0.01)
    # the same KS statistic with the closed-form log ratio (the independent answer)
    exact = np.array([scipy.stats.ks_2samp(exact_log_ratio(d), exact_log_ratio(held_out))
                      .statistic for d in draws])
    np.testing.assert_allclose(lr.statistic, exact, atol=0.04)
    # truth draws are not rejected: at most one of 4 below p = 0.01
    truth = lr_ks_amplification(jax.random.key(62), distorted.log_ratio,
                                sample(jax.random.key(63), (4, N), RHO), held_out)
    assert np.sum(truth.p_value < 0.01) <= 1 and truth.amplification is None


@pytest.mark.parametrize("call, match", [
    (lambda g, r: classifier_test(jax.random.key(0), g[0], r), "generated must have shape"),
    (lambda g, r: classifier_test(jax.random.key(0), g, r[:, :1]), "same event dimension"),
    (lambda g, r: classifier_test(jax.random.key(0), g.at[0, 0].set(np.nan), r),
     "generated contains 1 non-finite"),
    (lambda g, r: classifier_test(jax.random.key(0), g[:5], r), "generated has 5 events"),
    (lambda g, r: classifier_test(jax.random.key(0), g, r, alpha=1.5), "alpha must lie"),
    (lambda g, r: classifier_test(jax.random.key(0), g, r, num_permutations=0),
     "num_permutations must be a positive integer"),
    (lambda g, r: classifier_test(jax.random.key(0), g, r, num_retrain=-1), "num_retrain"),
    (lambda g, r: classifier_test(jax.random.key(0), g, r, config={}), "config must be"),
    (lambda g, r: classifier_aucs(jax.random.key(0), g[None], r[None, :, :1]),
     "same event dimension"),
    (lambda g, r: classifier_aucs(jax.random.key(0), g, r), r"must have shape \(B, n, d\)"),
    (lambda g, r: ClassifierConfig(hidden=(16, 0)), r"hidden\[1\] must be a positive"),
    (lambda g, r: ClassifierConfig(activation="relu6"), "activation must be one of"),
    (lambda g, r: ClassifierConfig(train_fraction=0.7, validation_fraction=0.3),
     "train_fraction \\+ validation_fraction must be < 1"),
    (lambda g, r: lr_ks_amplification(jax.random.key(0), "f", g, r), "log_ratio must be"),
    (lambda g, r: lr_ks_amplification(jax.random.key(0), lambda x: x[..., 0], g, r[:, :1]),
     r"reference must have shape \(m, 2\)"),
    (lambda g, r: marginal_ks_amplification(jax.random.key(0), g[0], r),
     r"generated must have shape \(n, d\) or \(S, n, d\)"),
])
def test_bad_inputs_name_the_argument(call, match):
    g = jax.numpy.asarray(sample(jax.random.key(0), (40,), 0.0))
    r = sample(jax.random.key(1), (40,), RHO)
    with pytest.raises(ValueError, match=match) as err:
        call(g, r)
    assert "\n" not in str(err.value)
