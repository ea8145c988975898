"""A study spread over several processes (machines) with JAX's multi-process runtime.

Every study command (``python -m experiments.paper``, ``bayesiamp paper|train|evaluate``)
takes ``--coordinator HOST:PORT --num-processes N --process-id I``: start the same command
once per process (``I = 0 … N-1``; process 0 hosts the coordinator at HOST:PORT), all with the
same ``--output`` folder on a filesystem every process sees. ``--coordinator auto`` lets
``jax.distributed.initialize()`` detect the cluster (SLURM, Open MPI, Cloud TPU, Kubernetes
jobs, or ``JAX_COORDINATOR_ADDRESS`` in the environment); ``--num-processes`` and
``--process-id`` are then optional. Without ``--coordinator`` nothing of this module runs a
collective: one process does everything, as before.

Work sharing (``mine``): the training units of a stage (its runs × grid points, in the order
of ``config.method_grid``) go round-robin to the processes, unit u to process u mod N; every
process trains its units and writes their files (distinct names), then all meet at a barrier
before the next stage. The evaluation shares the flattened (run, draw) axis of generation
(``bayesiamp_jax.evaluation.generate``: blocks of draws round-robin, counts all-gathered), so
every process holds all histograms; only process 0 writes the shared results.

Process 0 owns the output folder: it holds ``study.lock``, checks the configuration, writes
config.json, budget.json, log.txt, the stage markers, results/, figures/ and the report, and
tells the others what to do (``agree``); process I > 0 only writes the files of its own units
and its scratch folder ``process<I>/`` (log.txt, evaluation checkpoints). On a CPU the
collectives are gloo's (``jax_cpu_collectives_implementation``, set before initialising).
"""

from __future__ import annotations

import contextlib
import re
from typing import NamedTuple

import numpy as np

from experiments.settings import ConfigError

#: how long a process waits at a barrier for the slowest one (a training stage may be long)
BARRIER_TIMEOUT_S = 7 * 24 * 3600

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class Spec(NamedTuple):
    """What ``jax.distributed.initialize`` gets: address ("auto": detected), N and I."""

    coordinator: str
    num_processes: int | None
    process_id: int | None


def add_arguments(parser) -> None:
    """The three multi-process flags of every study command."""
    g = parser.add_argument_group(
        "more than one process (jax.distributed; every process runs the same command with the "
        "same --output on a shared filesystem)")
    g.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="address of process 0's coordinator, or 'auto' to detect the cluster "
                        "(SLURM, Open MPI, Cloud TPU, Kubernetes; JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", metavar="N", default=None,
                   help="number of processes of the study (with --coordinator)")
    g.add_argument("--process-id", metavar="I", default=None,
                   help="this process's index, 0 … N-1; process 0 writes the shared files")


def _int_flag(flag: str, value) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be an integer, got {value!r}") from None


def spec_from_args(args) -> Spec | None:
    """The validated ``Spec`` of parsed arguments (None without ``--coordinator``).

    Errors are one-line ``ConfigError``s naming the flag and its value.
    """
    coordinator = getattr(args, "coordinator", None)
    n = _int_flag("--num-processes", getattr(args, "num_processes", None))
    i = _int_flag("--process-id", getattr(args, "process_id", None))
    if coordinator is None:
        if n is not None or i is not None:
            flag = "--num-processes" if n is not None else "--process-id"
            raise ConfigError(f"{flag} {n if n is not None else i} needs --coordinator HOST:PORT "
                              "(or --coordinator auto)")
        return None
    if n is not None and n < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {n}")
    if i is not None and i < 0:
        raise ConfigError(f"--process-id must be >= 0, got {i}")
    if n is not None and i is not None and i >= n:
        raise ConfigError(f"--process-id {i} is out of range for --num-processes {n} "
                          f"(0 … {n - 1})")
    if coordinator == "auto":
        return Spec("auto", n, i)
    m = _HOST_PORT.match(coordinator)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise ConfigError(f"--coordinator must be HOST:PORT (port 1 … 65535) or 'auto', got "
                          f"{coordinator!r}")
    if n is None or i is None:
        missing = "--num-processes" if n is None else "--process-id"
        raise ConfigError(f"--coordinator {coordinator} needs {missing} (or use --coordinator "
                          "auto on a cluster jax detects)")
    return Spec(coordinator, n, i)


