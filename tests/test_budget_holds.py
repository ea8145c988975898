"""The budget's prediction holds on a small file study: predicted and measured stage times of
the training stages agree within 1.5x (slow: a few minutes of training on a CPU)."""

import json

import numpy as np
import pytest

from experiments import cli


@pytest.mark.slow
def test_predicted_stage_times_within_one_and_a_half(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5_000, 3)).astype(np.float32) * [1.0, 2.0, 0.5] + [0, 1, 2]
    np.savez(tmp_path / "events.npz", x=x[:3_000])
    np.savez(tmp_path / "reference.npz", x=x[3_000:])
    out = tmp_path / "study"
    sets = ["data.name=file", f"data.path={tmp_path / 'events.npz'}",
            f"data.reference={tmp_path / 'reference.npz'}", "data.num_train=2000",
            "num_runs=1", "network.hidden=64,64", "deterministic.num_epochs=3000",
            "deterministic.batch_size=500", "deterministic.chunk_epochs=500",
            "vi.num_epochs=1500", "vi.batch_size=500", "vi.chunk_epochs=500",
            "adammcmc.enabled=false"]
    args = ["train", "--preset", "tiny", "-o", str(out)]
    for s in sets:
        args += ["--set", s]
    assert cli.main(args) == 0
    plan = json.loads((out / "budget.json").read_text())["device"]["stages"]
    for stage, marker in (("deterministic", "deterministic"), ("vi", "train_vi")):
        measured = json.loads((out / "stages" / f"{marker}.json").read_text())["seconds"]
        ratio = measured / plan[stage]["predicted_s"]
        assert 1 / 1.5 <= ratio <= 1.5, (stage, measured, plan[stage]["predicted_s"])
