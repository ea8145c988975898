"""Stage bookkeeping of a study folder: ownership, marker files, skipping completed stages.

A stage is complete when ``stages/<name>.json`` exists and holds the stage's fingerprint (a hash
of the configuration it depends on). The marker is written atomically and only after all of
the stage's outputs, so an interrupted stage never counts as done and is simply run again
(long stages also keep their own checkpoints and continue from them).

A folder belongs to one run at a time: ``FolderLock`` holds ``study.lock`` (pid, host, start
time) while a run works there; another run is refused while the owner is alive, and the lock of
a dead run on this host is taken over.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bayesiamp_jax.checkpoint import DamagedFileError, atomic_write_json, atomic_write_text
from experiments.runtime import get_logger


def read_json(path: str | Path):
    """The JSON content of ``path``; None if it is absent, unreadable or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


class StudyError(RuntimeError):
    """The output folder cannot be used as asked (the message says why and what to do)."""


_UNIT = re.compile(r"\bunit (\d+)")
_WHEN = re.compile(r"\b(epoch|step) (\d+)")


def diverged(stage: str, units: Sequence[tuple[str, int]], error: BaseException) -> StudyError:
    """One-line ``StudyError`` for a non-finite loss (``FloatingPointError``) of a library call
    that trained ``units``: (label, run) in the call's unit order. The library names the unit
    index u ("..., unit 3"; none for a one-unit call) and the epoch or step; the message
    names stage, label, run and epoch instead (the library's text follows in parentheses)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else "non-finite loss"
    found = _UNIT.search(text)
    u = int(found.group(1)) if found else (0 if len(units) == 1 else None)
    if u is not None and 0 <= u < len(units):
        label, run = units[u]
        who = f"{label} run {run}"
    else:
        who = "one of " + ", ".join(f"{label} run {run}" for label, run in units)
    when = _WHEN.search(text)
    at = f" at {when.group(1)} {when.group(2)}" if when else ""
    return StudyError(f"stage {stage}: training of {who} diverged{at} ({text}); check the "
                      "data and this stage's settings")


@contextmanager
def naming_units(stage: str, units: Sequence[tuple[str, int]]) -> Iterator[None]:
    """``with naming_units(stage, units): <library call>`` turns a ``FloatingPointError`` of
    the call into ``diverged(stage, units, error)``."""
    try:
        yield
    except FloatingPointError as e:
        raise diverged(stage, units, e) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class FolderLock:
    """Exclusive ownership of a study folder through ``<folder>/study.lock``.

    ``with FolderLock(folder):`` creates the lock file atomically (``O_EXCL``) with this
    process's pid and host; a lock of a live process (or of another host, whose processes
    cannot be checked) raises ``StudyError``; a lock left by a dead process on this host is
    removed and taken over. The lock is removed on exit.
    """

    NAME = "study.lock"

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / self.NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def holder(self) -> dict | None:
        """The recorded owner, {} for an unreadable lock, None without a lock."""
        try:
            d = json.loads(self.path.read_text())
            return d if isinstance(d, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> FolderLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                held = self.holder()
                if held is None:
                    continue  # released meanwhile
                pid, host = held.get("pid"), held.get("host")
                if host == self.owner["host"] and isinstance(pid, int) and not _alive(pid):
                    self._remove_stale(held)
                    continue
                if not held:  # half-written by a starting run, or damaged
                    raise StudyError(f"output folder {self.path.parent} is locked by "
                                     f"{self.path} with unreadable content; if no run uses the "
                                     "folder, delete that file") from None
                hint = ("" if host == self.owner["host"] else
                        f" (if that run is dead, delete {self.path})")
                raise StudyError(
                    f"output folder {self.path.parent} is in use by another run (pid {pid} on "
                    f"host {host}, since {held.get('started')}); wait for it to finish or "
                    f"choose another --output{hint}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            return self
        raise StudyError(f"could not lock output folder {self.path.parent} ({self.path} keeps "
                         "changing); is another run starting there?")

    def _remove_stale(self, held: dict) -> None:
        """Remove the lock of a dead run; a lock taken meanwhile by a live run is put back."""
        aside = self.path.with_name(f"{self.NAME}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if json.loads(aside.read_text()) != held:  # another run took it meanwhile
                try:
                    os.link(aside, self.path)  # restore unless a third run locked again
                except FileExistsError:
                    pass
        except (OSError, ValueError):
            pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if (self.holder() or {}).get("pid") == self.owner["pid"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def prepare_folder(outdir: str | Path) -> Path:
    """Create ``outdir`` if needed; ``StudyError`` if it is a file, under a file or read-only."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise StudyError(f"output folder {outdir} is a file, not a folder; choose another --output")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(f"cannot create output folder {outdir}: {e.strerror or e}; choose "
                         "another --output") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise StudyError(f"output folder {outdir} is not writable; choose another --output")
    return outdir


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_no_clobber(outdir: str | Path, config: dict, overwrite: bool = False,
                     results=("stages", "draws", "results"), normalise=None,
                     fingerprints: dict | None = None) -> None:
    """``StudyError`` if ``outdir`` holds results of another configuration (unless
    ``overwrite``): its config.json differs from ``config`` and one of ``results`` exists.

    ``normalise(saved_dict) -> dict`` completes a saved configuration (e.g. with the defaults
    of settings added since it was written); an error there counts as unreadable. With
    ``fingerprints`` (stage -> the new run's fingerprint) only finished stages whose
    fingerprint changes count: a changed setting that no finished stage depends on replaces
    nothing and is accepted.
    """
    outdir = Path(outdir)
    saved = outdir / "config.json"
    if overwrite or not saved.exists():
        return
    old = read_json(saved)
    if normalise is not None and isinstance(old, dict):
        try:
            old = normalise(old)
        except (ValueError, TypeError):
            old = None
    if old == config:
        return
    present = [r for r in results if (outdir / r).exists() and any((outdir / r).iterdir())]
    if not present:
        return
    stages = outdir / "stages"
    markers = {p.stem: read_json(p) for p in sorted(stages.glob("*.json"))} if stages.is_dir() \
        else {}
    done = sorted(markers)
    if fingerprints is not None:
        done = [s for s, m in markers.items() if s in fingerprints
                and (m or {}).get("fingerprint") != fingerprints[s]]
        if not done:
            return
    if isinstance(old, dict):
        a, b = _flat(old), _flat(config)
        diff = sorted(k for k in set(a) | set(b) if a.get(k, "?") != b.get(k, "?"))
        what = (f"a study of preset {old.get('preset')!r} with other settings "
                f"({', '.join(diff[:5])}{', …' if len(diff) > 5 else ''})")
    else:
        what = "a study whose config.json is unreadable"
    raise StudyError(f"output folder {outdir} holds {what} and its results "
                     f"({', '.join(present)}; finished stages this run would redo: "
                     f"{', '.join(done) or 'none'}); rerun with --overwrite to replace them, "
                     "or choose another --output")


