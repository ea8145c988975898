"""The study on a user's own problem from the command line: data files, observables, fields.

Known answers: the files' own contents (the training sets are the file's rows, run r rows
[r·N, (r+1)·N)); the reference-sample binning recomputed with numpy from the reference file;
the settings' intended values and one-line errors.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesiamp_jax as bj
from experiments import config as cfgmod
from experiments import data as expdata
from experiments import dimension, paper

FAST = ["--preset", "tiny", "--no-progress", "--set", "num_runs=1",
        "--set", "evaluation.scaled_bins=2,3,4", "--set", "evaluation.fit_bins=2,3,4",
        "--set", "evaluation.calib_bins=3", "--set", "evaluation.deviation_bins=3",
        "--set", "evaluation.differential_samples=500"]


@dataclasses.dataclass(frozen=True)
class _Norm:
    names: tuple = ("norm",)

    def __call__(self, x):
        return jnp.linalg.norm(x, axis=-1, keepdims=True)


def _user_module():
    """A module ``own_problem_user`` with a field factory and an observable, as a user has."""
    mod = types.ModuleType("own_problem_user")
    mod.field = lambda data_dim, cond_dim: bj.VectorField(data_dim=data_dim, cond_dim=cond_dim,
                                                          hidden=(12,), activation="tanh")
    mod.norm = _Norm()
    sys.modules[mod.__name__] = mod
    return mod


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    train = bj.datasets.sample_shell(jax.random.key(1), 900, 3)
    ref = bj.datasets.sample_shell(jax.random.key(2), 20_000, 3)
    np.savez(d / "train.npz", x=np.asarray(train.x))
    np.savez(d / "ref.npz", x=np.asarray(ref.x))
    return d


def test_file_data_with_a_user_field_and_observable_runs_end_to_end(files, tmp_path):
    _user_module()
    out = tmp_path / "study"
    rc = paper.main(FAST + ["--output", str(out),
                            "--set", "data.name=file", "--set", "data.num_train=400",
                            "--set", f"data.path={files / 'train.npz'}",
                            "--set", f"data.reference={files / 'ref.npz'}",
                            "--set", "data.observable=own_problem_user:norm",
                            "--set", "network.module=own_problem_user:field",
                            # VI alone: AdamMCMC and the classifier test on a study are
                            # tests/test_experiments.py's (CI time)
                            "--set", "adammcmc.enabled=false",
                            "--set", "deterministic.enabled=false",
                            "--set", "evaluation.classifier_events=0"])
    assert rc == 0
    with np.load(files / "train.npz") as f:
        rows = f["x"][:400]
    with np.load(out / "data" / "run0.npz") as f:
        np.testing.assert_array_equal(f["x"], rows)
        assert "c" not in f.files  # unconditional data stay unconditional
    report = json.loads((out / "report.json").read_text())
    vi = report["methods"]["vi_k10"]
    assert vi["observables"] == ["norm"] and set(vi["amplification"]) == {"2x1", "3x1", "4x1"}
    assert "differential" not in vi  # a reference sample has no exact truth sampler
    # the truth of the saved 4-cell grid is the reference's cell fractions (numpy)
    hist = bj.evaluation.load_histograms(out / "histograms" / "vi_k10" / "scaled.npz")
    b = next(b for b in hist.binnings if b.shape == (4,))
    with np.load(files / "ref.npz") as f:
        norms = np.linalg.norm(f["x"].astype(np.float64), axis=1)
    edges = np.quantile(norms, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(b.edges[0][1:-1], edges)
    np.testing.assert_allclose(b.truth, np.bincount(np.searchsorted(edges, norms, "right"),
                                                    minlength=4) / norms.size)
    assert (out / "figures" / "amplification.png").is_file()


@pytest.mark.slow  # ~40 s; the shell's exact cells are tested in test_datasets_observables
def test_shell_study_reports_exact_truth_and_the_ks_estimator(tmp_path):
    out = tmp_path / "shell"
    assert paper.main(FAST + ["--output", str(out), "--set", "data.name=shell",
                              "--set", "data.dim=3"]) == 0
    m = json.loads((out / "report.json").read_text())["methods"]["adammcmc_sigma0.1"]
    assert m["observables"] == ["r", "cos_theta"]
    assert set(m["differential"]) == {"r", "cos_theta"}
    assert set(m["averaging"]) == {"2", "3", "4"}  # every fresh-noise grid (>= 5 draws)
    hist = bj.evaluation.load_histograms(out / "histograms" / "adammcmc_sigma0.1" / "scaled.npz")
    b = next(b for b in hist.binnings if b.shape == (3, 3))
    # d = 3: cos θ is uniform on [−1, 1], its tertiles are ∓1/3; r's are the ring's
    np.testing.assert_allclose(b.edges[1][1:-1], [-1 / 3, 1 / 3], atol=1e-12)
    np.testing.assert_allclose(b.edges[0], bj.data.quantile_edges(3).r)
    assert b.truth_std is None and np.allclose(b.truth, 1 / 9)


@pytest.mark.parametrize("sets, match", [
    (["data.name=cube"], "data.name must be one of"),
    (["data.name=shell", "data.dim=1"], "data.dim must be >= 2 for the shell"),
    (["data.dim=3"], "data.dim=3 needs data.name=shell"),
    (["data.name=file"], "data.path is required for data.name=file"),
    (["data.path=x.npz"], "need data.name=file"),
    (["data.observable=spherical"], "data.observable must be one of"),
    (["network.module=nocolon"], "network.module must be 'package.module:attribute'"),
    (["network.activation=relu6"], "network.activation must be one of"),
])
def test_bad_problem_settings_are_one_line_errors(sets, match):
    with pytest.raises(cfgmod.ConfigError, match=match) as e:
        cfgmod.resolve("tiny", sets)
    assert "\n" not in str(e.value)


def test_unimportable_user_module_and_bad_files_name_the_setting(tmp_path):
    cfg = cfgmod.resolve("tiny", ["network.module=no_such_pkg_xyz:field"])
    with pytest.raises(ValueError, match="network.module='no_such_pkg_xyz:field' cannot be"):
        expdata.field_from_config(cfg)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.array([[0.0, np.nan]]))
    cfg = cfgmod.resolve("tiny", ["data.name=file", f"data.path={bad}",
                                  f"data.reference={bad}"])
    with pytest.raises(ValueError, match=r"array 'x' of '.*bad.npz' holds 1 non-finite"):
        expdata.field_from_config(cfg)


def test_dimension_flag_is_validated():
    assert dimension.parse_dims("8,2,4") == [2, 4, 8]
    for bad in ("1,2", "2,2", "two", ""):
        with pytest.raises(cfgmod.ConfigError, match="--dims must be"):
            dimension.parse_dims(bad)
    cfg = dimension.shell_config(cfgmod.resolve("tiny"), 5)
    assert (cfg.data.name, cfg.data.dim) == ("shell", 5)
