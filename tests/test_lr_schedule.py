"""Learning-rate settings of the study: deterministic.learning_rate_schedule (constant | cosine,
optim.cosine_decay) and adammcmc.learning_rate (the chain's Adam)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesiamp_jax import integrate, optim, posteriors, training
from bayesiamp_jax.data import sample_ring
from bayesiamp_jax.network import VectorField
from experiments import config as cfgmod
from experiments import deterministic

FIELD = VectorField(hidden=(8, 8))
FILE = ["data.name=file", "data.path=benchmarks/open_data/zee_pair_events.npz",
        "data.reference=benchmarks/open_data/zee_pair_reference.npz"]


def _closed_form(k, num_steps, fraction, rate=1e-3):
    """η (f + (1 − f)(1 + cos(π min(k, K)/K))/2): the cosine decay by hand."""
    k = min(k, num_steps)
    return rate * (fraction + (1 - fraction) * 0.5 * (1 + np.cos(np.pi * k / num_steps)))


def _section(schedule, **kw):
    """A study whose deterministic section has the schedule ``schedule``."""
    return cfgmod.Config(deterministic=cfgmod.DeterministicConfig(
        learning_rate_schedule=schedule, **kw))


@pytest.fixture(scope="module")
def ring():
    return sample_ring(jax.random.PRNGKey(3), 400)


def test_cosine_rate_at_start_middle_end_is_the_closed_form():
    """The study's optimiser with a constant gradient g: Adam's bias-corrected m/√v is exactly
    sign(g), so the update at step k is −η_k/(1 + ε/|g|); 5 epochs × ⌊450/100⌋ = 20 steps."""
    d = _section("cosine", num_epochs=5, batch_size=100, final_learning_rate_fraction=0.02)
    opt = deterministic.optimizer(d, "deterministic", 450)
    theta = jnp.zeros(())
    state = opt.init(theta)
    steps = []
    for _ in range(23):
        update, state = opt.update(jnp.ones(()), state, theta)
        steps.append(-float(update))
    for k in (0, 10, 20, 22):
        assert steps[k] == pytest.approx(_closed_form(k, 20, 0.02), rel=1e-5), k
    assert steps[0] == pytest.approx(1e-3, rel=1e-5)
    assert steps[10] == pytest.approx(0.51e-3, rel=1e-5)  # (1 + 0.02)/2 · 1e-3
    assert steps[20] == pytest.approx(2e-5, rel=1e-5)


def test_cosine_decay_rejects_bad_arguments_in_one_line():
    for kw, name in ((dict(num_steps=0, final_fraction=0.1), "num_steps"),
                     (dict(num_steps=10, final_fraction=1.5), "final_fraction")):
        with pytest.raises(ValueError, match=name) as e:
            optim.cosine_decay(**kw)
        assert "\n" not in str(e.value)


def test_constant_schedule_is_the_reference_adam_bit_for_bit(ring):
    """constant -> no optimiser of its own: training.fit's default, the same numbers as an
    explicit reference Adam (1e-3, β 0.99/0.99); the checkpoint name does not change."""
    d = _section("constant", batch_size=100)
    assert deterministic.optimizer(d, "deterministic", 400) is None
    assert cfgmod.schedule_parts(d, "deterministic") == ()
    kw = dict(batch_size=100, chunk_epochs=3, progress=False)
    key = jax.random.PRNGKey(0)
    plain = training.fit(key, FIELD, ring.x, ring.c, 3,
                         optimizer=deterministic.optimizer(d, "deterministic", 400), **kw)
    ref = training.fit(key, FIELD, ring.x, ring.c, 3, optimizer=optim.adam(1e-3), **kw)
    chex.assert_trees_all_equal(plain.state.params, ref.state.params)


def test_cosine_resumed_run_continues_the_schedule(ring, tmp_path):
    """Stopped after 2 of 4 epochs and resumed = uninterrupted (the step count is in the
    optimiser state); the count after 4 epochs is 4 × 4 steps."""
    d = _section("cosine", num_epochs=4, batch_size=100, final_learning_rate_fraction=0.01)
    opt = deterministic.optimizer(d, "deterministic", 400)
    kw = dict(batch_size=100, chunk_epochs=2, progress=False, optimizer=opt)
    key = jax.random.PRNGKey(5)
    full = training.fit(key, FIELD, ring.x, ring.c, 4, **kw)
    path = tmp_path / "state.msgpack"
    first = training.fit(key, FIELD, ring.x, ring.c, 2, checkpoint_path=path, **kw)
    resumed = training.fit(key, FIELD, ring.x, ring.c, 4, checkpoint_path=path, **kw)
    assert int(first.state.epoch) == 2
    chex.assert_trees_all_equal(full.state, resumed.state)
    counts = [int(c) for c in jax.tree.leaves(full.state.opt_state) if jnp.ndim(c) == 0]
    assert 16 in counts


def test_schedule_defaults_per_data_and_errors():
    assert cfgmod.resolve("quick", []).deterministic.learning_rate_schedule == "constant"
    shell = cfgmod.resolve("quick", ["data.name=shell"])
    assert shell.deterministic.learning_rate_schedule == "constant"
    assert cfgmod.resolve("quick", FILE).deterministic.learning_rate_schedule == "cosine"
    chosen = cfgmod.resolve("quick", FILE + ["deterministic.learning_rate_schedule=constant"])
    assert chosen.deterministic.learning_rate_schedule == "constant"
    assert cfgmod.resolve("quick", []).adammcmc.learning_rate == optim.LEARNING_RATE
    # the chain continues at the rate the deterministic training ended at, unless set
    assert cfgmod.resolve("quick", FILE).adammcmc.learning_rate == pytest.approx(1e-5, rel=1e-12)
    assert chosen.adammcmc.learning_rate == optim.LEARNING_RATE
    assert cfgmod.resolve("quick", FILE + ["adammcmc.learning_rate=3e-4"]
                          ).adammcmc.learning_rate == 3e-4
    for bad in ("deterministic.learning_rate_schedule=linear",
                "deterministic.final_learning_rate_fraction=2", "adammcmc.learning_rate=-1"):
        with pytest.raises(ValueError, match=bad.split("=")[0]) as e:
            cfgmod.resolve("quick", [bad])
        assert "\n" not in str(e.value)
    cosine = cfgmod.resolve("quick", FILE)
    assert cfgmod.schedule_parts(cosine, "deterministic") == (
        "cosine", 0.01, cosine.deterministic.num_epochs)


def test_adammcmc_uses_the_given_optimizer(ring):
    """With σ and σ_dir negligible the proposal is θ minus the optimiser's step. Adam at rate 0:
    a symmetric proposal with no loss change, every step accepted and the draws stay at the
    start; the reference rate (1e-3): the reverse step cannot return to θ within σ, every step
    rejected (the default optimiser is in use)."""
    start = FIELD.init(jax.random.PRNGKey(1))
    kw = dict(sigma=1e-12, sigma_dir=1e-12, params_init=start, num_adam_steps=0, num_samples=2,
              thinning=2, batch_size=50, solver=integrate.Solver("rk4", 1), progress=False)
    x, c = ring.x[:100], ring.c[:100]
    frozen = posteriors.sample_adammcmc_cnf(jax.random.key(0), FIELD, x, c,
                                            optimizer=optax.adam(0.0), **kw)
    moved = posteriors.sample_adammcmc_cnf(jax.random.key(0), FIELD, x, c, **kw)
    flat0 = jax.flatten_util.ravel_pytree(start)[0]
    for s in range(2):
        np.testing.assert_allclose(jax.flatten_util.ravel_pytree(frozen.draw(s))[0], flat0,
                                   atol=1e-9)
    assert float(np.min(frozen.info["acceptance_rate"])) > 0.9
    assert float(np.max(moved.info["acceptance_rate"])) < 0.1


def test_neutral_settings_leave_stage_fingerprints_as_before():
    """A constant schedule and AdamMCMC's 1e-3 hash as the sections did before the settings
    existed (sha256 of the JSON without them), so older output folders stay done; a cosine
    schedule or another chain rate changes the hash."""
    import hashlib
    import json

    cfg = cfgmod.resolve("quick", [])

    def before(section, *new):
        d = {k: v for k, v in cfgmod.to_dict(section).items() if k not in new}
        return hashlib.sha256(json.dumps([d], sort_keys=True).encode()).hexdigest()[:12]

    det = before(cfg.deterministic, "learning_rate_schedule", "final_learning_rate_fraction")
    assert cfgmod.fingerprint(cfg.deterministic) == det
    assert cfgmod.fingerprint(cfg.adammcmc) == before(cfg.adammcmc, "learning_rate")
    cosine = cfgmod.resolve("quick", ["deterministic.learning_rate_schedule=cosine"])
    assert cfgmod.fingerprint(cosine.deterministic) != det
    slow = cfgmod.resolve("quick", ["adammcmc.learning_rate=1e-5"])
    assert cfgmod.fingerprint(slow.adammcmc) != cfgmod.fingerprint(cfg.adammcmc)


def _steps_taken(opt, num_steps):
    """The update sizes of ``opt`` under a constant unit gradient (Adam: exactly η_k)."""
    theta = jnp.zeros(())
    state = opt.init(theta)
    out = []
    for _ in range(num_steps):
        update, state = opt.update(jnp.ones(()), state, theta)
        out.append(-float(update))
    return out


@pytest.mark.parametrize("method", ["vi", "ensemble", "bootstrap"])
def test_vi_and_ensembles_decay_over_their_own_epochs(method):
    """Each method's cosine runs over its own epochs × ⌊N / batch⌋ steps: vi.num_epochs, or the
    ensembles' (−1: the deterministic's); 6 epochs × ⌊450/100⌋ = 24 steps here."""
    det = cfgmod.DeterministicConfig(num_epochs=9, batch_size=100,
                                     final_learning_rate_fraction=0.05,
                                     learning_rate_schedule="cosine")
    sections = {"vi": cfgmod.VIConfig(num_epochs=6, batch_size=100,
                                      learning_rate_schedule="cosine",
                                      final_learning_rate_fraction=0.05),
                "ensemble": cfgmod.EnsembleConfig(num_epochs=6),
                "bootstrap": cfgmod.BootstrapConfig(num_epochs=6)}
    cfg = cfgmod.Config(deterministic=det, **{method: sections[method]})
    steps = _steps_taken(deterministic.optimizer(cfg, method, 450), 26)
    for k in (0, 12, 24, 25):
        assert steps[k] == pytest.approx(_closed_form(k, 24, 0.05), rel=1e-5), k


def test_vi_and_ensemble_schedule_defaults():
    """VI: the data's default (constant for the ring, cosine for file data); the ensembles:
    the deterministic's schedule and final fraction unless set."""
    ring, file = cfgmod.resolve("quick", []), cfgmod.resolve("quick", FILE)
    assert cfgmod.learning_rate_schedule(ring, "vi") == ("constant", 0.01)
    assert cfgmod.learning_rate_schedule(file, "vi") == ("cosine", 0.01)
    assert cfgmod.learning_rate_schedule(ring, "ensemble") == ("constant", 0.01)
    assert cfgmod.learning_rate_schedule(file, "bootstrap") == ("cosine", 0.01)
    own = cfgmod.resolve("quick", FILE + ["ensemble.learning_rate_schedule=constant",
                                          "bootstrap.final_learning_rate_fraction=0.1"])
    assert cfgmod.learning_rate_schedule(own, "ensemble")[0] == "constant"
    assert cfgmod.learning_rate_schedule(own, "bootstrap") == ("cosine", 0.1)
    assert deterministic.optimizer(ring, "vi", 1000) is None
    for bad in ("vi.learning_rate_schedule=linear", "vi.final_learning_rate_fraction=-1",
                "ensemble.learning_rate_schedule=step", "bootstrap.final_learning_rate_fraction=2"):
        with pytest.raises(ValueError, match=bad.split("=")[0]) as e:
            cfgmod.resolve("quick", [bad])
        assert "\n" not in str(e.value)


def test_schedule_settings_keep_vi_and_ensemble_fingerprints_when_constant():
    """A constant VI or ensemble rate hashes as the sections did before the settings existed;
    an ensemble inheriting the deterministic's cosine changes its stage's fingerprint."""
    import hashlib
    import json

    from experiments.paper import fingerprints

    def before(section):
        d = {k: v for k, v in cfgmod.to_dict(section).items()  # VI's start: test_vi_start
             if k not in ("learning_rate_schedule", "final_learning_rate_fraction", "init",
                          "init_rho")}
        return hashlib.sha256(json.dumps([d], sort_keys=True).encode()).hexdigest()[:12]

    on = ["ensemble.enabled=true", "vi.enabled=true"]
    ring = cfgmod.resolve("quick", on)
    assert cfgmod.fingerprint(ring.vi) == before(ring.vi)
    assert cfgmod.fingerprint(ring.ensemble) == before(ring.ensemble)
    cosine = cfgmod.resolve("quick", on + ["deterministic.learning_rate_schedule=cosine"])
    assert fingerprints(cosine)["train_ensemble"] != fingerprints(ring)["train_ensemble"]
    assert fingerprints(cosine)["train_vi"] == fingerprints(ring)["train_vi"]
