"""Hand-written kernels: ``fused_counts`` (Pallas fused generation + binning for GPUs)."""

from bayesiamp_jax.kernels.fused_generation import KERNEL_SOLVERS, fused_counts

__all__ = ["KERNEL_SOLVERS", "fused_counts"]
