"""Benchmarks of bayesiamp_jax with a side-by-side PyTorch/zuko baseline.

    python -m benchmarks.run --size tiny|cpu|paper [--only a,b] [--output results.json]
    python -m benchmarks.<module> --size ...      # training, likelihood, generation, histogram,
                                                   # quick_preset; floor prints the device peaks
    python -m benchmarks.report results.json      # markdown tables (see RESULTS.md)

Modules: ``common`` (timing, sizes, environment), ``floor`` (FLOP/byte floors, device peaks),
``context`` (shared state of a run), ``fast`` (fast paths and their simple references),
``torch_ref`` / ``numpy_ref`` (baselines), one module per benchmark family, ``runner`` (runs a
table of benchmarks, the command line), ``run`` (every benchmark), ``report``.
"""
