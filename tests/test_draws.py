"""PosteriorDraws: stacking, indexing, atomic save/load, unit split and arviz export."""

import chex
import numpy as np
import pytest

from bayesiamp_jax.posteriors.draws import (
    PosteriorDraws,
    load_draws,
    save_draws,
    split_units,
    stack_params,
    to_inference_data,
)


def make_params(seed):
    rng = np.random.default_rng(seed)
    return {"Dense_0": {"kernel": rng.normal(size=(3, 4)).astype(np.float32),
                        "bias": rng.normal(size=4).astype(np.float32)},
            "Dense_1": {"kernel": rng.normal(size=(4, 2)).astype(np.float32),
                        "bias": rng.normal(size=2).astype(np.float32)}}


@pytest.fixture(scope="module")
def draws():
    params = [make_params(s) for s in range(5)]
    info = {"accept": np.array([1.0, 0.0, 1.0, 1.0, 0.0]), "step": np.arange(5)}
    return params, PosteriorDraws(stack_params(params), "test", info)


def test_stack_and_index(draws):
    params, d = draws
    assert d.num_draws == 5
    assert d.params["Dense_0"]["kernel"].shape == (5, 3, 4)
    for i, p in enumerate(params):
        chex.assert_trees_all_equal(d.draw(i), p)


def test_save_load_roundtrip(tmp_path, draws):
    params, d = draws
    path = save_draws(tmp_path / "draws.msgpack", d)
    for loaded in (load_draws(path), load_draws(path, template=params[0])):
        assert loaded.method == "test" and loaded.num_draws == 5
        np.testing.assert_array_equal(loaded.info["accept"], d.info["accept"])
        np.testing.assert_array_equal(loaded.info["step"], d.info["step"])
        chex.assert_trees_all_equal(loaded.params, d.params)
    assert [p.name for p in tmp_path.iterdir()] == ["draws.msgpack"]


def test_load_with_wrong_template_raises(tmp_path, draws):
    _, d = draws
    path = save_draws(tmp_path / "draws.msgpack", d)
    bad = make_params(0)
    bad["Dense_1"]["kernel"] = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"differ at \['Dense_1'\]\['kernel'\]"):
        load_draws(path, template=bad)


def test_stack_params_rejects_empty_and_mismatched():
    with pytest.raises(ValueError, match="at least one params pytree"):
        stack_params([])
    other = make_params(1)
    other["Dense_0"]["bias"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"params_list\[0\] and params_list\[1\] differ"):
        stack_params([make_params(0), other])


def test_split_units_gives_each_units_draws():
    batched = PosteriorDraws({"w": np.arange(24.0).reshape(2, 3, 4)}, "vi",
                             {"kl_weight": np.array([1.0, 5.0]), "losses": np.zeros((2, 7))})
    a, b = split_units(batched)
    np.testing.assert_array_equal(b.params["w"], np.arange(12.0, 24.0).reshape(3, 4))
    assert a.num_draws == 3 and float(b.info["kl_weight"]) == 5.0 and a.info["losses"].shape == (7,)
    with pytest.raises(ValueError, match="leading axis U=2"):
        split_units(batched._replace(info={"thinning": np.asarray(3)}))


def test_inference_data_has_runs_as_chains_and_per_draw_stats():
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(0)
    runs = [PosteriorDraws({"a": {"k": rng.normal(size=(5, 2, 3))}, "b": rng.normal(size=(5,))},
                           "adammcmc", {"acceptance_rate": rng.uniform(size=5),
                                        "sigma": np.asarray(0.1)}) for _ in range(2)]
    idata = to_inference_data(runs)
    assert isinstance(idata, az.InferenceData)
    post = idata.posterior
    assert post["a/k"].shape == (2, 5, 2, 3) and post["b"].shape == (2, 5)
    np.testing.assert_array_equal(post["a/k"].values[1], runs[1].params["a"]["k"])
    np.testing.assert_array_equal(idata.sample_stats["acceptance_rate"].values[0],
                                  runs[0].info["acceptance_rate"])
    assert "sigma" not in idata.sample_stats  # not a per-draw statistic
    # arviz's own ESS of i.i.d. normal draws is about the number of draws
    many = PosteriorDraws({"x": rng.normal(size=(2000,))}, "vi", {})
    assert float(az.ess(to_inference_data(many))["x"]) == pytest.approx(2000, rel=0.2)
