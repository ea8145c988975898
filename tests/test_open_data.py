"""The open-data Z -> ee study's pieces: the conversion's split rule and columns, the
observables against four-vectors, the pair frame's maps (round trips, four-vectors and the
Collins-Soper closed forms), and the reference MLP's default for file data."""

import numpy as np
import pytest

from benchmarks.open_data import make_zee, pair_frame, zee
from experiments import config

FILE = ["data.name=file", "data.path=x.npz", "data.reference=y.npz"]


def four_vector(pt, eta, phi):
    """(E, px, py, pz) of a massless particle."""
    return np.array([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)])


def test_mass_and_pair_pt_match_four_vectors():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pt1, pt2 = rng.uniform(25, 80, 2)
        eta1, eta2 = rng.uniform(-2.5, 2.5, 2)
        phi1, phi2 = rng.uniform(-np.pi, np.pi, 2)
        p = four_vector(pt1, eta1, phi1) + four_vector(pt2, eta2, phi2)
        m = np.sqrt(p[0] ** 2 - p[1] ** 2 - p[2] ** 2 - p[3] ** 2)
        x = np.array([pt1, eta1, pt2, eta2, np.mod(phi2 - phi1, 2 * np.pi)], np.float64)
        got = np.asarray(zee.MASS_PT(x))
        assert got[0] == pytest.approx(m, rel=1e-5)
        assert got[1] == pytest.approx(np.hypot(p[1], p[2]), rel=1e-5)


def random_lab_events(rng, n):
    """n lab events (pT1, eta1, pT2, eta2, dphi) and their absolute phi1 (any rotation)."""
    pt = rng.uniform(25, 120, (n, 2))
    eta = rng.uniform(-2.5, 2.5, (n, 2))
    phi = rng.uniform(-np.pi, np.pi, (n, 2))
    x = np.stack([pt[:, 0], eta[:, 0], pt[:, 1], eta[:, 1],
                  np.mod(phi[:, 1] - phi[:, 0], 2 * np.pi)], axis=1)
    return x, pt, eta, phi


def test_pair_frame_round_trips_to_float_precision():
    rng = np.random.default_rng(3)
    x = random_lab_events(rng, 500)[0]
    back = pair_frame.to_lab(pair_frame.to_pair(x))
    dphi = np.angle(np.exp(1j * (back[:, 4] - x[:, 4])))
    assert np.allclose(back[:, :4], x[:, :4], rtol=1e-10, atol=1e-10)
    assert np.abs(dphi).max() < 1e-10
    # and pair -> lab -> pair from random pair points (boosted, forward and central)
    p = np.stack([rng.uniform(60, 120, 500), rng.uniform(0.1, 200, 500),
                  rng.uniform(-2.5, 2.5, 500), rng.uniform(-0.99, 0.99, 500),
                  rng.uniform(0, 2 * np.pi, 500)], axis=1)
    again = pair_frame.to_pair(pair_frame.to_lab(p))
    assert np.allclose(again[:, :4], p[:, :4], rtol=1e-9, atol=1e-9)
    assert np.abs(np.angle(np.exp(1j * (again[:, 4] - p[:, 4])))).max() < 1e-8
    one = pair_frame.to_pair(x[0])  # one event (5,) as well as a batch
    assert one.shape == (5,) and np.allclose(one, pair_frame.to_pair(x)[0])


def test_pair_frame_against_four_vectors_and_collins_soper():
    rng = np.random.default_rng(4)
    x, pt, eta, phi = random_lab_events(rng, 200)
    p1 = four_vector(pt[:, 0], eta[:, 0], phi[:, 0])  # absolute phi1: rotation invariance
    p2 = four_vector(pt[:, 1], eta[:, 1], phi[:, 1])
    big = p1 + p2
    m = np.sqrt(big[0] ** 2 - big[1] ** 2 - big[2] ** 2 - big[3] ** 2)
    qt = np.hypot(big[1], big[2])
    y = np.arctanh(big[3] / big[0])
    got = pair_frame.to_pair(x)
    assert np.allclose(got[:, 0], m, rtol=1e-10) and np.allclose(got[:, 1], qt, rtol=1e-10)
    assert np.allclose(got[:, 2], y, atol=1e-10)
    # Collins-Soper (1977): cos theta = 2 (p1+ p2- - p1- p2+) / (m mT), p± = (E ± pz)/√2;
    # tan phi = (mT/m) (Δ·R̂)/(Δ·Q̂_T), Δ = p1 − p2, R̂ = unit(ẑ × Q) (transverse)
    mt = np.hypot(m, qt)
    plus, minus = (p1[0] + p1[3], p2[0] + p2[3]), (p1[0] - p1[3], p2[0] - p2[3])
    cos_t = (plus[0] * minus[1] - minus[0] * plus[1]) / (m * mt)
    assert np.allclose(got[:, 3], cos_t, atol=1e-10)
    qhat = big[1:3] / qt
    rhat = np.stack([-qhat[1], qhat[0]])
    delta = (p1 - p2)[1:3]
    phi_cs = np.arctan2(mt * (delta * rhat).sum(0), m * (delta * qhat).sum(0))
    assert np.abs(np.angle(np.exp(1j * (got[:, 4] - phi_cs)))).max() < 1e-9
    assert np.all((got[:, 4] >= 0) & (got[:, 4] < 2 * np.pi))
    # the study's observables agree in both frames
    lab = np.asarray([zee.MASS_PT(e) for e in x[:20].astype(np.float32)])
    pair = np.asarray([zee.PAIR_MASS_PT(e) for e in got[:20].astype(np.float32)])
    assert np.allclose(lab, pair, rtol=1e-4)


