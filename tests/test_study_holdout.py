"""The study's held-out set (never trained on) and the words the report puts beside a claim.

Answers known without the code under test: event ids written into the file (disjointness is a
set intersection), the sizes the settings ask for, and hand-made summaries whose verdicts,
model shares and chain diagnostics decide the reasons.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bayesiamp_jax.evaluation.trust import MIN_MODEL_SHARE, assess
from experiments import config as cfgmod
from experiments.data import load_all_data, load_holdout, make_data
from experiments.stages import Study


def _file_study(tmp_path, n_events, *overrides):
    x = np.stack([np.arange(n_events, dtype=np.float32),  # column 0: the event's id
                  np.random.default_rng(0).normal(size=n_events).astype(np.float32)], axis=1)
    np.savez(tmp_path / "events.npz", x=x)
    np.savez(tmp_path / "ref.npz", x=x[:50])
    cfg = cfgmod.resolve("tiny", ["data.name=file", f"data.path={tmp_path / 'events.npz'}",
                                  f"data.reference={tmp_path / 'ref.npz'}",
                                  "data.num_train=100", "num_runs=2", "data.preprocess=none",
                                  *overrides])
    return Study(tmp_path / "study", cfg)


def test_file_holdout_is_every_event_not_trained_on(tmp_path):
    study = _file_study(tmp_path, 330)
    make_data(study)
    train_ids = set(np.asarray(load_all_data(study).x)[..., 0].ravel().astype(int).tolist())
    held = np.asarray(load_holdout(study).x)[:, 0].astype(int)
    assert train_ids == set(range(200))  # 2 runs x 100
    assert sorted(held.tolist()) == list(range(200, 330))  # the rest, each once
    assert not train_ids & set(held.tolist())


def test_file_holdout_size_second_file_and_none_left(tmp_path, caplog):
    study = _file_study(tmp_path, 330, "data.num_holdout=40")
    make_data(study)
    assert np.asarray(load_holdout(study).x)[:, 0].astype(int).tolist() == list(range(200, 240))
    for sub in "bcd":
        (tmp_path / sub).mkdir()
    with pytest.raises(ValueError, match=r"data\.num_holdout=500 .* only 130 events"):
        make_data(_file_study(tmp_path / "b", 330, "data.num_holdout=500"))
    other = np.random.default_rng(1).normal(size=(70, 2)).astype(np.float32)
    np.savez(tmp_path / "c" / "held.npz", x=other)
    study = _file_study(tmp_path / "c", 330, f"data.holdout_path={tmp_path / 'c' / 'held.npz'}")
    make_data(study)
    np.testing.assert_array_equal(np.asarray(load_holdout(study).x), other)
    study = _file_study(tmp_path / "d", 200)
    with caplog.at_level(logging.WARNING):
        make_data(study)
    assert load_holdout(study) is None
    assert "unchecked" in caplog.text and "data.num_train" in caplog.text


def test_toy_holdout_is_a_fresh_sample_of_the_training_size(tmp_path):
    cfg = cfgmod.resolve("tiny", ["num_runs=1"])
    study = Study(tmp_path, cfg)
    make_data(study)
    train = np.asarray(load_all_data(study).x)[0]
    held = np.asarray(load_holdout(study).x)
    assert held.shape == train.shape == (cfg.data.num_train, 2)
    # a fresh sample: no held-out point is a training point
    assert not {tuple(p) for p in train.tolist()} & {tuple(p) for p in held.tolist()}
    assert np.asarray(load_holdout(study).c).shape == (cfg.data.num_train, 1)


def _summary(verdict="consistent", share=0.6, ess=19.0, rhat=1.0, scale=1.0):
    ho = {"verdict": verdict, "width": scale, "width_err": 0.05, "p_value": 0.3,
          "scale": scale, "scale_err": 0.05, "reach": 1e4}
    return {"num_draws": 20, "amplification": {"10": [0.1]},
            "amplification_corrected": {"10": [0.2]}, "corrected_model_share": {"10": [share]},
            "diagnostics": {"bin_fractions": {"10": {"ess": {"median": ess},
                                                     "split_rhat": {"median": rhat}}}},
            "holdout": {"num_holdout": 10_000, "same_noise": {"10": ho}}}


def test_trust_reasons():
    ok = assess(_summary(), "10", num_train=10_000, converged=True)
    assert ok.trusted and ok.reasons == () and ok.verdict == "consistent"
    over = assess(_summary("over-confident", scale=2.0), "10", num_train=10_000)
    assert not over.trusted and "overstated ≈ 4×" in over.reasons[0]
    assert "under-confident" in assess(_summary("under-confident", scale=0.5), "10",
                                       num_train=10_000).reasons[0]
    low = assess(_summary(share=MIN_MODEL_SHARE / 2), "10", num_train=10_000)
    assert not low.trusted and "model share" in low.reasons[0]
    chain = assess(_summary(ess=8.4, rhat=1.14), "10", num_train=10_000)
    assert not chain.trusted and "not mixed" in chain.reasons[0]
    # independent draws (VI, Laplace, ensembles, ...) have no chain to mix: an ESS below S
    # from 20 draws is the estimator's noise
    assert assess(_summary(ess=8.4) | {"method": "vi"}, "10", num_train=10_000).trusted
    assert not assess(_summary(ess=8.4) | {"method": "sgld"}, "10", num_train=10_000).trusted
    assert "not converged" in assess(_summary(), "10", num_train=10_000,
                                     converged=False).reasons[0]
    # claimed N_eq = 0.2 x 10^6 = 2·10^5 is beyond 10^4 held-out events
    far = assess(_summary(), "10", num_train=1_000_000)
    assert "exceeds" in far.reasons[0]
    none = _summary()
    del none["holdout"]
    assert "unchecked" in assess(none, "10", num_train=10_000).reasons[0]
    # another binning than the checked ones: the nearest checked binning's verdict
    s = _summary("over-confident", scale=2.0)
    s["amplification_corrected"]["30"] = [1.0]
    assert assess(s, "30", num_train=10_000).verdict == "over-confident"


def test_trust_prefers_a_reliable_check():
    """A fresh-noise check with 20 generated points per cell (false alarms 12–15 %) gives way
    to the same-noise check of the nearest binning; with 1,000 per cell it is used."""
    s = _summary()
    s["holdout"]["scaled"] = {"10": dict(s["holdout"]["same_noise"]["10"],
                                         verdict="over-confident", points_per_cell=20.0)}
    assert assess(s, "10", num_train=10_000).verdict == "consistent"
    s["holdout"]["scaled"]["10"]["points_per_cell"] = 1000.0
    assert assess(s, "10", num_train=10_000).verdict == "over-confident"
