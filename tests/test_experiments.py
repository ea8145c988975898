"""Experiments pipeline: config/overrides, report schema, end-to-end tiny study with resume.

Known answers come from outside the pipeline: the override grammar's intended values, a
hand-written report, numpy recomputations of N_eq = Σ μ²/σ² and of the central-interval coverage
from the saved raw histograms, and an uninterrupted training run for the resumed one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import config as cfgmod
from experiments.report import ReportSchemaError, validate_report

# ----------------------------------------------------------------------------- config


def test_overrides_are_typed_by_field():
    cfg = cfgmod.resolve("quick", ["vi.kl_weights=1,10", "vi.num_epochs=2_000", "num_runs=3",
                                   "adammcmc.enabled=false", "evaluation.scaled_bins=[2, 5]",
                                   "evaluation.fit_bins=2,5", "network.precision=default"])
    assert cfg.vi.kl_weights == (1.0, 10.0)
    assert cfg.vi.num_epochs == 2000 and isinstance(cfg.vi.num_epochs, int)
    assert cfg.num_runs == 3
    assert cfg.adammcmc.enabled is False
    assert cfg.evaluation.scaled_bins == (2, 5)
    assert cfg.network.precision == "default"
    assert cfgmod.from_dict(json.loads(json.dumps(cfgmod.to_dict(cfg)))) == cfg


@pytest.mark.parametrize("assignment, match", [
    ("vi.nope=1", "unknown setting 'vi.nope'"),
    ("vi.num_epochs=1.5", "cannot parse '1.5' as int"),
    ("vi.num_epochs=-3", "vi.num_epochs must be a positive integer, got -3"),
    ("vi.kl_weights=-1", r"vi.kl_weights\[0\] must be a finite number >= 0"),
    ("vi.num_draws=1", "vi.num_draws must be >= 2"),
    ("evaluation.fit_bins=10,1000", r"evaluation.fit_bins \[1000\] are not in"),
    ("vi", "must look like section.field=value"),
    ("vi=3", "is a section"),
    ("evaluation.calib_bins=1,5", r"evaluation.calib_bins\[0\] must be >= 2"),
    ("network.hidden=", "network.hidden must not be empty"),
    ("evaluation.calib_samples=3_000_000_000", "calib_samples must be <= 2147483647"),
    ("evaluation.scaled_factor=10_000_000", r"scaled_factor \* max\(scaled_bins\)\^2"),
    ("deterministic.batch_size=20000", "deterministic.batch_size=20000 exceeds data.num_train"),
    ("preset=paper", "'preset' cannot be changed with --set"),
])
def test_bad_overrides_name_the_setting(assignment, match):
    with pytest.raises(ValueError, match=match):
        cfgmod.resolve("quick", [assignment])


def test_presets_and_labels():
    paper = cfgmod.resolve("paper")
    labels = [label for _, label, _ in cfgmod.method_grid(paper)]
    assert labels == ["vi_k1", "vi_k5", "vi_k10", "vi_k50", "vi_k100", "adammcmc_sigma0.01",
                      "adammcmc_sigma0.05", "adammcmc_sigma0.1", "adammcmc_sigma0.5"]
    assert (paper.num_runs, paper.vi.num_draws, paper.adammcmc.num_samples) == (5, 50, 50)
    assert paper.evaluation.calib_samples == 10_000_000 and paper.evaluation.scaled_factor == 50
    quick = cfgmod.resolve("quick")
    assert [label for _, label, _ in cfgmod.method_grid(quick)] == ["vi_k10", "adammcmc_sigma0.1"]
    assert max(quick.evaluation.calib_bins) == 50


def _valid_report():
    m = {"method": "vi", "num_runs": 2, "num_draws": 5, "mad": {"5": 0.1}, "mad_r": {"5": 0.2},
         "mad_phi": {"5": 0.15}, "amplification": {"5": [0.5, 0.6], "10": [1.0, 1.1]},
         "fit": {"a": 0.01, "a_err": 0.001, "b": 1.0, "b_err": 0.1},
         "closure": {"5": {"model": 0.01, "truth": 0.011}, "10": {"model": 0.02, "truth": 0.02}}}
    return {"preset": "x", "config": {}, "timings": {}, "versions": {}, "device": {},
            "methods": {"vi_k10": m}}


def test_report_schema_accepts_and_rejects():
    validate_report(_valid_report(), calib_bins=(5,), scaled_bins=(5, 10), num_runs=2)
    cases = [
        (lambda r: r.pop("timings"), "report lacks 'timings'"),
        (lambda r: r["methods"]["vi_k10"]["fit"].pop("b_err"), "fit lacks 'b_err'"),
        (lambda r: r["methods"]["vi_k10"]["amplification"].update({"10": [1.0]}),
         r"has 1 runs, expected 2"),
        (lambda r: r["methods"]["vi_k10"]["mad"].update({"5": float("nan")}), "must be finite"),
        (lambda r: r["methods"]["vi_k10"]["closure"].pop("10"), r"lacks binnings \['10'\]"),
    ]
    for mutate, match in cases:
        r = _valid_report()
        mutate(r)
        with pytest.raises(ReportSchemaError, match=match):
            validate_report(r, calib_bins=(5,), scaled_bins=(5, 10), num_runs=2)


# ----------------------------------------------------------------------------- end to end

# few distinct compiled shapes: one same-noise binning (4 x 4, also the deviation grid), two
# scaled binnings; AdamMCMC without the Adam warm-up (one compiled chain runner)
TINY = ["data.num_train=200", "deterministic.num_epochs=4", "deterministic.chunk_epochs=2",
        "vi.num_epochs=4", "vi.chunk_epochs=2", "adammcmc.sigmas=0.5", "adammcmc.num_samples=4",
        "adammcmc.thinning=2", "adammcmc.num_adam_steps=0", "evaluation.calib_bins=4",
        "evaluation.deviation_bins=4", "evaluation.scaled_bins=2,4", "evaluation.fit_bins=2,4",
        "evaluation.calib_samples=2000"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A tiny study in four invocations: VI only (a whole study of one method), then the
    training of the remaining method, then the rest (resume), then once more."""
    from experiments.paper import run_pipeline

    out = tmp_path_factory.mktemp("study")
    cfg = cfgmod.resolve("tiny", TINY)
    vi_only = run_pipeline(cfg, out, methods=["vi"], progress=False)
    vi_report = json.loads((out / "report.json").read_text())
    first = run_pipeline(cfg, out, only="train", progress=False)
    second = run_pipeline(cfg, out, progress=False)
    third = run_pipeline(cfg, out, progress=False)
    return out, cfg, first, second, third, vi_only, vi_report