def test_ks_p_at_the_training_precision():
    """With an exact generator (n_generated -> inf) it is the two-sample asymptotic p of the
    training sample against the held-out; a finite training set only raises it."""
    from scipy import stats

    from benchmarks.open_data.measure_field import p_train_precision

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=4000), rng.normal(0.05, 1.0, size=7000)
    ks = stats.ks_2samp(a, b, method="asymp")
    # scipy's asymp uses the finite-n Kolmogorov law at n = mn/(m+n): 1 % from the limit
    assert p_train_precision(ks.statistic, 4000, 7000, 10**15) == pytest.approx(ks.pvalue,
                                                                                rel=0.03)
    plain = stats.ks_2samp(rng.normal(size=20000), b, method="asymp")
    assert p_train_precision(plain.statistic, 4000, 7000, 20000) > plain.pvalue


def test_conversion_columns_and_split(tmp_path, monkeypatch):
    monkeypatch.setattr(make_zee, "NUM_TRAIN", 40)
    monkeypatch.setattr(make_zee, "NUM_HOLDOUT", 60)
    n = 105
    rng = np.random.default_rng(1)
    rows = ["Run,Event,pt1,eta1,phi1,Q1,pt2,eta2,phi2,Q2"]
    for i in range(n):
        rows.append(f"{1 + i % 3},{n - i},{30 + i % 50},{0.1},{3.0},-1,{40.0},{-0.2},"
                    f"{-3.0},{rng.choice([-1, 1])}")
    path = tmp_path / "z.csv"
    path.write_text("\n".join(rows))
    make_zee.main([str(path), "--out", str(tmp_path)])
    events = np.load(tmp_path / "zee_events.npz")["x"]
    ref = np.load(tmp_path / "zee_reference.npz")["x"]
    assert events.shape == (n - 5, 5) and ref.shape == (5, 5) and events.dtype == np.float32
    # Δφ = (−3 − 3) mod 2π, near the middle of [0, 2π) for back-to-back pairs
    assert np.allclose(events[:, 4], np.mod(-6.0, 2 * np.pi), atol=1e-6)
    pts = np.sort(np.concatenate([events[:, 0], ref[:, 0]]))
    assert np.array_equal(pts, np.sort([30 + i % 50 for i in range(n)]).astype(np.float32))
    # the pair frame: the same rows in the same order, mapped by pair_frame.to_pair
    make_zee.main([str(path), "--out", str(tmp_path), "--frame", "pair"])
    pair = np.load(tmp_path / "zee_pair_events.npz")["x"]
    pair_ref = np.load(tmp_path / "zee_pair_reference.npz")["x"]
    assert pair.shape == events.shape and pair_ref.shape == ref.shape
    want = pair_frame.to_pair(events.astype(np.float64))
    assert np.allclose(pair[:, :4], want[:, :4], rtol=1e-5, atol=1e-5)
    # pT1 = 30..79, pT2 = 40, Δη = 0.3, Δφ = 2π − 6: m² = 2 pT1 pT2 (cosh Δη − cos Δφ)
    m = np.sqrt(2 * events[:, 0] * 40.0 * (np.cosh(0.3) - np.cos(2 * np.pi - 6.0)))
    assert np.allclose(pair[:, 0], m, rtol=1e-5)


def test_file_data_default_to_the_measured_field():
    assert config.resolve("quick").network.hidden == (32, 32, 32)  # ring: the paper's
    file_cfg = config.resolve("quick", FILE).network
    assert (file_cfg.hidden, file_cfg.num_frequencies) == (config.FILE_HIDDEN,
                                                           config.FILE_FREQUENCIES)
    assert config.resolve("quick", FILE + ["network.hidden=64,64"]).network.hidden == (64, 64)
    assert config.resolve("tiny", FILE).network.hidden == (16, 16)  # a preset's own choice


def test_file_data_default_to_the_measured_training_length():
    """The ring's quick and paper flow-matching lengths stand for the file default (5,000
    epochs, the cosine schedule); another length, the tiny preset's and the ring's stay."""
    assert config.resolve("quick").deterministic.num_epochs == 300
    assert config.resolve("paper").deterministic.num_epochs == 2_501
    for preset in ("quick", "paper"):
        d = config.resolve(preset, FILE).deterministic
        assert (d.num_epochs, d.learning_rate_schedule) == (5_000, "cosine")
    assert config.resolve("quick", FILE + ["deterministic.num_epochs=800"]
                          ).deterministic.num_epochs == 800
    assert config.resolve("tiny", FILE).deterministic.num_epochs == 20
