"""Atomic, exact save/load of pytrees (params, optimizer states, mixed trees)."""

import json
import os

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesiamp_jax import checkpoint
from bayesiamp_jax.training import TrainState, adam


@pytest.fixture
def train_state():
    params = {"Dense_0": {"kernel": np.arange(6.0, dtype=np.float32).reshape(2, 3),
                          "bias": np.array([0.5, -1.5, 2.5], np.float32)}}
    opt = adam()
    opt_state = opt.update(params, opt.init(params), params)[1]  # non-trivial moments
    return TrainState(params, opt_state, np.asarray(7, np.int32))


def test_roundtrip_with_target_is_exact(tmp_path, train_state):
    path = checkpoint.save_pytree(tmp_path / "s.msgpack", {"state": train_state, "tag": "abc"})
    target = {"state": train_state, "tag": ""}
    loaded = checkpoint.load_pytree(path, target)
    assert isinstance(loaded["state"], TrainState)
    assert isinstance(loaded["state"].opt_state[0], optax.ScaleByAdamState)
    assert loaded["tag"] == "abc"
    chex.assert_trees_all_equal(loaded["state"], train_state, strict=True)  # dtypes too


def test_roundtrip_without_target_gives_nested_dicts(tmp_path):
    tree = {"a": np.array([1, 2, 3], np.int32), "b": {"c": jnp.ones((2, 2)), "d": "text"}}
    path = checkpoint.save_pytree(tmp_path / "t.msgpack", tree)
    loaded = checkpoint.load_pytree(path)
    np.testing.assert_array_equal(loaded["a"], tree["a"])
    np.testing.assert_array_equal(loaded["b"]["c"], np.ones((2, 2)))
    assert loaded["b"]["d"] == "text"


def test_load_with_target_checks_shapes(tmp_path):
    path = checkpoint.save_pytree(tmp_path / "p.msgpack", {"w": np.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"differ at \['w'\]: shape \(3, 2\) vs \(2, 2\)"):
        checkpoint.load_pytree(path, {"w": np.zeros((2, 2))})
    with pytest.raises(ValueError):
        checkpoint.load_pytree(path, {"v": np.zeros((3, 2))})


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load_pytree(tmp_path / "nope.msgpack")


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    checkpoint.atomic_write_bytes(path, b"first")
    checkpoint.atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["f.bin"]


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    checkpoint.atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_json_serialises_arrays(tmp_path):
    path = checkpoint.atomic_write_json(
        tmp_path / "m.json", {"x": np.arange(3), "y": np.float32(0.5), "z": jnp.ones(2)}
    )
    assert json.loads(path.read_text()) == {"x": [0, 1, 2], "y": 0.5, "z": [1.0, 1.0]}
    with pytest.raises(TypeError, match="cannot serialise object"):
        checkpoint.atomic_write_json(tmp_path / "bad.json", {"o": object()})
    assert not (tmp_path / "bad.json").exists()