def test_pipeline_writes_a_valid_report(study_dir):
    out, cfg, *_ = study_dir
    report = json.loads((out / "report.json").read_text())
    e = cfg.evaluation
    validate_report(report, calib_bins=e.calib_bins, scaled_bins=e.scaled_bins,
                    num_runs=cfg.num_runs)
    assert set(report["methods"]) == {"vi_k10", "adammcmc_sigma0.5"}
    assert report["preset"] == "tiny" and report["config"] == cfgmod.to_dict(cfg)
    assert json.loads((out / "config.json").read_text()) == cfgmod.to_dict(cfg)
    assert {"data", "deterministic", "train_vi", "train_adammcmc", "evaluate",
            "figures"} <= set(report["timings"])
    assert report["device"]["platform"] == "cpu" and report["versions"]["jax"]
    md = (out / "report.md").read_text()
    assert "![coverage](figures/coverage.png)" in md and "`adammcmc_sigma0.5`" in md
    for name in ("data", "coverage", "mad", "deviation", "amplification", "closure", "losses"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    assert "stage evaluate" in (out / "log.txt").read_text()
    # AdamMCMC's acceptance per run, as saved with its draws, is in the diagnostics
    from bayesiamp_jax.posteriors.draws import load_draws

    diag = report["methods"]["adammcmc_sigma0.5"]["diagnostics"]
    for r in range(cfg.num_runs):
        info = load_draws(out / "draws" / "adammcmc_sigma0.5" / f"run{r}.msgpack").info
        assert diag["acceptance"][r] == pytest.approx(float(np.mean(info["acceptance_rate"])))
    assert set(diag["bin_fractions"]) == {"4"} and "Sampler diagnostics" in md
    # the finite-S floor of the MAD for S = 4 draws, 2 runs, 16 cells sits next to the MAD
    from bayesiamp_jax.evaluation.calibration import mad_floor

    floor = report["methods"]["adammcmc_sigma0.5"]["mad_floor"]
    assert floor == {"4": mad_floor(4, cfg.num_runs, 16).mean}
    assert f"({floor['4']:.3g})" in md and "finite-S floor" in md


def test_one_method_is_a_whole_study(study_dir):
    """--method vi trains, evaluates, draws and reports VI alone; adding the other method
    later trains and evaluates only that one."""
    out, cfg, first, second, _, vi_only, vi_report = study_dir
    assert vi_only.ran == ["data", "deterministic", "train_vi", "evaluate", "figures", "report"]
    assert set(vi_report["methods"]) == {"vi_k10"}
    assert first.ran == ["train_adammcmc"]
    assert second.ran == ["evaluate", "figures", "report"]
    log = (out / "log.txt").read_text()
    assert "evaluate: vi_k10 already done" in log
    full = json.loads((out / "report.json").read_text())["methods"]["vi_k10"]
    assert full["mad"] == vi_report["methods"]["vi_k10"]["mad"]


def test_second_invocation_skips_completed_stages(study_dir):
    out, _, first, second, third, *_ = study_dir
    assert first.skipped == ["data", "deterministic", "train_vi"]
    assert second.skipped == ["data", "deterministic", "train_vi", "train_adammcmc"]
    assert third.ran == ["report"]
    # the budget is probed when the study starts; the three resumed invocations keep it
    log = (out / "log.txt").read_text()
    assert log.count("budget (probe on this device") == 1
    assert log.count("when the study started (budget.json)") == 3


def test_report_numbers_match_saved_histograms(study_dir):
    """N_eq and coverage recomputed with plain numpy from the raw histogram files."""
    from bayesiamp_jax.evaluation import load_histograms
    from experiments.evaluate import histograms_path
    from experiments.stages import Study

    out, cfg, *_ = study_dir
    report = json.loads((out / "report.json").read_text())["methods"]["vi_k10"]
    study = Study(out, cfg)
    scaled = load_histograms(histograms_path(study, "vi_k10", "scaled"))
    for counts, n in zip(scaled.counts, scaled.num_samples, strict=True):
        assert counts.shape[:2] == (cfg.num_runs, cfg.vi.num_draws)
        assert np.all(counts.sum(axis=(2, 3)) <= n)
        f = counts / n
        mu, var = f.mean(axis=1), f.var(axis=1)
        ratio = np.where(var > 0, mu**2 / np.where(var > 0, var, 1), np.where(mu == 0, 0, np.inf))
        n_eq = ratio.sum(axis=(1, 2))
        k = str(counts.shape[2])
        np.testing.assert_allclose(report["amplification"][k], n_eq / cfg.data.num_train,
                                   rtol=1e-10)
    same = load_histograms(histograms_path(study, "vi_k10", "same_noise"))
    levels = (2 * np.arange(50) + 1) / 99
    for counts, n in zip(same.counts, same.num_samples, strict=True):
        k = str(counts.shape[2])
        if k not in report["mad"]:
            continue
        f = counts / n
        truth = 1.0 / (counts.shape[2] * counts.shape[3])
        covered = []
        for c in levels:
            lo = np.quantile(f, (1 - c) / 2, axis=1)
            hi = np.quantile(f, (1 + c) / 2, axis=1)
            covered.append(((lo <= truth) & (truth <= hi)).mean())
        assert report["mad"][k] == pytest.approx(np.mean(np.abs(np.array(covered) - levels)))


def test_figures_redraw_from_files(study_dir):
    from experiments.cli import main

    out, *_ = study_dir
    target = out / "figures" / "amplification.png"
    target.unlink()
    assert main(["figures", str(out)]) == 0
    assert target.stat().st_size > 1000


def test_training_resumes_from_checkpoint(tmp_path):
    """2 + 2 epochs with a restart in between equal 4 epochs in one go (the fixture's shapes,
    so nothing new is compiled)."""
    from experiments import data, deterministic
    from experiments.runtime import setup_logging
    from experiments.stages import Study

    setup_logging(None)
    base = cfgmod.resolve("tiny", TINY)
    results = []
    for name, steps in (("split", (2, 4)), ("straight", (4,))):
        for n in steps:
            study = Study(tmp_path / name, cfgmod.apply_override(
                base, f"deterministic.num_epochs={n}"))
            if n == steps[0]:
                data.make_data(study)
            deterministic.train_deterministic(study, progress=False)
        results.append(deterministic.load_deterministic(study))
    (p1, l1), (p2, l2) = results
    assert l1.shape == l2.shape == (2, 4)
    np.testing.assert_array_equal(l1, l2)
    for a, b in zip(_leaves(p1), _leaves(p2), strict=True):
        np.testing.assert_array_equal(a, b)


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_command_line_resolves_and_rejects(capsys, tmp_path):
    from experiments.cli import main

    assert main(["config", "--preset", "paper", "--set", "vi.kl_weights=10",
                 "--set", "num_runs=2", "--show-config", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["vi"]["kl_weights"] == [10.0] and shown["num_runs"] == 2
    assert shown["adammcmc"]["sigmas"] == [0.01, 0.05, 0.1, 0.5]
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(shown))
    assert main(["config", "--config", str(saved), "--set", "seed=3"]) == 0
    text = capsys.readouterr().out
    assert "seed = 3" in text and "num_runs = 2" in text
    assert "vi.kl_weights = 10 " in text and "# KL weights k" in text
    for argv, message in [
        (["paper", "--set", "vi.nope=3"], "unknown setting 'vi.nope'"),
        (["paper", "--set", "preset=foo"], "'preset' cannot be changed with --set"),
        (["paper", "--method", "nuts"], "--method nuts is not enabled"),
        (["paper", "--config", str(tmp_path / "none.json")], "does not exist"),
        (["paper", "--config", str(saved), "--preset", "tiny"], "not both"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- settings


def test_config_files_are_checked_by_key_and_type(tmp_path):
    good = cfgmod.to_dict(cfgmod.resolve("tiny"))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(good))
    assert cfgmod.load(path) == cfgmod.resolve("tiny")
    cases = [
        (lambda d: d["vi"].update(nope=1), r"c.json.vi: unknown setting\(s\) \['nope'\]"),
        (lambda d: d.update(extra=1), r"unknown setting\(s\) \['extra'\]"),
        (lambda d: d["vi"].update(num_epochs="20"), r"vi.num_epochs must be int, got '20'"),
        (lambda d: d["vi"].update(num_epochs=2.5), "vi.num_epochs must be int, got 2.5"),
        (lambda d: d["adammcmc"].update(enabled=1), "adammcmc.enabled must be true/false"),
        (lambda d: d["vi"].update(kl_weights=3), "vi.kl_weights must be a list"),
        (lambda d: d["network"].update(hidden=[16, "a"]), r"network.hidden\[1\] must be int"),
        (lambda d: d.update(data=[1]), "data must be a JSON object"),
        (lambda d: d["vi"].update(num_draws=1), "vi.num_draws must be >= 2"),
        (lambda d: d.update(preset="foo"), "preset must be one of"),
    ]
    for mutate, match in cases:
        d = json.loads(json.dumps(good))
        mutate(d)
        path.write_text(json.dumps(d))
        with pytest.raises(cfgmod.ConfigError, match=match):
            cfgmod.load(path)
    path.write_text("{not json")
    with pytest.raises(cfgmod.ConfigError, match="not readable JSON"):
        cfgmod.load(path)
    # an int where a float is expected is the same setting (and the same fingerprint)
    d = json.loads(json.dumps(good))
    d["data"]["r_mean"] = 4
    path.write_text(json.dumps(d))
    assert cfgmod.load(path).data.r_mean == 4.0 and isinstance(cfgmod.load(path).data.r_mean,
                                                                float)


def test_every_setting_has_a_description_and_descriptions_leave_the_config_alone():
    from experiments import settings

    rows = settings.describe(cfgmod.resolve("quick"))
    assert len(rows) > 50 and all(doc for _, _, doc in rows)
    # metadata is not data: a section's dict holds exactly its values
    assert cfgmod.to_dict(cfgmod.DataConfig()) == {"num_train": 10_000, "r_mean": 4.0,
                                                   "name": "ring", "dim": 2, "path": "",
                                                   "reference": "", "observable": "",
                                                   "num_holdout": -1, "holdout_path": "",
                                                   "preprocess": ""}
    shown = settings.show(cfgmod.resolve("quick"))
    assert "vi.kl_weights = 10" in shown and "# KL weights k" in shown
    # every line of --show-config is accepted back by --set and changes nothing
    cfg = cfgmod.resolve("quick")
    again = cfgmod.resolve("quick", [line.split("  #")[0].replace(" = ", "=").strip()
                                     for line in shown.splitlines()
                                     if not line.startswith("preset ")])
    assert again == cfg


def test_no_import_cycles_between_project_modules():
    """Every import of the project (module level or inside functions), as a graph of modules:
    no strongly connected component with more than one module."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = {}
    for pkg in ("bayesiamp_jax", "experiments"):
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    assert "experiments.paper" in modules and "bayesiamp_jax.evaluation.pipeline" in modules

    def imports(name, path):
        out = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        # an `if __name__ == "__main__":` block runs only as a program, never on import
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in
                                                  ast.unparse(n.test))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    out.add(t)
        return out

    graph = {m: imports(m, p) for m, p in modules.items()}

    def reachable(start):
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return seen

    cycles = sorted(m for m in graph if m in reachable(m))
    assert cycles == [], f"modules on an import cycle: {cycles}"


# ----------------------------------------------------------------------------- output folders


def test_two_writers_one_folder(tmp_path):
    """A live run's lock refuses a second run (one line, exit 2); a dead run's lock is taken."""
    import subprocess
    import sys

    from experiments.cli import main
    from experiments.stages import FolderLock, StudyError

    folder = tmp_path / "study"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from experiments.stages import FolderLock\n"
         f"with FolderLock({str(folder)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyError, match=f"in use by another run \\(pid {holder.pid} on"):
            FolderLock(folder).acquire()
        assert main(["paper", "--preset", "tiny", "--output", str(folder)]) == 2
    finally:
        holder.kill()
        holder.wait()
    # the killed holder left its lock behind: stale, so the next run takes it over
    assert json.loads((folder / "study.lock").read_text())["pid"] == holder.pid
    with FolderLock(folder) as lock:
        assert lock.holder()["pid"] != holder.pid
    assert not (folder / "study.lock").exists()


def test_no_clobber_of_another_configuration(study_dir, capsys):
    """A folder with finished results of another configuration is refused with what is there
    and how to proceed; nothing in it changes."""
    from experiments.cli import main
    from experiments.stages import StudyError, check_no_clobber

    out, cfg, *_ = study_dir
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    sets = [a for o in TINY for a in ("--set", o)]
    assert main(["paper", "--preset", "tiny", *sets, "--set", "seed=1", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "holds a study of preset 'tiny' with other settings (seed)" in err
    assert "--overwrite" in err and "finished stages this run would redo: data, " in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    other = cfgmod.apply_override(cfg, "seed=1")
    check_no_clobber(out, cfgmod.to_dict(other), overwrite=True)  # the user said so
    check_no_clobber(out, cfgmod.to_dict(cfg))  # the same study resumes
    # a setting no finished stage depends on replaces nothing
    from experiments.paper import fingerprints

    later = cfgmod.apply_override(cfg, "nuts.num_warmup=3")
    check_no_clobber(out, cfgmod.to_dict(later), fingerprints=fingerprints(later))
    changed = cfgmod.apply_override(cfg, "evaluation.solver_steps=3")
    with pytest.raises(StudyError, match=r"would redo: evaluate, figures\)"):
        check_no_clobber(out, cfgmod.to_dict(changed), fingerprints=fingerprints(changed))


def test_bad_output_folders_are_one_line_errors(tmp_path, capsys):
    from experiments.cli import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{oops")
    for output, message in [(a_file, "is a file, not a folder"),
                            (a_file / "sub", "cannot create output folder"),
                            (corrupt, "is not readable JSON")]:
        assert main(["paper", "--preset", "tiny", "--output", str(output)]
                    if output != corrupt else ["paper", "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_result_files_follow_the_umask(tmp_path):
    """Atomic writes give the mode a plain open() gives: 0666 minus the umask."""
    import os
    import stat

    from bayesiamp_jax.checkpoint import atomic_write_json

    old = os.umask(0o027)
    try:
        p = atomic_write_json(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)


def test_a_study_saved_before_a_setting_was_added_is_the_same_study(tmp_path):
    """config.json of an older version lacks a newer setting; with its default it is equal."""
    from experiments.stages import StudyError, check_no_clobber

    cfg = cfgmod.to_dict(cfgmod.resolve("tiny"))
    old = json.loads(json.dumps(cfg))
    defaults = cfgmod.to_dict(cfgmod.EvaluationConfig())
    newest = next(k for k, v in old["evaluation"].items() if v == defaults[k])
    del old["evaluation"][newest]
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "data.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_no_clobber(tmp_path, cfg, normalise=lambda d: cfgmod.to_dict(cfgmod.from_dict(d)))
    with pytest.raises(StudyError, match=f"evaluation.{newest}"):
        check_no_clobber(tmp_path, cfg)


def test_benchmarks_and_regression_share_the_configuration_system(capsys):
    """--set / --show-config / typed errors work the same for the other commands."""
    from benchmarks.run import main as bench
    from experiments import regression

    assert bench(["--size", "cpu", "--set", "draws=3", "--set", "fixed_steps=4,8",
                  "--show-config", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["name"], shown["draws"], shown["fixed_steps"]) == ("cpu", 3, [4, 8])
    with pytest.raises(SystemExit) as stop:
        bench(["--set", "draws=x"])
    assert stop.value.code == 2
    assert "cannot parse 'x' as int for setting 'draws'" in capsys.readouterr().err
    assert regression.main(["--set", "num_steps=7", "--show-config", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_steps"] == 7
