"""Compatibility name: the binnings live in ``bayesiamp_jax.binning``, below the evaluation (so
that ``datasets`` builds a problem's grids without importing the evaluation package).
``bayesiamp_jax.evaluation.binning`` is that very module object (same functions, same state).
"""

import sys

from bayesiamp_jax import binning as _binning

sys.modules[__name__] = _binning
