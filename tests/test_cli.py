"""The one command line: ``bayesiamp COMMAND`` and its ``python -m`` forms.

Known answers come from outside ``experiments.cli``: the commands and options the issue asks
for (and each module's own parser), the module form's output against the command's, and the
figure names a finished ring study must get, drawn from hand-made histograms (multinomial
counts of the ring's truth-quantile cells; no study is trained).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from experiments import cli
from experiments import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["--preset", "--set", "--config", "--show-config"]
PAPER = [*STUDY, "--output", "--method", "--overwrite", "--no-progress", "--coordinator",
         "--num-processes", "--process-id"]
OPTIONS = {
    "paper": PAPER, "train": PAPER, "evaluate": PAPER, "config": STUDY,
    "dimension": [*STUDY, "--dims", "--output", "--overwrite"],
    "compare": [*STUDY, "--families", "--repulsive", "--output", "--overwrite", "--no-progress"],
    "regression": [*STUDY, "--output", "--seed", "--space"],
    "budget": [*STUDY, "--json"],
    "figures": ["outdir"], "report": ["outdir"],
    "demo": ["--epochs", "--num-train", "--num-samples", "--seed"],
}
# the module forms and the command each is (benchmarks.run: `benchmark run`)
MODULE_FORMS = {"experiments.paper": ["paper"], "experiments.dimension": ["dimension"],
                "experiments.compare": ["compare"],
                "experiments.regression": ["regression"], "experiments.figures": ["figures"],
                "experiments.budget": ["budget"], "experiments.demo": ["demo"],
                "experiments.cli": [], "benchmarks.run": ["benchmark", "run"]}
# the 13 benchmark mains; helpers without a main are no benchmark
BENCHMARK_MODULES = ["anatomy", "estimators", "floor", "generation", "gpu_fused", "histogram",
                     "interleaved", "likelihood", "quick_preset", "report", "run", "solver_study",
                     "training"]
HELPERS = ["common", "context", "fast", "numpy_ref", "runner", "torch_ref"]


def run_main(argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``cli.main(argv)``; argparse's exits are statuses."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as e:
            status = e.code or 0
    return status, out.getvalue(), err.getvalue()


def run_module(module: str, argv) -> tuple[int, str]:
    """(exit status, stdout) of ``python -m module argv``, run in this process."""
    out, saved = io.StringIO(), sys.argv
    sys.argv = [module, *argv]
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as e:
        status = e.code or 0
    finally:
        sys.argv = saved
    return status, out.getvalue()


def test_help_lists_every_command():
    status, out, _ = run_main(["--help"])
    assert status == 0
    listed = [line.split()[0] for line in out.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == list(cli.COMMANDS)
    assert set(listed) >= {"paper", "dimension", "regression", "budget", "figures", "benchmark",
                           "demo", "train", "evaluate", "report", "config"}
    assert run_main([])[0] == 2  # no command: the usage, and a usage error
    status, _, err = run_main(["papr"])
    assert status == 2 and err.count("\n") == 1 and "unknown command 'papr'" in err


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_each_command_documents_its_options(command):
    status, out, _ = run_main([command, "--help"])
    assert status == 0
    assert out.startswith(f"usage: bayesiamp {command} ")
    missing = [o for o in OPTIONS[command] if o not in out]
    assert not missing, f"bayesiamp {command} --help lacks {missing}"


def test_benchmark_lists_and_dispatches_every_module():
    names = cli.benchmark_modules()
    assert set(BENCHMARK_MODULES) <= set(names) and not set(HELPERS) & set(names)
    status, out, _ = run_main(["benchmark", "--help"])
    assert status == 0
    for name in names:
        assert f"\n  {name} " in out
    torch = importlib.util.find_spec("torch") is not None
    for name in names:
        if name == "interleaved" and not torch:  # its main imports torch before parsing
            continue
        status, out, _ = run_main(["benchmark", name, "--help"])
        assert status == 0 and "usage:" in out, name
        # named as the command, or by its own fixed prog
        assert f"bayesiamp benchmark {name}" in out or f"benchmarks.{name}" in out, name
    status, out, _ = run_main(["benchmark", "run", "--help"])
    assert all(o in out for o in ("--size", "--only", "--output", "--set", "--show-config"))
    status, _, err = run_main(["benchmark", "nope"])
    assert status == 2 and "unknown benchmark 'nope'" in err
    # a benchmark's own configuration, through the command: what benchmarks.common defines
    from benchmarks.common import get_size

    status, out, _ = run_main(["benchmark", "run", "--size", "cpu", "--set", "draws=3",
                               "--show-config", "json"])
    assert status == 0
    shown = json.loads(out)
    expected = json.loads(json.dumps(dataclasses.asdict(get_size("cpu"))))
    assert shown == expected | {"draws": 3}


@pytest.mark.parametrize("module", sorted(MODULE_FORMS))
def test_module_forms_are_the_same_parser(module):
    command = MODULE_FORMS[module]
    status, out = run_module(module, ["--help"])
    # python -m experiments.cli --help is bayesiamp --help
    assert (status, out) == run_main([*command, "--help"])[:2]
    assert status == 0 and "usage: bayesiamp" in out


@pytest.mark.parametrize("module, argv", [
    ("experiments.paper", ["--preset", "tiny", "--set", "vi.kl_weights=1,10"]),
    ("experiments.dimension", ["--preset", "quick", "--set", "seed=4"]),
    ("experiments.budget", ["--preset", "paper", "--set", "num_runs=2"]),
    ("experiments.regression", ["--preset", "tiny", "--seed", "3"]),
])
def test_module_forms_resolve_the_same_configuration(module, argv):
    command = MODULE_FORMS[module]
    status, out = run_module(module, [*argv, "--show-config", "json"])
    assert status == 0
    assert json.loads(out) == json.loads(run_main([*command, *argv, "--show-config", "json"])[1])
    if module != "experiments.regression":  # the overrides arrived: the study's own resolver
        overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        assert json.loads(out) == json.loads(json.dumps(cfgmod.to_dict(
            cfgmod.resolve(argv[1], overrides))))
    else:
        assert json.loads(out)["seed"] == 3


# ----------------------------------------------------------------------------- figures

OVERRIDES = ["evaluation.calib_bins=4", "evaluation.deviation_bins=4",
             "evaluation.scaled_bins=2,4", "evaluation.fit_bins=2,4", "figures.label_sets=none"]
# what a finished ring study with both headline methods must draw (experiments.figures)
EXPECTED = {"data", "coverage", "mad", "deviation", "amplification", "amplification_corrected",
            "closure", "losses", "coverage_vi", "coverage_adammcmc"}


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A ring study folder as the evaluation leaves it: config.json, data/run0.npz and
    results/<label>.json, from multinomial histograms of draws around the truth."""
    import jax

    from bayesiamp_jax import evaluation as ev
    from bayesiamp_jax.evaluation.generate import PosteriorHistograms

    out = tmp_path_factory.mktemp("finished")
    cfg = cfgmod.resolve("tiny", OVERRIDES)
    (out / "config.json").write_text(json.dumps(cfgmod.to_dict(cfg)))
    rng = np.random.default_rng(0)
    (out / "data").mkdir()
    r = cfg.data.r_mean + rng.gamma(2.0, 0.5, cfg.data.num_train)  # ring-like points (drawn)
    phi = rng.uniform(-np.pi, np.pi, cfg.data.num_train)
    np.savez(out / "data" / "run0.npz", x=np.stack([r * np.cos(phi), r * np.sin(phi)], -1))
    runs, draws = cfg.num_runs, 5

    def histograms(ns, per_draw, mode):
        binnings = [ev.quantile_binning(n, cfg.data.r_mean) for n in ns]
        counts = []
        for b, m in zip(binnings, per_draw, strict=True):
            p = rng.dirichlet(200 * b.truth.reshape(-1), size=(runs, draws))  # model spread
            c = np.stack([[rng.multinomial(m, p[r, s]) for s in range(draws)]
                          for r in range(runs)])
            counts.append(c.reshape(runs, draws, *b.shape).astype(np.int64))
        return PosteriorHistograms(tuple(counts), tuple(per_draw), tuple(binnings), mode)

    e = cfg.evaluation
    for method, label, hyper in cfgmod.method_grid(cfg):
        same = histograms(e.calib_bins, [e.calib_samples] * len(e.calib_bins), "same_noise")
        scaled = histograms(e.scaled_bins, [e.scaled_factor * n * n for n in e.scaled_bins],
                            "scaled")
        result = ev.analyse_saved(jax.random.key(1), same, scaled, cfg.data.num_train,
                                  fit_bins=list(e.fit_bins), closure_repeats=5)
        summary = {"method": method, "hyper": hyper, "num_runs": runs, "num_draws": draws}
        summary |= ev.summarise(result, deviation_bins=e.deviation_bins)
        (out / "results").mkdir(exist_ok=True)
        (out / "results" / f"{label}.json").write_text(json.dumps(summary))
    return out


def test_python_m_figures_draws_the_figures(finished_study):
    """``python -m experiments.figures DIR`` (which once exited 0 doing nothing) draws the
    study's figures and lists them as ``bayesiamp figures DIR`` does (the same parser:
    test_module_forms_are_the_same_parser; the in-process form: test_experiments)."""
    index = finished_study / "figures" / "index.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "experiments.figures", str(finished_study)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = json.loads(index.read_text())
    assert {Path(p).stem for p in written if "/" not in p.removeprefix("figures/")} >= EXPECTED
    assert proc.stdout.split() == [str(finished_study / p) for p in written]
    for p in written:
        assert (finished_study / p).stat().st_size > 1000, p
    # not a study folder: one line, exit 2
    status, _, err = run_main(["figures", str(finished_study / "results")])
    assert status == 2 and "holds no config.json" in err and err.count("\n") == 1
