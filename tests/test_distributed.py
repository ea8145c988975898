"""A study over several processes (``jax.distributed``, gloo on a CPU) equals one process.

Real multi-process runs: local subprocesses meet at a coordinator on a free port of this host.
The answer each is compared with is the one-process run of the same configuration (the
existing, separately tested path): histograms are integers and must be equal, and so must the
posterior draws (unit u of a vmapped program is the one-unit call) and every number derived
from them. Run as a script (``python tests/test_distributed.py generate PORT N I OUT``) this
file is the generation worker of ``test_generation_shared_over_two_processes``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300

# generation worker: 2 runs × 3 draws, 2 local devices per process, 1 draw per device per
# block: blocks [0, 1], [2, 3], [4, 5] go to processes 0, 1, 0 (an uneven split)
THETA = np.linspace(-1.8, -1.4, 6, dtype=np.float32).reshape(2, 3)
SAME_BINS, SCALED_BINS = [3, 5], [2, 4]


def _histograms(out: Path | None, label: str):
    """Same-noise and scaled counts of the worker's posterior (checkpoints in ``out``)."""
    import jax
    from test_evaluation_generate import ScaleField  # v = θ x, cheap to compile

    from bayesiamp_jax.evaluation import histogram_same_noise, histogram_scaled

    common = dict(has_run_axis=True, progress=False, chunk_size=256, keep_checkpoint=True)
    ckpt = (lambda name: None) if out is None else (lambda name: out / f"{label}_{name}.npz")
    same = histogram_same_noise(jax.random.key(3), ScaleField(), {"theta": THETA}, SAME_BINS,
                                1000, checkpoint_path=ckpt("same"), **common)
    scaled = histogram_scaled(jax.random.key(4), ScaleField(), {"theta": THETA}, SCALED_BINS,
                              30, checkpoint_path=ckpt("scaled"), **common)
    return {f"{mode}_{i}": np.asarray(c) for mode, h in (("same", same), ("scaled", scaled))
            for i, c in enumerate(h.counts)}


def _worker(port: str, n: str, i: str, out: str) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    from experiments import distributed

    distributed.initialize(distributed.Spec(f"127.0.0.1:{port}", int(n), int(i)))
    import jax

    assert jax.process_count() == int(n) and jax.local_device_count() == 2
    np.savez(Path(out) / f"counts{i}.npz", **_histograms(Path(out), f"p{i}"))
    print("OK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(commands, logs: Path, returncode: int = 0) -> list[str]:
    """Run the commands at once (cwd: the repository root); their outputs, after all ended
    (each must exit with ``returncode``)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                         env.get("PYTHONPATH", "")])
    procs = []
    for k, cmd in enumerate(commands):
        f = open(logs / f"proc{k}.log", "w+")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f,
                                       stderr=subprocess.STDOUT), f))
    outputs = []
    try:
        for p, _ in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        for p, f in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            f.seek(0)
            outputs.append((p.returncode, f.read()))
            f.close()
    for k, (rc, text) in enumerate(outputs):
        assert rc == returncode, f"command {commands[k]} exited with {rc}:\n{text[-4000:]}"
    return [text for _, text in outputs]


def _study(command: str, out: Path, args, num_processes: int = 1) -> list[list[str]]:
    base = [sys.executable, "-m", "experiments.cli", command, "--output", str(out),
            "--no-progress", *args]
    if num_processes == 1:
        return [base]
    port = str(_free_port())
    return [base + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes),
                    "--process-id", str(i)] for i in range(num_processes)]


def _numbers(tree, prefix=""):
    """{path: value} of every leaf of a JSON tree."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}.{key}")
                .items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}[{i}]")
                .items()}
    return {prefix: tree}


def _max_difference(a: dict, b: dict) -> float:
    """Largest |x − y| over the numeric leaves (the trees must have the same leaves)."""
    fa, fb = _numbers(a), _numbers(b)
    assert fa.keys() == fb.keys()
    worst = 0.0
    for k, x in fa.items():
        y = fb[k]
        if isinstance(x, bool) or not isinstance(x, int | float):
            assert x == y, k
        elif not (isinstance(x, float) and math.isnan(x) and math.isnan(y)):
            worst = max(worst, abs(x - y))
    return worst


# ----------------------------------------------------------------------------------- flags


def _spec(**kw):
    from experiments import distributed

    args = Namespace(coordinator=None, num_processes=None, process_id=None)
    for k, v in kw.items():
        setattr(args, k, v)
    return distributed.spec_from_args(args)


