"""Budget per stage: work counted by hand for a small configuration, FLOPs of the MLP."""

import pytest

import bayesiamp_jax as bj
from experiments import budget, config

COSTS = {"field_eval": 1e-7, "train_point_step": 2e-6, "vi_point_step": 4e-6,
         "likelihood_point_step": 5e-6, "nuts_draw": 0.3, "parallel": 1, "source": "test"}


def test_work_and_predicted_seconds_by_hand():
    cfg = config.resolve("tiny", [])
    plan = budget.budget(cfg, COSTS, flops_per_eval=1000.0)
    st = plan["stages"]
    runs, n = cfg.num_runs, cfg.data.num_train  # 2 runs, 400 points
    assert st["deterministic"]["units"] == cfg.deterministic.num_epochs * n * runs
    assert st["vi"]["predicted_s"] == pytest.approx(cfg.vi.num_epochs * n * runs * 4e-6)
    a = cfg.adammcmc
    steps = a.num_samples * a.thinning + a.num_adam_steps
    assert st["adammcmc"]["units"] == steps * 2 * a.batch_size * a.solver_steps * runs
    # the held-out log-likelihood of the start and the kept states (400 held-out points: the
    # toy's default is num_train)
    assert st["adammcmc"]["extra_units"] == (a.num_samples + 1) * n * a.solver_steps * runs
    e = cfg.evaluation  # VI draws + AdamMCMC samples per run, RK4: 4 evaluations a step
    draws = cfg.vi.num_draws + a.num_samples
    points = runs * draws * (e.calib_samples
                             + e.scaled_factor * sum(k * k for k in e.scaled_bins))
    # run 0's marginals (10,000 events a draw), the classifier test's two samples of the
    # held-out set's size per label, the KS differential amplification's points of every draw
    points += draws * 10_000 + 2 * 2 * n + runs * draws * e.differential_samples
    assert st["evaluate"]["samples"] == points
    # the histograms decode whole chunks (at most 4,000 here, multiples of 256 below it): the
    # calibration's 4,000 points one chunk, the scaled 200, 450, 800, 1,250 as 256, 512, 1,024,
    # 1,280
    padded = runs * draws * ((256 - 200) + (512 - 450) + (1024 - 800) + (1280 - 1250))
    assert (e.calib_samples, e.chunk_size, e.scaled_factor, e.scaled_bins) == (4000, 4000, 50,
                                                                               (2, 3, 4, 5))
    decoded = points + padded
    assert st["evaluate"]["field_evals"] == decoded * e.solver_steps * 4
    assert st["evaluate"]["flops"] == decoded * e.solver_steps * 4 * 1000.0
    assert plan["total_s"] == pytest.approx(sum(s["predicted_s"] for s in st.values()))
    ab4 = budget.work(config.resolve("tiny", ["evaluation.solver=ab4",
                                              "evaluation.solver_steps=30"]))
    assert ab4["evaluate"]["field_evals"] == decoded * (30 + 3 * 3)  # 3 RK4 starting steps
    shared = budget.work(config.resolve("tiny", ["evaluation.scaled_shared=true"]))
    assert shared["evaluate"]["samples_scaled"] == runs * draws * e.scaled_factor * 5 * 5


def test_gpu_parallel_units_cost_one_batch():
    cfg = config.resolve("tiny", [])
    gpu = dict(COSTS, parallel=32)
    plan = budget.budget(cfg, gpu, flops_per_eval=1.0)
    # 2 runs × 1 grid point vmapped: one batch costs as one unit
    assert plan["stages"]["vi"]["predicted_s"] == pytest.approx(
        cfg.vi.num_epochs * cfg.data.num_train * 4e-6)


def test_field_flops_match_the_dense_layer_count():
    field = bj.VectorField()
    widths = (9, 32, 32, 32, 2)
    dense = sum(2 * a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert budget.field_flops(field) == pytest.approx(dense, rel=0.1)


def test_measured_beside_predicted():
    plan = budget.budget(config.resolve("tiny", []), COSTS, flops_per_eval=1.0)
    out = budget.with_measured(plan, {"train_vi": 2 * plan["stages"]["vi"]["predicted_s"]})
    assert out["stages"]["vi"]["measured_over_predicted"] == pytest.approx(2.0)
    assert out["stages"]["evaluate"]["measured_s"] is None


def test_budget_command_writes_the_plans(tmp_path, capsys):
    import json

    from experiments import cli

    out = tmp_path / "plans.json"
    assert cli.main(["budget", "--preset", "tiny", "--json", str(out)]) == 0
    plans = json.loads(out.read_text())
    work = budget.work(config.resolve("tiny", []))
    for plan in plans.values():  # this device's probe, and one GPU's documented costs
        assert set(plan["stages"]) == set(work)
        assert plan["stages"]["evaluate"]["samples"] == work["evaluate"]["samples"]
        assert plan["total_s"] == pytest.approx(
            sum(s["predicted_s"] for s in plan["stages"].values()))
    assert cli.main(["budget", "--preset", "tiny", "--set", "seed=x"]) == 2  # one-line error


def test_adams_bashforth_needs_its_starting_steps():
    with pytest.raises(ValueError, match="evaluation.solver_steps must be >= 4 for "
                                         "evaluation.solver='ab4', got 3"):
        config.resolve("tiny", ["evaluation.solver=ab4", "evaluation.solver_steps=3"])
