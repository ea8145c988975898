"""The open-data Z -> ee study's pieces: the conversion's split rule and columns, the
observables against four-vectors, and the reference MLP's default for file data."""

import numpy as np
import pytest

from benchmarks.open_data import make_zee, zee
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


def test_file_data_default_to_the_measured_field():
    assert config.resolve("quick").network.hidden == (32, 32, 32)  # ring: the paper's
    file_cfg = config.resolve("quick", FILE).network
    assert (file_cfg.hidden, file_cfg.num_frequencies) == (config.FILE_HIDDEN,
                                                           config.FILE_FREQUENCIES)
    assert config.resolve("quick", FILE + ["network.hidden=64,64"]).network.hidden == (64, 64)
    assert config.resolve("tiny", FILE).network.hidden == (16, 16)  # a preset's own choice
