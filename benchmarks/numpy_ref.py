"""The reference's histogramming with numpy (no PyTorch needed): the baseline of ``histogram``."""

from __future__ import annotations

import numpy as np


def histogram_numpy(x: np.ndarray, edges) -> np.ndarray:
    """Counts (n_r · n_φ,) of points x (n, 2): polar map and ``np.histogram2d`` on the edges."""
    r = np.hypot(x[:, 0], x[:, 1])
    phi = np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi)
    counts, _, _ = np.histogram2d(r, phi, bins=[edges.r, edges.phi])
    return counts.reshape(-1)
