"""The budget of a file study counts its own data dimension and compiled programs (by hand)."""

import numpy as np
import pytest

from experiments import budget, config

ZEE = ["data.name=file", "data.path=benchmarks/open_data/zee_events.npz",
       "data.reference=benchmarks/open_data/zee_reference.npz"]
COSTS = {"field_eval": 1e-7, "train_point_step": 2e-6, "vi_point_step": 4e-6,
         "likelihood_point_step": 5e-6, "nuts_draw": 0.3, "parallel": 1, "compile": 0.5,
         "source": "test"}


def test_file_study_counts_its_dimension_and_programs():
    cfg = config.resolve("tiny", ZEE)
    plan = budget.budget(cfg, COSTS, flops_per_eval=1.0)
    st = plan["stages"]
    a, d = cfg.adammcmc, 5  # five columns: 4 RK4 stages x (1 + d) x 3 evaluations
    steps = a.num_samples * a.thinning + a.num_adam_steps
    units = steps * 2 * a.batch_size * a.solver_steps * cfg.num_runs
    # the held-out events are those after the runs' training sets; the held-out check of
    # each kept state and the start uses at most 2,048 of them (forward only: 4 (1 + d) each)
    left = np.load("benchmarks/open_data/zee_events.npz")["x"].shape[0] - 2 * 400
    held = (a.num_samples + 1) * min(left, 2048) * a.solver_steps * cfg.num_runs
    assert st["adammcmc"]["extra_units"] == held
    assert st["adammcmc"]["field_evals"] == units * 4 * (1 + d) * 3 + held * 4 * (1 + d)
    assert st["adammcmc"]["predicted_s"] == pytest.approx(units * 5e-6 + 2 * 0.5)
    with_held = budget.budget(cfg, dict(COSTS, log_prob_point_step=1e-6, adammcmc_compile=7.0),
                              flops_per_eval=1.0)["stages"]["adammcmc"]
    assert with_held["predicted_s"] == pytest.approx(units * 5e-6 + held * 1e-6 + 7.0)
    labels = len(config.method_grid(cfg))  # same-noise + one group per scaled binning + 4,
    # and the classifier test's training once
    programs = labels * (1 + len(cfg.evaluation.scaled_bins) + 4) + 3
    assert st["evaluate"]["compile_s"] == pytest.approx(programs * 0.5)
    assert st["deterministic"]["predicted_s"] == pytest.approx(
        cfg.deterministic.num_epochs * cfg.data.num_train * cfg.num_runs * 2e-6 + 2 * 0.5)
    no_compile = budget.budget(cfg, {k: v for k, v in COSTS.items() if k != "compile"}, 1.0)
    assert no_compile["stages"]["vi"]["compile_s"] == 0.0
