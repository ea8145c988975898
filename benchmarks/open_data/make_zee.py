"""Convert the CMS 2011A Z → ee candidates (CSV) into the study's small ``.npz`` files.

Source: ``Data/Zee_Run2011A.csv`` of "CMS Jupyter materials (English)", CMS Open Data
education (github.com/cms-opendata-education/cms-jupyter-materials-english), CC BY 4.0;
18,885 events with two electron candidates (pT > 25 GeV), derived from CMS 2011A open data.

Columns kept (float32, physical units), one row per event:

    x = (pT₁ [GeV], η₁, pT₂ [GeV], η₂, Δφ = (φ₂ − φ₁) mod 2π in [0, 2π))

Δφ in [0, 2π) puts the back-to-back peak (Δφ ≈ π) in the middle of the interval, not at its
edges; the study preprocesses it with ``periodic:0:2pi``. Dropped: the charges Q₁, Q₂ (discrete,
the flow is continuous; 77 % of the pairs are opposite-sign and m_ee does not depend on them),
the detector region type (EB/EE, a function of η), the identification and isolation variables
(not needed for m_ee and the pair pT; the selection is already applied), Run and Event (used
only for the split). The electrons keep the CSV's order (not pT-ordered: no pT₁ > pT₂ edge).

Split rule: the events are sorted by (Run, Event), permuted with ``numpy.random.default_rng(
2011)`` and cut into train (first 4,000), held-out (next 7,000) and reference (the remaining
7,885). ``zee_events.npz`` holds train then held-out (x, 11,000 rows: a study with
``data.num_train=4000``, one run, trains on rows [0, 4000) and holds out the rest);
``zee_reference.npz`` holds the reference (``data.reference``, the truth stand-in).

    python -m benchmarks.open_data.make_zee Zee_Run2011A.csv [--out benchmarks/open_data]

``--frame pair`` writes the same events, rows and split in the dilepton frame instead,
p = (m_ee, pT_ee, y_ee, cos θ*, φ*) (Collins–Soper; ``pair_frame``), to ``zee_pair_events.npz``
and ``zee_pair_reference.npz`` (computed in float64 from the CSV, stored as float32).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.open_data import pair_frame

NUM_TRAIN = 4_000
NUM_HOLDOUT = 7_000
SEED = 2011
COLUMNS = ("pt1", "eta1", "pt2", "eta2", "dphi")
FRAMES = {"lab": ("zee", COLUMNS), "pair": ("zee_pair", pair_frame.COLUMNS)}


def read_csv(path) -> np.ndarray:
    """The CSV as a structured array (one-line ValueError if a needed column is missing)."""
    d = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    need = ("Run", "Event", "pt1", "eta1", "phi1", "pt2", "eta2", "phi2")
    missing = [n for n in need if n not in (d.dtype.names or ())]
    if missing:
        raise ValueError(f"csv {str(path)!r} lacks the columns {missing}")
    return d


def physical_columns(d, frame: str = "lab") -> np.ndarray:
    """(N, 5) float32: pT₁, η₁, pT₂, η₂, Δφ = (φ₂ − φ₁) mod 2π (frame "lab"), or those mapped
    to (m_ee, pT_ee, y_ee, cos θ*, φ*) in float64 first (frame "pair")."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {tuple(FRAMES)}, got {frame!r}")
    dphi = np.mod(d["phi2"].astype(np.float64) - d["phi1"], 2 * np.pi)
    x = np.stack([d["pt1"], d["eta1"], d["pt2"], d["eta2"], dphi], axis=1).astype(np.float64)
    if frame == "pair":
        x = pair_frame.to_pair(x)
    return x.astype(np.float32)


def split(d, frame: str = "lab") -> tuple[np.ndarray, np.ndarray]:
    """(events = train then held-out, reference) by the module's rule (the same rows in both
    frames)."""
    order = np.lexsort((d["Event"], d["Run"]))
    x = physical_columns(d[order], frame)
    x = x[np.random.default_rng(SEED).permutation(len(x))]
    n = NUM_TRAIN + NUM_HOLDOUT
    if len(x) <= n:
        raise ValueError(f"need more than {n} events, got {len(x)}")
    return x[:n], x[n:]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", help="Zee_Run2011A.csv")
    p.add_argument("--out", default=str(Path(__file__).parent), help="output folder")
    p.add_argument("--frame", default="lab", choices=tuple(FRAMES),
                   help="lab: (pT1, eta1, pT2, eta2, dphi); pair: (m, pT, y, cos theta*, phi*)")
    a = p.parse_args(argv)
    events, reference = split(read_csv(a.csv), a.frame)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem, columns = FRAMES[a.frame]
    np.savez_compressed(out / f"{stem}_events.npz", x=events)
    np.savez_compressed(out / f"{stem}_reference.npz", x=reference)
    print(f"{out}/{stem}_events.npz: {len(events)} events (train {NUM_TRAIN}, held-out "
          f"{len(events) - NUM_TRAIN}); {out}/{stem}_reference.npz: {len(reference)} events; "
          f"columns {', '.join(columns)}")


if __name__ == "__main__":
    main()
