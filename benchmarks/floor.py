"""The floor of each benchmark: FLOPs and bytes it must move, and this device's peaks.

Operation counts are for the vector field of one point (``field_flops``) times the number of
evaluations; multipliers give the cost of derivatives (forward = 1, exact divergence with d
JVPs = 1 + d, reverse mode of any of these = 3× it, per-step rematerialisation +1×).
The floor time is max(FLOPs / peak FLOP/s, bytes / bandwidth); ``fraction_of_peak`` is
floor time / measured time.

Run ``python -m benchmarks.floor`` to print the measured peaks.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

FLOAT_BYTES = 4


def field_flops(field) -> int:
    """Floating-point operations of one forward evaluation of the MLP for one point.

    2 per multiply-add of each dense layer, 1 per bias add, and 1 per hidden activation (ELU,
    counted as one operation although its exp is dearer) plus one per time-embedding feature.
    """
    widths = (field.input_dim,) + tuple(field.hidden) + (field.data_dim,)
    dense = sum(2 * a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return dense + sum(field.hidden) + 2 * field.num_frequencies


def divergence_multiplier(data_dim: int) -> int:
    """Forward pass plus one tangent pass per input dimension."""
    return 1 + data_dim


REVERSE_MULTIPLIER = 3  # value and gradient cost about 3× the value


def measure_peak_flops(n: int = 2048, repeats: int = 5) -> dict:
    """Float32 matmul throughput (GFLOP/s) of numpy and of jitted JAX on n × n matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n**3

    def best(fn):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return flops / min(ts) / 1e9

    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, precision="highest"))
    numpy_gflops = best(lambda: a @ b)
    jax_gflops = best(lambda: dot(ja, jb).block_until_ready())
    return {"matmul_n": n, "numpy_gflops": numpy_gflops, "jax_gflops": jax_gflops,
            "peak_gflops": max(numpy_gflops, jax_gflops)}


def measure_bandwidth(num_bytes: int = 256 * 2**20, repeats: int = 5) -> dict:
    """Memory bandwidth (GB/s) of a large copy (read + write counted) with numpy."""
    src = np.ones(num_bytes // FLOAT_BYTES, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        ts.append(time.perf_counter() - t0)
    return {"copy_bytes": num_bytes, "bandwidth_gbs": 2.0 * num_bytes / min(ts) / 1e9}


def measure_device() -> dict:
    """Peak matmul GFLOP/s and copy bandwidth of the default device (measured once per run)."""
    return {**measure_peak_flops(), **measure_bandwidth()}


def floor(flops: float, num_bytes: float, device: dict, seconds: float) -> dict:
    """Floor time and fraction of peak of a measurement taking ``seconds``."""
    t_flops = flops / (device["peak_gflops"] * 1e9)
    t_bytes = num_bytes / (device["bandwidth_gbs"] * 1e9)
    t_floor = max(t_flops, t_bytes)
    return {
        "flops": float(flops),
        "bytes": float(num_bytes),
        "floor_s": t_floor,
        "bound": "compute" if t_flops >= t_bytes else "memory",
        "fraction_of_peak": t_floor / seconds if seconds > 0 else None,
    }


def main():
    print(measure_device())


if __name__ == "__main__":
    main()