def test_flags_are_validated_with_one_line_errors_naming_flag_and_value():
    from experiments.distributed import Spec
    from experiments.settings import ConfigError

    assert _spec() is None
    assert _spec(coordinator="node1:1234", num_processes="4", process_id="3") == \
        Spec("node1:1234", 4, 3)
    assert _spec(coordinator="[::1]:99", num_processes="1", process_id="0") == \
        Spec("[::1]:99", 1, 0)
    assert _spec(coordinator="auto") == Spec("auto", None, None)
    for kw, message in [
        (dict(coordinator="h:1", num_processes="2", process_id="2"),
         "--process-id 2 is out of range for --num-processes 2 (0 … 1)"),
        (dict(coordinator="h:1", num_processes="0", process_id="0"),
         "--num-processes must be >= 1, got 0"),
        (dict(coordinator="h:1", num_processes="2", process_id="-1"),
         "--process-id must be >= 0, got -1"),
        (dict(coordinator="h:1", num_processes="two", process_id="0"),
         "--num-processes must be an integer, got 'two'"),
        (dict(coordinator="h", num_processes="2", process_id="0"),
         "--coordinator must be HOST:PORT (port 1 … 65535) or 'auto', got 'h'"),
        (dict(coordinator="h:70000", num_processes="2", process_id="0"), "got 'h:70000'"),
        (dict(coordinator="h:1", num_processes="2"), "--coordinator h:1 needs --process-id"),
        (dict(num_processes="2", process_id="1"), "--num-processes 2 needs --coordinator"),
    ]:
        with pytest.raises(ConfigError) as e:
            _spec(**kw)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_flags_stop_the_command_before_jax_starts(capsys, tmp_path):
    from experiments.cli import main

    rc = main(["train", "--preset", "tiny", "--output", str(tmp_path / "x"),
               "--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == ("error: --process-id 5 is out of range for "
                                       "--num-processes 2 (0 … 1)")
    assert not (tmp_path / "x").exists()


# what jax.distributed's cluster detection looks for (SLURM, Open MPI, Kubernetes, mpi4py)
CLUSTER = any(k in os.environ for k in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri",
                                        "KUBERNETES_SERVICE_HOST", "JAX_COORDINATOR_ADDRESS")) \
    or importlib.util.find_spec("mpi4py") is not None


@pytest.mark.skipif(CLUSTER, reason="runs inside a cluster jax could detect")
def test_auto_without_a_cluster_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "train", "--preset", "tiny",
                          "--output", str(tmp_path / "x"), "--coordinator", "auto"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and errors == [
        "error: --coordinator auto: jax detected no cluster (coordinator_address should be "
        "defined); give --coordinator HOST:PORT --num-processes N --process-id I"], out.stderr
    assert not (tmp_path / "x").exists()


def test_units_go_round_robin(monkeypatch):
    from experiments import distributed

    monkeypatch.setattr(distributed, "process_count", lambda: 3)
    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    assert distributed.mine(range(8)) == [1, 4, 7]
    assert distributed.mine("abcdefgh", 2) == ["c", "f"]
    shares = [distributed.mine(range(8), p) for p in range(3)]
    assert sorted(sum(shares, [])) == list(range(8))


# ------------------------------------------------------------------------ two processes


def test_generation_shared_over_two_processes(tmp_path):
    """Both processes end with the one-process counts (same noise and scaled mode)."""
    port = str(_free_port())
    outs = _launch([[sys.executable, __file__, "generate", port, "2", str(i), str(tmp_path)]
                    for i in range(2)], tmp_path)
    assert all("OK" in o for o in outs)
    here = _histograms(None, "")
    for i in range(2):
        with np.load(tmp_path / f"counts{i}.npz") as f:
            assert sorted(f.files) == sorted(here)
            for k, v in here.items():
                np.testing.assert_array_equal(f[k], v, err_msg=f"process {i}, {k}")
    # each draw of the scaled mode has its own noise, so the split is visible in the counts
    assert len({c.tobytes() for c in here["scaled_0"].reshape(6, -1)}) == 6
    # each process's checkpoint (resumable.run_chunks) holds the blocks it computed itself:
    # blocks of 2 draws (2 devices): process 1 computed block 1 = draws 2 and 3; the last
    # column counts non-finite points (none)
    from bayesiamp_jax.checkpoint import load_pytree

    saved = load_pytree(tmp_path / "p1_scaled.npz.g0.msgpack")
    counts = np.asarray(saved["state"])
    assert int(saved["done"]) == 1 and (counts[:, -1] == 0).all()
    np.testing.assert_array_equal(counts[2:4, :-1], here["scaled_0"].reshape(6, -1)[2:4])
    assert (counts[[0, 1, 4, 5]] == 0).all()


# VI only, no deterministic pre-training: 2 runs × 3 draws; compiles one trainer
SMALL = ["--preset", "tiny", "--method", "vi", "--set", "deterministic.enabled=false",
         "--set", "adammcmc.enabled=false", "--set", "data.num_train=200",
         "--set", "vi.num_epochs=4", "--set", "vi.chunk_epochs=2", "--set", "vi.num_draws=3",
         "--set", "evaluation.calib_bins=4", "--set", "evaluation.deviation_bins=4",
         "--set", "evaluation.scaled_bins=2,4", "--set", "evaluation.fit_bins=2,4",
         "--set", "evaluation.calib_samples=2000", "--set", "figures.label_sets=none"]


