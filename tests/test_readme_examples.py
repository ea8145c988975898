"""The README's own-data examples run as written, on conditional and unconditional data.

The python blocks of the "own data" section (README.md, else the docs page it links to,
docs/guide/own-data.md) are extracted and executed in a scratch
folder holding a ``train.npz`` and a ``reference.npz`` of the dimensions the example asks for
(read from its ``load_npz`` calls); only sizes are shrunk (epochs, draws, points, events) by
substituting keyword values, never the code's structure. The unconditional run is the same code
with ``cond_dim=0`` and files without ``c``. The command-line form (``my_study.py`` and the
``python -m experiments.paper`` block) runs as a slow test.
"""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = re.compile(r"^(#+) .*your own data", re.IGNORECASE)
# sizes only: (pattern, replacement) applied to the example's code
SHRINK = [(r"\b(num_epochs)=[\d_]+", r"\1=2"), (r"\b(num_samples)=[\d_]+", r"\1=400"),
          (r"\b(samples_per_cell)=[\d_]+", r"\1=2"),
          (r"(sample_vi\([^()]*(?:\([^()]*\))?[^()]*,\s*)\d+\)", r"\g<1>5)"),
          (r"\b10_000\b", "2_000")]
NUM_EVENTS = 2_000


def _pages() -> list[Path]:
    """README.md, then the documentation pages (the README links to docs/ for the details)."""
    return [p for p in [README, *sorted((ROOT / "docs").rglob("*.md"))] if p.is_file()]


def _section() -> tuple[str, list[str], list[str]]:
    """(where, python blocks, bash blocks) of the first own-data section of README.md or
    docs/**/*.md."""
    for page in _pages():
        lines = page.read_text().splitlines()
        start = next((i for i, line in enumerate(lines) if SECTION.match(line)), None)
        if start is None:
            continue
        level, end, fenced = len(SECTION.match(lines[start]).group(1)), len(lines), False
        for i in range(start + 1, len(lines)):  # the next heading as high, outside code blocks
            fenced ^= lines[i].startswith("```")
            if not fenced and re.match(rf"^#{{1,{level}}} ", lines[i]):
                end = i
                break
        text = "\n".join(lines[start:end])
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        return (f"{page.relative_to(ROOT)}: {lines[start]}",
                [b for lang, b in blocks if lang == "python"],
                [b for lang, b in blocks if lang in ("bash", "sh", "shell")])
    pytest.skip("neither README.md nor docs/**/*.md has a heading matching 'your own data' "
                "(the own-data section was renamed or removed): update SECTION in "
                "tests/test_readme_examples.py")


def _library_example() -> str:
    heading, python, _ = _section()
    runnable = [b for b in python if "load_npz" in b]
    assert runnable, f"{heading!r} has no python block that loads data (load_npz)"
    return runnable[0]


def _dims(code: str) -> tuple[int, int]:
    found = re.search(r"load_npz\([^)]*?\bdim=(\d+)(?:,\s*cond_dim=(\d+))?", code)
    return (3, 1) if found is None else (int(found.group(1)), int(found.group(2) or 0))


def _write_data(folder: Path, dim: int, cond_dim: int, num: int) -> None:
    """Events of a smooth law in d dimensions; with conditions, the mean shifts with c."""
    rng = np.random.default_rng(0)
    for name, n in (("train.npz", num), ("reference.npz", 4 * num)):
        x = rng.normal(size=(n, dim)).astype(np.float32)
        arrays = {"x": x}
        if cond_dim:
            c = rng.uniform(0.0, 1.0, (n, cond_dim)).astype(np.float32)
            arrays = {"x": x + c.sum(1, keepdims=True), "c": c}
        np.savez(folder / name, **arrays)


def _shrink(code: str) -> str:
    for pattern, replacement in SHRINK:
        code = re.sub(pattern, replacement, code)
    return code


