"""The budget's prediction holds on a small file study: predicted and measured times of every
stage (flow matching, VI, AdamMCMC, the evaluation) agree within 1.5x (slow: a few minutes of
training on a CPU)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.slow
def test_predicted_stage_times_within_one_and_a_half(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8_000, 3)).astype(np.float32) * [1.0, 2.0, 0.5] + [0, 1, 2]
    np.savez(tmp_path / "events.npz", x=x[:6_000])  # 2,000 to train on, 4,000 held out
    np.savez(tmp_path / "reference.npz", x=x[6_000:])
    out = tmp_path / "study"
    sets = ["data.name=file", f"data.path={tmp_path / 'events.npz'}",
            f"data.reference={tmp_path / 'reference.npz'}", "data.num_train=2000",
            "num_runs=1", "network.hidden=64,64", "deterministic.num_epochs=3000",
            "deterministic.batch_size=500", "deterministic.chunk_epochs=500",
            "vi.num_epochs=1500", "vi.batch_size=500", "vi.chunk_epochs=500"]
    args = ["paper", "--preset", "tiny", "--no-progress", "-o", str(out)]
    for s in sets:
        args += ["--set", s]
    # as a user runs it: a process of its own, without the suite's compilation settings
    # (tests/conftest.py: optimisation level 0 and a compilation cache)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", *args], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads((out / "budget.json").read_text())["device"]["stages"]
    assert set(plan) == {"deterministic", "vi", "adammcmc", "evaluate"}
    for stage, marker in (("deterministic", "deterministic"), ("vi", "train_vi"),
                          ("adammcmc", "train_adammcmc"), ("evaluate", "evaluate")):
        measured = json.loads((out / "stages" / f"{marker}.json").read_text())["seconds"]
        ratio = measured / plan[stage]["predicted_s"]
        assert 1 / 1.5 <= ratio <= 1.5, (stage, measured, plan[stage]["predicted_s"])