@pytest.mark.slow  # 5 CLI studies, 3 processes at once: ~55 s CPU, minutes on 2 loaded cores
def test_study_over_two_processes_equals_one_process(tmp_path):
    """``bayesiamp paper`` on 2 processes (the runs' VI units split, the evaluation's draws
    split) against 1 process, both at once; then the 1-process draws evaluated by 2 processes.

    Training: each process trains its unit in a program of another unit count than the
    1-process run's, which XLA may round differently in the last bits (seen on a Zen 3 CPU:
    weights equal to ~1e-7 relative; on a Zen 2 CPU bit for bit), so the draws are compared to
    float32 rounding. The evaluation of the same draws is the same bit for bit.
    """
    import shutil

    import chex

    from bayesiamp_jax.posteriors.draws import load_draws

    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    _launch(_study("paper", one, SMALL) + _study("paper", two, SMALL, 2), tmp_path)
    for run in range(2):
        rel = f"draws/vi_k10/run{run}.msgpack"
        a, b = load_draws(one / rel), load_draws(two / rel)
        chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-7)
    a, b = (json.loads((d / "report.json").read_text()) for d in (one, two))
    assert a["config"] == b["config"] and list(a["methods"]) == ["vi_k10"]
    assert "num_processes" not in a["device"] and b["device"]["num_processes"] == 2
    # process 0 owns the shared files; process 1 leaves only its log and no lock is left
    assert sorted(p.name for p in (two / "process1").iterdir()) == ["histograms", "log.txt"]
    assert not any((two / "process1" / "histograms").iterdir())
    assert not (two / "study.lock").exists() and (two / "stages/report.json").is_file()

    three.mkdir()  # the 1-process study up to its posteriors, evaluated by 2 processes
    shutil.copy(one / "config.json", three / "config.json")
    for folder in ("data", "draws"):
        shutil.copytree(one / folder, three / folder)
    (three / "stages").mkdir()
    for stage in ("data", "train_vi"):
        for suffix in (".json", ".started"):
            shutil.copy(one / "stages" / f"{stage}{suffix}", three / "stages" / f"{stage}{suffix}")
    _launch(_study("paper", three, SMALL, 2), tmp_path)
    for mode in ("same_noise", "scaled"):
        with np.load(one / f"histograms/vi_k10/{mode}.npz") as x, \
                np.load(three / f"histograms/vi_k10/{mode}.npz") as y:
            assert sorted(x.files) == sorted(y.files)
            for k in x.files:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{mode} {k}")
    c = json.loads((three / "report.json").read_text())
    assert _max_difference(a["methods"], c["methods"]) == 0.0


def test_a_refused_folder_stops_every_process(tmp_path):
    """Process 0 finds the folder locked by a live run: it and process 1 exit with an error."""
    out = tmp_path / "locked"
    out.mkdir()
    (out / "study.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                "started": "now"}))
    outs = _launch(_study("train", out, SMALL, 2), tmp_path, returncode=2)
    assert f"error: output folder {out} is in use by another run (pid {os.getpid()}" in outs[0]
    assert "error: process 0 refused the output folder (see its error message)" in outs[1]
    assert sorted(p.name for p in out.iterdir()) == ["study.lock"]


@pytest.mark.slow
def test_paper_study_over_two_processes_equals_one_process(tmp_path):
    """The whole tiny study (deterministic, VI, AdamMCMC, evaluation, figures, report) on 2
    processes: report.json's numbers equal the 1-process run's."""
    from test_experiments import TINY

    args = ["--preset", "tiny", *[a for s in TINY for a in ("--set", s)]]
    one, two = tmp_path / "one", tmp_path / "two"
    _launch(_study("paper", one, args) + _study("paper", two, args, 2), tmp_path)
    a, b = (json.loads((d / "report.json").read_text()) for d in (one, two))
    assert a["config"] == b["config"] and set(a["methods"]) == {"vi_k10", "adammcmc_sigma0.5"}
    assert _max_difference(a["methods"], b["methods"]) == 0.0
    assert (one / "models/deterministic.msgpack").read_bytes() == \
        (two / "models/deterministic.msgpack").read_bytes()
    # a second invocation finds every stage complete on both processes
    outs = _launch(_study("paper", two, args, 2), tmp_path)
    assert all("stages run: none" in o or "stages run: report" in o for o in outs)


if __name__ == "__main__" and sys.argv[1:2] == ["generate"]:
    _worker(*sys.argv[2:6])
