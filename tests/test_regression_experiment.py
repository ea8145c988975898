"""End-to-end run of experiments.regression on a tiny configuration (slow: several compiles)."""

from __future__ import annotations

import json

import pytest

from experiments.regression import Config, run


@pytest.mark.slow
def test_tiny_experiment_writes_report_and_resumes_identically(tmp_path):
    cfg = Config(sizes=(100, 200), num_steps=60, batch_size=50, num_members=4, num_draws=8,
                 num_test=2000)
    first = run(cfg, tmp_path, progress=False)
    for name in first["figures"]:
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.pdf").is_file()
    assert (tmp_path / "report.md").read_text().startswith("# Uncertainty-aware regression")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved["methods"]) == {"vi", "repulsive"}
    # the second run loads the cached draws: the same numbers, no refit
    second = run(cfg, tmp_path, progress=False)
    for m in ("vi", "repulsive"):
        assert second["methods"][m]["per_size"] == first["methods"][m]["per_size"]
