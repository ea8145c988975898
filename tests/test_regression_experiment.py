"""The regression experiment's command line and study folder: errors, --help, --set, the lock,
and fit stages whose fingerprints cover everything that determines them."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat

import pytest

from experiments.regression import PROG, Config, build_parser, main, run

MICRO = Config(sizes=(64,), num_steps=16, batch_size=32, num_members=2, num_draws=2,
               num_replicas=3, num_bootstrap=0, calibration="raw", prior_scan=(),
               num_validation=50, num_test=200, figures=False)


def _numbers(report: dict) -> str:
    return json.dumps({k: v for k, v in report.items() if k not in ("timings_s", "figures")},
                      sort_keys=True)


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{PROG}: error:") and match in err, err


def test_help_names_the_command_and_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {PROG} ")
    for action in build_parser()._actions:
        assert action.help, f"option {action.option_strings} has no help"


def test_show_config_lists_every_setting(capsys):
    assert main(["--show-config", "--set", "seed=3"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        assert f"{f.name} = " in out
    assert "seed = 3 " in out


def test_bad_settings_and_output_paths_are_one_line_errors(capsys, tmp_path):
    _one_line_error(capsys, ["--set", "nonsense=1"], "nonsense")
    _one_line_error(capsys, ["--set", "num_steps=many"], "num_steps")
    _one_line_error(capsys, ["--set", "sizes=1000,250"], "sizes")
    _one_line_error(capsys, ["--set", "space=phase"], "space")
    _one_line_error(capsys, ["--set", "num_bootstrap=0"], "calibration=rule needs num_bootstrap")
    _one_line_error(capsys, ["--set", "calibration=truth"], "calibration")
    assert Config().calibration == "rule"  # calibrated by default, raw one --set away
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_error(capsys, ["--output", str(afile)], "is a file")
    _one_line_error(capsys, ["-o", str(afile / "sub")], "cannot create output folder")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        _one_line_error(capsys, ["--output", str(locked)], "not writable")
        _one_line_error(capsys, ["--output", str(locked / "new")], "cannot create")


def test_a_folder_in_use_by_another_run_is_refused(capsys, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "study.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                "started": "now"}))
    _one_line_error(capsys, ["-o", str(out), "--preset", "tiny"], "in use by another run")
    assert not (out / "stages").exists()


def test_a_changed_seed_recomputes_and_a_damaged_cache_entry_is_refitted(tmp_path):
    old = os.umask(0o027)
    try:
        run(MICRO, tmp_path / "shared", progress=False)
        reused = run(dataclasses.replace(MICRO, seed=1), tmp_path / "shared", progress=False)
        fresh = run(dataclasses.replace(MICRO, seed=1), tmp_path / "fresh", progress=False)
        assert _numbers(reused) == _numbers(fresh)
        mode = stat.S_IMODE(os.stat(tmp_path / "fresh" / "report.json").st_mode)
        assert mode == 0o640
        # a truncated cache entry is refitted, not a traceback; the numbers stay the same
        entry = sorted((tmp_path / "fresh" / "cache").glob("vi_default_*"))[0]
        entry.write_bytes(entry.read_bytes()[:50])
        again = run(dataclasses.replace(MICRO, seed=1), tmp_path / "fresh", progress=False)
        assert _numbers(again) == _numbers(fresh)
    finally:
        os.umask(old)
    # a study folder: one marker per fit, a log, no lock left behind
    fresh = tmp_path / "fresh"
    assert {p.stem for p in (fresh / "stages").glob("*.json")} == {
        "replicas_N64", "vi_default_N64", "repulsive_default_N64", "report"}
    assert "stage vi_default_N64" in (fresh / "log.txt").read_text()
    assert not (fresh / "study.lock").exists()
    # a setting that only the ensemble's fit depends on refits that one alone
    before = {p.stem: json.loads(p.read_text()) for p in (fresh / "stages").glob("*.json")}
    run(dataclasses.replace(MICRO, seed=1, repulsion=2.0), fresh, progress=False)
    after = {p.stem: json.loads(p.read_text()) for p in (fresh / "stages").glob("*.json")}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"repulsive_default_N64", "report"}, changed
    saved = json.loads((tmp_path / "fresh" / "report.json").read_text())
    assert saved["config"]["seed"] == 1 and "stat_ratio_to_replica" in (
        saved["methods"]["vi"]["per_size"]["64"])
    seed0 = json.loads((tmp_path / "shared" / "report.json").read_text())
    assert seed0["config"]["seed"] == 1  # the folder now holds the seed-1 study
    assert _numbers(reused) != _numbers(run(MICRO, tmp_path / "shared", progress=False))


@pytest.mark.slow
def test_tiny_experiment_writes_report_and_resumes_identically(tmp_path):
    cfg = dataclasses.replace(Config(), sizes=(100, 200), num_steps=60, batch_size=50,
                              num_members=4, num_draws=8, num_replicas=4, num_bootstrap=3,
                              prior_scan=(0.3,), num_validation=300, num_test=2000)
    first = run(cfg, tmp_path, progress=False)
    for name in first["figures"]:
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.pdf").is_file()
    assert (tmp_path / "report.md").read_text().startswith("# Uncertainty-aware regression")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved["methods"]) == {"vi", "repulsive"}
    for m in ("vi", "repulsive"):
        for per in (saved["methods"][m]["per_size"], saved["methods"][m]["rule"]["per_size"]):
            assert set(per) == {"100", "200"}
            assert all(s["stat_ratio_to_replica"] > 0 for s in per.values())
    # the second run loads the cached fits: the same numbers, no refit
    second = run(cfg, tmp_path, progress=False)
    assert _numbers(second) == _numbers(first)
