"""Run the benchmarks and write one JSON file.

    python -m benchmarks.run --size tiny|cpu|paper [--only fm_epoch,generation ...]
                             [--output results.json] [--no-baseline] [--set draws=3 ...]
    python -m benchmarks.run --size cpu --show-config        # every size field, described

Prints one line per record and, for every figure with a PyTorch baseline on this machine,
the ratio project/baseline (time; < 1 means the project is faster) and the speed-up.
"""

from __future__ import annotations

from benchmarks import runner
from benchmarks.common import Size, format_record, sized
from benchmarks.runner import ratios

__all__ = ["format_record", "main", "ratios", "registry", "run", "sized"]


def registry() -> dict:
    """Benchmark name -> function(ctx) -> list of records, in running order."""
    from benchmarks import anatomy, generation, histogram, likelihood, quick_preset, training

    table = {}
    for module in (training, likelihood, generation, histogram, anatomy, quick_preset):
        table.update(module.BENCHMARKS)
    return table


def run(size: str | Size = "tiny", only=None, baseline: bool = True, seed: int = 0,
        progress: bool = True, device: dict | None = None, output=None) -> dict:
    """Run the selected benchmarks (default: all of ``registry()``); the JSON-ready report.

    With ``output``, the report so far is written atomically after every benchmark, so an
    interrupted run keeps what it measured.
    """
    return runner.run(registry(), size, only, baseline=baseline, seed=seed, progress=progress,
                      device=device, output=output)


def main(argv=None, only=None):
    return runner.main(registry(), argv, only, description=__doc__)


if __name__ == "__main__":  # the same parser as `bayesiamp benchmark run`
    from experiments.cli import module_main

    module_main("benchmark", ("run",))