def initialize(spec: Spec | None) -> None:
    """``jax.distributed.initialize`` for ``spec`` (nothing for None); call it before any JAX
    computation. CPU collectives use gloo."""
    if spec is None:
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {"num_processes": spec.num_processes, "process_id": spec.process_id}
    if spec.coordinator != "auto":
        kwargs["coordinator_address"] = spec.coordinator
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # auto: no cluster detected
        raise ConfigError(f"--coordinator {spec.coordinator}: jax detected no cluster "
                          f"({_first_line(e)}); give --coordinator HOST:PORT --num-processes N "
                          "--process-id I") from None
    except RuntimeError as e:  # e.g. the coordinator is unreachable
        raise ConfigError(f"--coordinator {spec.coordinator}: jax.distributed.initialize "
                          f"failed: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")


# ------------------------------------------------------------------------------ processes


def process_count() -> int:
    import jax

    return jax.process_count()


def process_index() -> int:
    import jax

    return jax.process_index()


def is_main() -> bool:
    """True on process 0 (and in a one-process study)."""
    return process_index() == 0


def mine(items, process: int | None = None) -> list:
    """The items (units) of ``process`` (default: this one): item u goes to u mod N."""
    n = process_count()
    p = process_index() if process is None else process
    return [x for u, x in enumerate(items) if u % n == p]


def scratch_dir(outdir):
    """This process's own folder in the study folder (``process<I>/``; process 0: the folder)."""
    from pathlib import Path

    i = process_index()
    return Path(outdir) if i == 0 else Path(outdir) / f"process{i}"


_barriers = {"count": 0}


def barrier(name: str) -> None:
    """Wait until every process reaches this point (a no-op in a one-process study).

    The coordination service's barrier (timeout ``BARRIER_TIMEOUT_S``: a process may wait for
    a long training stage of another; gloo's collectives, which ``sync_global_devices`` uses,
    give up after 30 minutes); ``multihost_utils.sync_global_devices`` where it is absent.
    """
    if process_count() == 1:
        return
    from jax._src import distributed as jd
    from jax.experimental import multihost_utils

    _barriers["count"] += 1
    client = getattr(jd.global_state, "client", None)
    if client is not None and hasattr(client, "wait_at_barrier"):
        client.wait_at_barrier(f"bayesiamp:{_barriers['count']}:{name}",
                               BARRIER_TIMEOUT_S * 1000)
    else:
        multihost_utils.sync_global_devices(name)


def agree(value: bool) -> bool:
    """Process 0's ``value`` on every process (a one-process study: ``value``)."""
    if process_count() == 1:
        return bool(value)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(value))))


@contextlib.contextmanager
def owned_folder(lock, check):
    """Process 0 holds ``lock`` (a ``FolderLock``) and runs ``check()``; the others wait for its
    verdict and raise ``StudyError`` if it failed; at the end all wait for each other (process
    0 draws the figures alone). One process: ``with lock: check()``."""
    from experiments.stages import StudyError

    if process_count() == 1:
        with lock:
            check()
            yield
        return
    if not is_main():
        if not agree(False):
            raise StudyError("process 0 refused the output folder (see its error message)")
        yield
        barrier("study:end")
        return
    try:
        lock.acquire()
    except BaseException:
        agree(False)
        raise
    try:
        try:
            check()
        except BaseException:
            agree(False)
            raise
        agree(True)
        yield
        barrier("study:end")
    finally:
        lock.release()


#: stages only process 0 runs (the others go on to the next stage, which starts at a barrier)
MAIN_ONLY = ("data", "figures", "report")


def study_class():
    """``stages.Study`` in a one-process study, else ``SharedStudy``."""
    from experiments.stages import Study

    if process_count() == 1:
        return Study

    class SharedStudy(Study):
        """A ``Study`` whose stages every process runs together (see the module docstring)."""

        def run_stage(self, name, fingerprint, fn, clean=None):
            if name in MAIN_ONLY:
                return is_main() and super().run_stage(name, fingerprint, fn, clean)
            barrier(f"{name}:start")  # the outputs of the stages before are written
            if not agree(not self.is_done(name, fingerprint)):
                self.log.info("stage %-22s already complete (%s), skipped", name, fingerprint)
                self.skipped.append(name)
                return False
            if not is_main():
                self.log.info("stage %-22s started (process %d of %d)", name, process_index(),
                              process_count())
                barrier(f"{name}:clean")
                fn()
                barrier(f"{name}:end")
                self.ran.append(name)
                return True
            done = []

            def work():  # the base class cleans and marks; the others start after the cleaning
                barrier(f"{name}:clean")
                fn()
                barrier(f"{name}:end")
                done.append(True)

            ran = super().run_stage(name, fingerprint, work, clean)
            assert ran and done
            return True

    return SharedStudy
