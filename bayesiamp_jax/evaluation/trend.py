"""Results of several studies against a parameter (e.g. the dimension d of the shell).

``trend_rows({x: report}, ...)`` reads the per-method summaries of study reports (the
``methods`` entry of a report.json, each a ``summarise`` dict with ``mad_floor``) into flat
rows; ``trend_markdown`` prints them as a table and ``figures.plot_trend`` draws them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bayesiamp_jax.evaluation.summary import key_cells

COLUMNS = ("x", "label", "mad", "mad_floor", "n_cells", "n_eq", "amplification",
           "n_eq_corrected", "amplification_corrected", "averaging_model", "averaging_true",
           "misspecification_share", "ks_amplification", "fit_a", "fit_b", "fit_b_err",
           "fit_corrected_a", "fit_corrected_b", "fit_corrected_b_err")


def _largest(d: Mapping) -> str | None:
    return max(d, key=key_cells) if d else None


def _mean(v) -> float:
    a = np.asarray([np.nan if x is None else x for x in v], float)
    return float(np.mean(a)) if a.size else float("nan")


def _fit(s: Mapping, key: str, field: str) -> float:
    v = (s.get(key) or {}).get(field)
    return float("nan") if v is None else float(v)


def trend_rows(reports: Mapping, mad_bins: str | int | None = None) -> list[dict]:
    """One row per (x, method label): MAD of the same-noise binning ``mad_bins`` (default: the
    largest with a floor) with its finite-S floor, and N_eq and amplification (paper and
    generation-noise corrected, run means) of the largest scaled binning, its averaging
    amplification of the first observable's slices (as the posterior claims it, and against
    the truth, with the misspecification share of the true error), the KS differential
    amplification of the first observable value (run mean of the median over draws), and both
    power-law fits."""
    rows = []
    for x, report in reports.items():
        for label, s in report["methods"].items():
            mads = s.get("mad") or {}
            floors = {k: v for k, v in (s.get("mad_floor") or {}).items() if k in mads}
            mk = (str(mad_bins) if mad_bins is not None and str(mad_bins) in mads
                  else _largest(floors) or _largest(mads))
            ak = _largest(s.get("amplification") or {})
            corr = s.get("amplification_corrected") or {}
            avg = (s.get("averaging") or {}).get(ak) or {}
            ks = next(iter((s.get("differential") or {}).values()), {})
            rows.append({
                "x": x, "label": label,
                "mad": float(mads[mk]) if mk else float("nan"),
                "mad_floor": float((s.get("mad_floor") or {}).get(mk, float("nan"))),
                "mad_bins": mk,
                "n_cells": key_cells(ak) if ak else 0,
                "n_eq": _mean(s["n_eq"][ak]) if ak else float("nan"),
                "amplification": _mean(s["amplification"][ak]) if ak else float("nan"),
                "n_eq_corrected": (_mean(s["n_eq_corrected"][ak]) if ak in corr
                                   else float("nan")),
                "amplification_corrected": _mean(corr[ak]) if ak in corr else float("nan"),
                "averaging_model": _mean(avg.get("amplification_model", [])),
                "averaging_true": _mean(avg.get("amplification_true", [])),
                "misspecification_share": _mean(avg.get("misspecification_share", [])),
                "ks_amplification": _mean(ks.get("amplification_median", [])),
                "fit_a": _fit(s, "fit", "a"), "fit_b": _fit(s, "fit", "b"),
                "fit_b_err": _fit(s, "fit", "b_err"),
                "fit_corrected_a": _fit(s, "fit_corrected", "a"),
                "fit_corrected_b": _fit(s, "fit_corrected", "b"),
                "fit_corrected_b_err": _fit(s, "fit_corrected", "b_err"),
            })
    return rows


def trend_markdown(rows: list[dict], x_name: str = "d") -> str:
    """The rows as a markdown table (3 significant digits)."""
    def g(v, digits=3):
        return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else \
            f"{v:.{digits}g}"

    head = (f"| {x_name} | method | MAD ({rows[0]['mad_bins']}) | MAD floor | n_Q | N_eq | "
            "ampl. | ampl. corr. | avg. ampl. claimed / true | misspec. share | KS ampl. | "
            "fit b | fit b corr. |") if rows else ""
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['x']} | {r['label']} | {g(r['mad'])} | {g(r['mad_floor'])} | {r['n_cells']} "
            f"| {g(r['n_eq'], 4)} | {g(r['amplification'])} | {g(r['amplification_corrected'])} "
            f"| {g(r['averaging_model'])} / {g(r['averaging_true'])} | "
            f"{g(r['misspecification_share'], 2)} | {g(r['ks_amplification'])} | "
            f"{g(r['fit_b'])} ± {g(r['fit_b_err'], 2)} | "
            f"{g(r['fit_corrected_b'])} ± {g(r['fit_corrected_b_err'], 2)} |")
    return "\n".join(lines) + "\n"
