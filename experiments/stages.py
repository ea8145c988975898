"""Stage bookkeeping of a study folder: marker files, skipping completed stages, timings.

A stage is complete when ``stages/<name>.json`` exists and holds the stage's fingerprint (a hash
of the configuration it depends on). The marker is written atomically and only after all of
the stage's outputs, so an interrupted stage never counts as done and is simply run again
(long stages also keep their own checkpoints and continue from them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from bayesiamp_jax.checkpoint import atomic_write_json, atomic_write_text
from experiments.runtime import get_logger


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
        p = self.marker_path(name)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

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
        fn()
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
            try:
                m = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            out[m.get("stage", p.stem)] = float(m.get("seconds", float("nan")))
        return out
