"""Bad data and bad output folders at the command line: one line, no traceback, exit status 2,
and the line names the setting that fixes it (issue 22, item 4).

Every case fails before training starts (``experiments.data.preflight`` reads the files when the
command starts), so the file runs in seconds. The expected texts are written from the inputs:
the file, the row holding the NaN, the counts, the setting.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest

RNG = np.random.default_rng(3)
X = RNG.normal(size=(1000, 3)).astype(np.float32)
X[:, 0] = 20.0 + np.abs(X[:, 0])  # a positive column (pt > 20)


def _file(tmp, name, **arrays):
    path = tmp / name
    np.savez(path, **arrays)
    return str(path)


def _args(tmp, train=None, reference=None, *extra):
    train = train or _file(tmp, "train.npz", x=X)
    reference = reference or _file(tmp, "reference.npz", x=X)
    return ["--preset", "tiny", "--no-progress", "--set", "data.name=file",
            "--set", f"data.path={train}", "--set", f"data.reference={reference}",
            *extra, "-o", str(tmp / "out")]


def _one_line(capsys, code):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _nan_file(tmp):
    x = X.copy()
    x[17, 1] = np.nan
    return _file(tmp, "nan.npz", x=x)


CASES = [
    ("NaN in train.npz", lambda t: _args(t, _nan_file(t)),
     ["nan.npz' holds 1 non-finite value(s) (NaN or inf; the first in row 17)",
      "--set data.path=FILE"]),
    ("too few events", lambda t: _args(t, None, None, "--set", "data.num_train=600"),
     ["has 1000 events, fewer than num_runs x data.num_train = 2 x 600 = 1200",
      "--set data.num_train=500"]),
    ("reference of another dimension",
     lambda t: _args(t, None, _file(t, "ref3.npz", x=X[:, :2])),
     ["ref3.npz' has d = 2, expected 3 (data.reference)", "--set data.reference=FILE"]),
    ("reference with conditions the data lack",
     lambda t: _args(t, None, _file(t, "refc.npz", x=X, c=X[:, :1])),
     ["refc.npz' has 'c' with k = 1, expected k = 0 (data.reference)"]),
    ("missing training file", lambda t: _args(t, str(t / "nope.npz")),
     ["nope.npz' does not exist (data.path)"]),
    ("misspelt preprocessing kind", lambda t: _args(t, None, None, "--set",
                                                    "data.preprocess=log,periodc,standardise"),
     ["data.preprocess='log,periodc,standardise': unknown preprocessing kind 'periodc'"]),
    ("log of a column with negative values",
     lambda t: _args(t, None, None, "--set", "data.preprocess=log"),
     ["data.preprocess='log'", "column 1: kind 'log' needs every value > 0",
      "--set data.preprocess=KIND,KIND,..."]),
    ("one kind too few", lambda t: _args(t, None, None, "--set", "data.preprocess=log,periodic"),
     ["data.preprocess='log,periodic'", "names 2 column kinds but the events have d = 3"]),
    ("a discrete column",
     lambda t: _args(t, _file(t, "charge.npz", x=np.concatenate(
         [X[:, :2], RNG.choice([-1.0, 1.0], (1000, 1))], 1).astype(np.float32))),
     ["charge.npz' (data.path): column 2 of 'x' is discrete (only the integer values -1, 1)",
      "move it to the conditions array 'c'"]),
    ("preprocessing of the ring", lambda t: ["--preset", "tiny", "--set", "data.preprocess=log",
                                             "-o", str(t / "out")],
     ["data.preprocess='log' needs data.name=file"]),
]


@pytest.mark.parametrize("make_args, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_data_is_one_line_naming_the_setting(make_args, expected, tmp_path, capsys):
    from experiments import paper

    line = _one_line(capsys, paper.main(make_args(tmp_path)))
    for text in expected:
        assert text in line, line
    assert not (tmp_path / "out" / "stages").exists()  # refused before any stage ran


def test_budget_of_a_bad_file_is_one_line(tmp_path, capsys):
    from experiments import cli

    args = [a for a in _args(tmp_path, _nan_file(tmp_path))[:-2] if a != "--no-progress"]
    line = _one_line(capsys, cli.main(["budget", *args]))
    assert "holds 1 non-finite value(s)" in line and "data.path" in line


def test_unwritable_output_is_one_line(tmp_path, capsys, monkeypatch):
    """A folder the permission check lets through but that refuses writes (as root on a
    root-squashed network disk): the first write raises PermissionError."""
    from experiments import paper

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(paper, "atomic_write_json", refuse)
    line = _one_line(capsys, paper.main(["--preset", "tiny", "--no-progress",
                                         "-o", str(tmp_path / "out")]))
    assert line == (f"error: cannot write {tmp_path / 'out' / 'config.json'}: Permission "
                    "denied; choose another --output (or free space there)")


@pytest.mark.parametrize("content", [b'{"seed": ', b"[]", b"\x00\xff", b'{"data": {"name": 3}}'])
def test_figures_of_a_folder_with_a_corrupt_config_is_one_line(tmp_path, capsys, content):
    from experiments import cli

    (tmp_path / "config.json").write_bytes(content)
    (tmp_path / "results").mkdir()
    line = _one_line(capsys, cli.main(["figures", str(tmp_path)]))
    assert "config.json" in line