class Study:
    """An output folder plus the resolved configuration; runs stages with markers."""

    def __init__(self, outdir: str | Path, cfg):
        self.outdir = Path(outdir)
        self.cfg = cfg
        self.log = get_logger()
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def path(self, *parts) -> Path:
        p = self.outdir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def marker_path(self, name: str) -> Path:
        return self.outdir / "stages" / f"{name}.json"

    def marker(self, name: str) -> dict | None:
        m = read_json(self.marker_path(name))
        return m if isinstance(m, dict) else None

    def is_done(self, name: str, fingerprint: str) -> bool:
        m = self.marker(name)
        return m is not None and m.get("fingerprint") == fingerprint

    def run_stage(self, name: str, fingerprint: str, fn: Callable[[], object],
                  clean: Callable[[], object] | None = None) -> bool:
        """Run ``fn`` unless stage ``name`` is complete with this fingerprint. True if it ran.

        If the stage was started or completed before with another fingerprint (the configuration
        changed), ``clean()`` first removes its stale outputs; an interrupted stage with the same
        fingerprint keeps its partial outputs and continues from them.
        """
        if self.is_done(name, fingerprint):
            self.log.info("stage %-22s already complete (%s), skipped", name, fingerprint)
            self.skipped.append(name)
            return False
        started = self.outdir / "stages" / f"{name}.started"
        previous = {self.marker(name) and self.marker(name).get("fingerprint")}
        if started.is_file():
            previous.add(started.read_text().strip())
        previous.discard(None)
        if previous - {fingerprint}:
            self.log.warning("stage %s: configuration changed since the last run; redoing it", name)
            if clean is not None:
                clean()
        self.marker_path(name).unlink(missing_ok=True)
        atomic_write_text(started, fingerprint)
        self.log.info("stage %-22s started", name)
        t0 = time.perf_counter()
        try:
            fn()
        except DamagedFileError as e:  # a file of an earlier stage: one line, no traceback
            hint = "" if "stages/" in str(e) else (" (in a study folder, delete also the marker "
                                                   "stages/<stage that wrote it>.json so that "
                                                   "the stage redoes it)")
            raise StudyError(f"stage {name}: {e}{hint}") from None
        seconds = time.perf_counter() - t0
        atomic_write_json(self.marker_path(name), {
            "stage": name, "fingerprint": fingerprint, "seconds": seconds,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        self.log.info("stage %-22s done in %.1f s", name, seconds)
        self.ran.append(name)
        return True

    def timings(self) -> dict:
        """Seconds per completed stage (from the markers, so earlier invocations count)."""
        out = {}
        folder = self.outdir / "stages"
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            m = read_json(p)
            if isinstance(m, dict):
                out[m.get("stage", p.stem)] = float(m.get("seconds", float("nan")))
        return out
