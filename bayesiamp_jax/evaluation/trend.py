"""Results of several studies against a parameter (e.g. the dimension d of the shell).

``trend_rows({x: report}, ...)`` reads the per-method summaries of study reports (the
``methods`` entry of a report.json, each a ``summarise`` dict with ``mad_floor``, its held-out
check ``holdout`` and the report's ``convergence`` records) into flat rows; ``trend_markdown``
prints them as two tables (calibration, amplification) and ``figures.plot_trend`` draws them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from bayesiamp_jax.evaluation.summary import key_cells, key_panel
from bayesiamp_jax.evaluation.trust import assess, holdout_entry

COLUMNS = ("x", "label", "mad", "mad_floor", "n_cells", "n_eq", "amplification",
           "n_eq_corrected", "amplification_corrected", "averaging_model", "averaging_true",
           "misspecification_share", "ks_amplification", "fit_a", "fit_b", "fit_b_err",
           "fit_corrected_a", "fit_corrected_b", "fit_corrected_b_err",
           "holdout_bins", "holdout_verdict", "holdout_scale", "holdout_scale_err",
           "holdout_overall", "recal_scale", "amplification_recalibrated", "trusted",
           "trust_reasons", "epochs_pretrain", "epochs")
# besides these, one "mad_<n>" and "mad_floor_<n>" per same-noise binning n of the report


def _largest(d: Mapping) -> str | None:
    return max(d, key=key_cells) if d else None


def _mean(v) -> float:
    a = np.asarray([np.nan if x is None else x for x in v], float)
    return float(np.mean(a)) if a.size else float("nan")


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _fit(s: Mapping, key: str, field: str) -> float:
    return _num((s.get(key) or {}).get(field))


def _epochs(report: Mapping, name: str) -> float:
    """Run mean of the trained epochs (chain steps) of ``name`` in ``report["trained_epochs"]``
    ({name: {run: epochs}}, written by the collector from the held-out curves); NaN if absent."""
    runs = (report.get("trained_epochs") or {}).get(name) or {}
    return _mean(list(runs.values()))


def _converged(names, convergence: Mapping) -> bool | None:
    """False if one held-out loss record of ``names`` still falls; None without records."""
    runs = [d for n in names for d in (convergence.get(n) or {}).values()]
    return None if not runs else not any(d.get("not_converged") for d in runs)


def trend_rows(reports: Mapping, mad_bins: str | int | None = None,
               holdout_bins: str | int = 10, pretrained: Collection[str] = (),
               pretrain_name: str = "deterministic") -> list[dict]:
    """One row per (x, method label): MAD of the same-noise binning ``mad_bins`` (default: the
    largest with a floor) with its finite-S floor, and, as ``mad_<n>`` / ``mad_floor_<n>``, of
    every same-noise binning n; the held-out verdict, scale s (± error) of the same-noise
    binning ``holdout_bins`` (``holdout_overall``: the label's overall verdict); N_eq and
    amplification (paper and generation-noise corrected, run means) of the largest scaled
    binning, recalibrated (÷ s², s of the check ``trust.holdout_entry`` reads: ``recal_scale``)
    with the ``trust.assess`` verdict (``trusted``, ``trust_reasons``); its averaging
    amplification of the first observable's slices (as the posterior claims it, and against
    the truth, with the misspecification share of the true error), the KS differential
    amplification of the first observable value (run mean of the median over draws), both
    power-law fits, and the run-mean trained epochs of the label (``epochs``) and of the
    pretraining ``pretrain_name`` its method starts from (``epochs_pretrain``, for methods in
    ``pretrained``; their convergence also counts for the trust verdict)."""
    rows = []
    for x, report in reports.items():
        num_train = ((report.get("config") or {}).get("data") or {}).get("num_train")
        convergence = report.get("convergence") or {}
        for label, s in report["methods"].items():
            mads = s.get("mad") or {}
            floors = {k: v for k, v in (s.get("mad_floor") or {}).items() if k in mads}
            mk = (str(mad_bins) if mad_bins is not None and str(mad_bins) in mads
                  else _largest(floors) or _largest(mads))
            ak = _largest(s.get("amplification") or {})
            corr = s.get("amplification_corrected") or {}
            avg = (s.get("averaging") or {}).get(ak) or {}
            ks = next(iter((s.get("differential") or {}).values()), {})
            ho = s.get("holdout") or {}
            check = (ho.get("same_noise") or {}).get(str(holdout_bins)) or {}
            entry = holdout_entry(s, ak) if ak else None
            recal = (ho.get("amplification_recalibrated") or {}).get(ak)
            pre = s.get("method") in pretrained
            trust = (assess(s, ak, num_train=num_train, converged=_converged(
                [label] + ([pretrain_name] if pre else []), convergence)) if ak else None)
            row = {
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
                "holdout_bins": str(holdout_bins) if check else None,
                "holdout_verdict": check.get("verdict"),
                "holdout_scale": _num(check.get("scale")),
                "holdout_scale_err": _num(check.get("scale_err")),
                "holdout_overall": ho.get("verdict"),
                "recal_scale": _num((entry or {}).get("scale")),
                "amplification_recalibrated": _mean(recal) if recal else float("nan"),
                "trusted": None if trust is None else bool(trust.trusted),
                "trust_reasons": [] if trust is None else list(trust.reasons),
                "epochs_pretrain": _epochs(report, pretrain_name) if pre else float("nan"),
                "epochs": _epochs(report, label),
            }
            for k in sorted(mads, key=key_cells):
                row[f"mad_{k}"] = float(mads[k])
                row[f"mad_floor_{k}"] = _num((s.get("mad_floor") or {}).get(k))
            rows.append(row)
    return rows


def _g(v, digits=3) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else \
        f"{v:.{digits}g}"


_TAGS = (("over-confident", "over-confident"), ("under-confident", "under-confident"),
         ("claim N_eq", "beyond held-out reach"), ("model share", "ρ < 0.2"),
         ("chain not mixed", "not mixed"), ("training not converged", "not converged"),
         ("unchecked", "unchecked"))


def _tag(reason: str) -> str:
    """A trust reason (``trust.assess``) in two or three words for a table cell."""
    return next((t for start, t in _TAGS if reason.startswith(start)), reason.split(":")[0])


def _mad_keys(rows: list[dict]) -> list[str]:
    keys = {k[4:] for r in rows for k in r if k.startswith("mad_") and k[4:5].isdigit()}
    return sorted(keys, key=key_cells)


def trend_markdown(rows: list[dict], x_name: str = "d") -> str:
    """The rows as two markdown tables (3 significant digits): calibration (trained epochs,
    MAD of every same-noise binning against its floor, held-out verdict and scale s) and
    amplification (largest scaled binning: paper, corrected, recalibrated, averaging claimed /
    true, trust verdict, power-law fits)."""
    if not rows:
        return ""
    mk = _mad_keys(rows)
    hb = next((r["holdout_bins"] for r in rows if r.get("holdout_bins")), None)
    head = (f"| {x_name} | method | epochs (pretrain / own) | "
            + " | ".join(f"MAD {key_panel(k)} (floor)" for k in mk)
            + f" | held-out {key_panel(hb) if hb else '—'}: verdict (s) | overall verdict |")
    lines = ["### Calibration", "", head, "|" + "---|" * (5 + len(mk))]
    for r in rows:
        ep = f"{_g(r.get('epochs_pretrain'), 5)} / {_g(r.get('epochs'), 5)}"
        s = r.get("holdout_scale")
        verdict = (r.get("holdout_verdict") or "—") + (
            f" (s = {_g(s, 2)} ± {_g(r.get('holdout_scale_err'), 1)})" if _g(s) != "—" else "")
        lines.append(f"| {r['x']} | {r['label']} | {ep} | " + " | ".join(
            f"{_g(r.get(f'mad_{k}'))} ({_g(r.get(f'mad_floor_{k}'), 2)})" for k in mk)
            + f" | {verdict} | {r.get('holdout_overall') or '—'} |")
    lines += ["", "### Amplification (largest scaled binning)", "",
              "| " + x_name + " | method | n_Q | ampl. paper | ampl. corr. | recal. ÷ s² (s) | "
              "avg. ampl. claimed / true | misspec. share | KS ampl. | trusted? | fit b | "
              "fit b corr. |", "|" + "---|" * 12]
    for r in rows:
        trusted = ("—" if r.get("trusted") is None else "yes" if r["trusted"] else
                   "no: " + ", ".join(_tag(t) for t in r.get("trust_reasons") or []))
        lines.append(
            f"| {r['x']} | {r['label']} | {r['n_cells']} | {_g(r['amplification'])} | "
            f"{_g(r['amplification_corrected'])} | {_g(r.get('amplification_recalibrated'))} "
            f"({_g(r.get('recal_scale'), 2)}) | "
            f"{_g(r['averaging_model'])} / {_g(r['averaging_true'])} | "
            f"{_g(r['misspecification_share'], 2)} | {_g(r['ks_amplification'])} | {trusted} | "
            f"{_g(r['fit_b'])} ± {_g(r['fit_b_err'], 2)} | "
            f"{_g(r['fit_corrected_b'])} ± {_g(r['fit_corrected_b_err'], 2)} |")
    return "\n".join(lines) + "\n"