def _variant(code: str, conditional: bool, folder: Path) -> str:
    """The example for conditional data (as written) or unconditional (cond_dim=0), with data
    files of its dimensions written to ``folder``."""
    dim, cond_dim = _dims(code)
    if not conditional:
        code = re.sub(r"\bcond_dim=\d+", "cond_dim=0", code)
        cond_dim = 0
    _write_data(folder, dim, cond_dim, NUM_EVENTS)
    return code


def _run(code: str, folder: Path, conditional: bool) -> dict:
    (folder / "readme_example.py").write_text(code)
    try:  # as a module (flax modules are dataclasses: their module must be importable)
        return runpy.run_path(str(folder / "readme_example.py"), run_name="readme_example")
    except TypeError as e:
        if not conditional and "NoneType" in str(e):
            pytest.fail(f"the own-data example fails on unconditional data (cond_dim=0, the "
                        f"module gets c=None; concatenate only the arrays that exist): {e}")
        raise


@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "unconditional"])
def test_readme_example_field_runs_on_its_data(conditional, tmp_path, monkeypatch):
    """The example up to its field (imports, load_npz, the network, ModuleField), then the
    field on the training events: velocities (N, d), finite (a few seconds; the whole example
    is the slow test below)."""
    import jax

    code = _shrink(_library_example())
    tree = ast.parse(code)
    upto = next(i for i, n in enumerate(tree.body) if isinstance(n, ast.Assign)
                and "ModuleField" in ast.unparse(n.value))
    head = ast.unparse(ast.Module(tree.body[:upto + 1], []))
    code = _variant(head, conditional, tmp_path)
    monkeypatch.chdir(tmp_path)
    ns = _run(code + "\n_v = field(field.init(jax.random.key(0)), 0.5, train.x[:7], "
                     "None if train.c is None else train.c[:7])\n", tmp_path, conditional)
    assert ns["_v"].shape == ns["train"].x[:7].shape
    assert (ns["train"].c is None) != conditional
    assert np.all(np.isfinite(np.asarray(ns["_v"]))) and jax.numpy.ndim(ns["_v"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "unconditional"])
def test_readme_library_example_runs(conditional, tmp_path, monkeypatch):
    """The whole library example at tiny sizes (~30 s of CPU each, mostly compilation)."""
    code = _variant(_shrink(_library_example()), conditional, tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = _run(code, tmp_path, conditional)
    summary = namespace["summary"]
    assert summary["mad"]
    assert all(0.0 <= v <= 1.0 for v in summary["mad"].values())
    assert any((tmp_path / "outputs" / "mine").glob("*.png"))


@pytest.mark.slow
def test_readme_command_line_example_runs(tmp_path, monkeypatch):
    """my_study.py (the imports and MyField of the library example, and the README's block)
    and the README's ``python -m experiments.paper`` command at tiny sizes."""
    from experiments import paper

    heading, python, bash = _section()
    library = ast.parse(_library_example())
    head = [n for n in library.body if isinstance(n, ast.Import | ast.ImportFrom | ast.ClassDef)]
    module = next(b for b in python if "def my_field" in b or "network.module" in b)
    (tmp_path / "my_study.py").write_text(ast.unparse(head) + "\n\n" + module)
    command = next(b for b in bash if "data.observable=my_study" in b)
    words = shlex.split(command.replace("\\\n", " "))
    # `bayesiamp paper ...` or `python -m experiments.paper ...`
    first = next(i for i, w in enumerate(words) if w in ("paper", "experiments.paper"))
    args = words[first + 1:]
    args[args.index("--preset") + 1] = "tiny"
    dim, cond_dim = _dims(_library_example())
    _write_data(tmp_path, dim, cond_dim, 2_000)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_study", None)
    small = ["--no-progress", "--set", "data.num_train=400", "--set", "adammcmc.enabled=false",
             "--set", "figures.label_sets=none"]
    assert paper.main(args + small) == 0, heading
    assert (tmp_path / "outputs" / "mine" / "report.md").is_file()
