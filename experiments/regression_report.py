"""Analysis and report of the regression study (``experiments.regression``; the library's
``bayesiamp_jax.regression`` holds the model, toy, methods and uncertainty maths): predictions
of fitted weight posteriors on test, held-out and grid inputs, their evaluation against the
toy's truth and the replica truth of σ_stat, the report dict (JSON-ready) and its markdown.

``evaluate_predictions`` gives one (method, settings, N) entry: public numbers plus ``_``-prefixed
per-input arrays (test inputs, (n,)) for the figures; ``build_report`` keeps the public numbers of
every entry and adds the replica truth, agreement and done criteria; ``report_markdown`` renders
that dict."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bayesiamp_jax.evaluation.calibration import pulls
from bayesiamp_jax.regression.calibration import pull_scale
from bayesiamp_jax.regression.diagnostics import (
    DEFAULT_LEVELS,
    coverage_mad,
    gaussian_coverage,
    gaussian_fit,
    pull_summary,
)
from bayesiamp_jax.regression.replicas import replica_truth
from bayesiamp_jax.regression.toy import RegressionSample, ResponseToy
from bayesiamp_jax.regression.uncertainty import decompose, predict_draws

METHODS = ("vi", "repulsive")
LABELS = {"vi": "Bayesian NN (mean-field VI)", "repulsive": "repulsive ensemble"}
KNOBS = {"vi": "KL weight c (× textbook ELBO)", "repulsive": "repulsion strength r"}


@dataclasses.dataclass(frozen=True)
class EvaluationSets:
    """Test inputs (full spectrum, n) and held-out inputs (training spectrum) with truth; the
    grid (88, 1) of the figures; per test input its energy ``e``, true mean ``mu``, true noise
    ``sd`` and whether it lies in the crack ``in_gap`` (each (n,))."""

    test: RegressionSample
    val: RegressionSample
    grid: jax.Array
    e: np.ndarray
    mu: np.ndarray
    sd: np.ndarray
    in_gap: np.ndarray


def evaluation_sets(toy: ResponseToy, test_key: jax.Array, val_key: jax.Array, num_test: int,
                    num_validation: int) -> EvaluationSets:
    """Test set from ``toy.without_gap()`` and held-out set from ``toy`` (its training
    spectrum), drawn with the given keys."""
    test = toy.without_gap().sample(test_key, num_test)
    val = toy.sample(val_key, num_validation)
    e = np.asarray(test.x[:, 0])
    return EvaluationSets(test=test, val=val, grid=jnp.linspace(0.15, 4.5, 88)[:, None], e=e,
                          mu=np.asarray(toy.mean(e)), sd=np.asarray(toy.std(e)),
                          in_gap=np.asarray(toy.in_gap(e)))


def predictions(net, draws, sets: EvaluationSets) -> dict:
    """(S, n) means and variances on test, held-out and grid inputs."""
    return {name: tuple(np.asarray(a) for a in predict_draws(net, draws, x))
            for name, x in (("test", sets.test.x), ("val", sets.val.x), ("grid", sets.grid))}


def poor_region(truth, sets: EvaluationSets, flag_factor: float) -> np.ndarray:
    """The toy's poorly informed test inputs (n,): replica σ_stat / σ_true above
    ``flag_factor`` × its median (the same cut a method's flag applies to its σ_stat / σ_syst)."""
    rel = truth.spread / sets.sd
    return rel > flag_factor * np.median(rel)


def ratio_summary(sigma, truth_means, rng, num_boot: int = 200) -> dict:
    """Median over inputs of σ (n,) / truth and its 16/84 % quantiles; the error of the median
    from a bootstrap over the replicas (``truth_means`` (K, n): the truth's own error)."""
    truth = replica_truth(truth_means)
    r = sigma / truth.spread
    k = truth_means.shape[0]
    sub = truth_means[:, :: max(1, truth_means.shape[1] // 2000)]
    sig_sub = sigma[:: max(1, truth_means.shape[1] // 2000)]
    meds = []
    for _ in range(num_boot):
        spread = sub[rng.integers(0, k, k)].std(axis=0, ddof=1)
        if np.all(spread > 0):  # a resample repeating one replica has no spread
            meds.append(np.median(sig_sub / spread))
    return {"median": float(np.median(r)), "q16": float(np.quantile(r, 0.16)),
            "q84": float(np.quantile(r, 0.84)),
            "err": float(np.std(meds)) if len(meds) > 1 else None}


def _gauss_nll(mean, var, y):
    return 0.5 * (np.log(2 * np.pi * var) + (y - mean) ** 2 / var)


def evaluate_predictions(pred: dict, sets: EvaluationSets, truth_means: np.ndarray,
                         flag_factor: float, rng) -> dict:
    """Pulls, coverage, σ_stat / replica truth (``truth_means`` (K, n) on the test inputs),
    held-out log-likelihood, recalibration and flagged inputs of one posterior's ``pred``
    (from ``predictions``); ``_``-prefixed entries are per-input arrays for the figures."""
    dec = decompose(*pred["test"])
    mean, stat, syst, total = (np.asarray(a) for a in dec)
    total_pulls = pulls(sets.test.y, mean, total)
    stat_pulls = pulls(sets.mu, mean, stat)
    cov = gaussian_coverage(sets.test.y, mean, total)
    val = decompose(*pred["val"])
    scale = pull_scale(np.asarray(sets.val.y) - np.asarray(val.mean), np.asarray(val.total))
    recal_pulls = total_pulls / scale
    val_ll = -np.asarray(_gauss_nll(np.asarray(val.mean), np.asarray(val.total) ** 2,
                                    np.asarray(sets.val.y)))
    rel = stat / syst
    flagged = rel > flag_factor * np.median(rel)
    truth = replica_truth(truth_means)
    poor = poor_region(truth, sets, flag_factor)
    ratio = ratio_summary(stat, truth_means, rng)
    g = decompose(*pred["grid"])
    return {
        "pull_total": pull_summary(total_pulls)._asdict(),
        "pull_total_fit": gaussian_fit(total_pulls)._asdict(),
        "pull_stat": pull_summary(stat_pulls)._asdict(),
        "coverage": cov.tolist(),
        "coverage_mad": coverage_mad(DEFAULT_LEVELS, cov),
        "rms_stat": float(np.sqrt(np.mean(stat**2))),
        "rms_syst": float(np.sqrt(np.mean(syst**2))),
        "median_stat": float(np.median(stat)),
        "median_syst": float(np.median(syst)),
        "rms_true_noise": float(np.sqrt(np.mean(sets.sd**2))),
        "mean_syst_over_truth": float(np.mean(syst / sets.sd)),
        "rms_bias": float(np.sqrt(np.mean((mean - sets.mu) ** 2))),
        "rms_error_over_replica_spread": float(np.sqrt(np.mean((mean - sets.mu) ** 2))
                                               / np.sqrt(np.mean(truth.spread**2))),
        "stat_ratio_to_replica": ratio["median"],
        "stat_ratio": ratio,
        "stat_ratio_in_gap": (float(np.median(stat[sets.in_gap] / truth.spread[sets.in_gap]))
                              if sets.in_gap.any() else None),
        "heldout_loglik": float(val_ll.mean()),
        "heldout_loglik_err": float(val_ll.std() / np.sqrt(val_ll.size)),
        "recalibration_scale": scale,
        "pull_total_recalibrated": pull_summary(recal_pulls)._asdict(),
        "pull_total_recalibrated_fit": gaussian_fit(recal_pulls)._asdict(),
        "flag": {
            "fraction_flagged": float(flagged.mean()),
            "fraction_of_flagged_in_poor_region": (float(poor[flagged].mean())
                                                   if flagged.any() else None),
            "fraction_of_poor_region_flagged": (float(flagged[poor].mean())
                                                if poor.any() else None),
            "fraction_poor": float(poor.mean()),
            "fraction_poor_in_crack": float(sets.in_gap[poor].mean()) if poor.any() else None,
            "threshold": float(flag_factor * np.median(rel)),
        },
        "grid": {k: np.asarray(v).tolist() for k, v in g._asdict().items()},
        "_pulls": total_pulls,
        "_recal_pulls": recal_pulls,
        "_stat_pulls": stat_pulls,
        "_test_stat": stat,
        "_test_syst": syst,
        "_test_total": total,
        "_val_stat": np.asarray(val.stat),
        "_rel": rel,
    }


def final_loss(draws) -> float:
    """Mean training loss over the last 10 % of epochs (VI: −ELBO / N)."""
    loss = np.asarray(draws.info.get("loss", np.nan), np.float64).ravel()
    tail = loss[-max(1, loss.size // 10):]
    return float(np.mean(tail))


def power_law_slope(sizes, values) -> float:
    """Slope b of a least-squares fit log value = a + b log size."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_") and k != "grid"}


def build_report(config: Mapping, num_params: int, results: Mapping, rule: Mapping,
                 truths: Mapping, sets: EvaluationSets, scan: Mapping, timings: Mapping,
                 figures: Sequence[str]) -> dict:
    """The report dict of a study.

    ``config``: the JSON dict of its settings (``sizes``, ``flag_factor``, … as the markdown
    reads them); ``results[m][N]`` / ``rule[m][N]``: ``evaluate_predictions`` entries at the
    default settings and under the bootstrap rule (``rule[m]`` empty: no rule fits) with their
    knob value ``setting``; ``truths[N]["test"]``: replica means (K, n); ``scan``: VI prior
    width → ELBO and σ_stat ratio; ``timings``: fit seconds; ``figures``: figure names.
    """
    sizes = list(config["sizes"])
    largest = sizes[-1]
    out = {"config": dict(config), "num_params": num_params, "timings_s": dict(timings),
           "figures": list(figures), "methods": {}, "replica_truth": {}}
    for n in sizes:
        t = replica_truth(truths[n]["test"])
        out["replica_truth"][str(n)] = {
            "median_spread": float(np.median(t.spread)),
            "rms_spread": float(np.sqrt(np.mean(t.spread**2))),
            "relative_error_per_input": float(1 / np.sqrt(2 * (t.num_replicas - 1))),
            "rms_bias_of_centre": float(np.sqrt(np.mean((t.centre - sets.mu) ** 2))),
            "rms_bias_err": float(np.sqrt(np.mean(t.spread**2) / t.num_replicas)),
            "median_spread_in_gap": (float(np.median(t.spread[sets.in_gap]))
                                     if sets.in_gap.any() else None),
            "num_replicas": t.num_replicas,
        }
    for m in METHODS:
        per = {str(n): _public(results[m][n]) for n in sizes}
        stat = [results[m][n]["rms_stat"] for n in sizes]
        entry = {"per_size": per,
                 "stat_slope_vs_N": power_law_slope(sizes, stat) if len(sizes) > 1 else None,
                 "knob": KNOBS[m]}
        if rule[m]:
            entry["rule"] = {
                "name": "bootstrap rule: the knob moved so that the mean σ_stat² on held-out "
                        "inputs equals that of a bootstrap of the deterministic fit",
                "per_size": {str(n): _public(rule[m][n]) for n in sizes},
            }
        out["methods"][m] = entry
    slope_truth = [out["replica_truth"][str(n)]["rms_spread"] for n in sizes]
    out["replica_truth_slope_vs_N"] = power_law_slope(sizes, slope_truth) if len(sizes) > 1 \
        else None
    chosen = rule if rule["vi"] else results
    a, b = chosen["vi"][largest], chosen["repulsive"][largest]
    d_a, d_b = results["vi"][largest], results["repulsive"][largest]
    out["agreement_at_largest_N"] = {
        "N": largest,
        "settings": "rule" if rule["vi"] else "default",
        "median_total_ratio_bnn_over_re": float(np.median(a["_test_total"] / b["_test_total"])),
        "median_stat_ratio_bnn_over_re": float(np.median(a["_test_stat"] / b["_test_stat"])),
        "median_total_ratio_re_over_vi": float(np.median(d_b["_test_total"] / d_a["_test_total"])),
        "median_stat_ratio_re_over_vi": float(np.median(d_b["_test_stat"] / d_a["_test_stat"])),
    }
    out["vi_prior_scan_at_largest_N"] = {f"{s:g}": v for s, v in scan.items()}
    out["done_criteria"] = done_criteria(out, chosen, largest)
    return out


def done_criteria(out: Mapping, chosen: Mapping, largest: int) -> dict:
    """The acceptance numbers at the largest N (``chosen``: the rule's entries where fitted)."""
    crit = {}
    for m in METHODS:
        r = chosen[m][largest]
        crit[f"{m}_stat_ratio_to_replica"] = {
            "value": r["stat_ratio_to_replica"], "target": "0.7–1.3",
            "met": bool(0.7 <= r["stat_ratio_to_replica"] <= 1.3)}
        w = r["pull_total_fit"]["width"]
        crit[f"{m}_total_pull_width_fit"] = {"value": w, "std": r["pull_total"]["width"],
                                             "target": "0.9–1.15", "met": bool(0.9 <= w <= 1.15)}
    ratio = out["agreement_at_largest_N"]["median_total_ratio_bnn_over_re"]
    crit["bnn_over_re_median_total_ratio"] = {"value": ratio, "target": "0.8–1.25",
                                              "met": bool(0.8 <= ratio <= 1.25)}
    return crit


def _f(x, fmt=".3f"):
    return "–" if x is None else format(x, fmt)


def _method_rows(rep: Mapping):
    """(method, "rule"/"raw", N, per-size numbers) for every table row of the report: the
    truth-free rule (the study's answer where fitted) first, then the knob's raw default."""
    for m, r in rep["methods"].items():
        variants = ([("rule", r["rule"]["per_size"])] if "rule" in r else []) + [
            ("raw", r["per_size"])]
        for label, per in variants:
            for n, s in per.items():
                yield m, label, n, s


def report_markdown(rep: Mapping) -> str:
    """The report of a study (``build_report`` dict) as markdown."""
    cfg = rep["config"]
    largest = str(rep["agreement_at_largest_N"]["N"])
    has_rule = "rule" in rep["methods"]["vi"]
    lines = [
        "# Uncertainty-aware regression: Bayesian NN vs repulsive ensemble",
        "",
        f"Toy: detector response μ(E) with resolution σ(E) = sqrt(0.15²/E + 0.03²), E on "
        f"[0.2, 4] from a falling spectrum with a crack [{cfg['gap_lo']:g}, {cfg['gap_hi']:g}] "
        f"where only {100 * cfg['gap_efficiency']:g} % of the training inputs are kept. "
        f"Network {tuple(cfg['hidden'])} ({rep['num_params']} weights), {cfg['num_steps']} steps "
        f"per fit, prior N(0, {cfg['prior_scale']:g}²). VI: {cfg['num_draws']} draws; repulsive "
        f"ensemble: {cfg['num_members']} members ({cfg['space']}-space RBF-KDE repulsion"
        + ((f" at {'the mini-batch inputs and ' if cfg['measure_batch'] else ''}"
            f"{cfg['num_measurement']} fixed inputs" if cfg["num_measurement"]
            else " at the mini-batch inputs") if cfg["space"] == "function" else "")
        + f"). Test set: {cfg['num_test']} truth points from the full spectrum (no crack); "
        f"held-out set: {cfg['num_validation']} points from the training spectrum.",
        "",
        "## The truth of σ_stat",
        "",
        f"Replica truth: the deterministic network fitted on K = {cfg['num_replicas']} fresh "
        "training sets per N (one vmapped program); σ_stat truth = spread of its mean per input "
        "(relative error per input 1/sqrt(2(K−1))). The bias of the average fit is shown apart.",
        "",
        "| N | median truth | rms truth | rel. error per input | rms bias of the average fit "
        "(± err) | median truth in the crack |",
        "|---|---|---|---|---|---|",
    ]
    for n, t in rep["replica_truth"].items():
        lines.append(f"| {n} | {t['median_spread']:.4f} | {t['rms_spread']:.4f} | "
                     f"{t['relative_error_per_input']:.2f} | {t['rms_bias_of_centre']:.4f} ± "
                     f"{t['rms_bias_err']:.4f} | {_f(t['median_spread_in_gap'], '.4f')} |")
    if rep["replica_truth_slope_vs_N"] is not None:
        lines += ["", f"Power-law slope of the rms truth vs N: "
                      f"{rep['replica_truth_slope_vs_N']:.2f} (expect ≈ −0.5)."]
    lines += [
        "",
        "## σ_stat / replica truth (median over test inputs, 16–84 % of inputs, ± error of "
        "the median from the replicas)",
        "",
        ("Each method's knob is set by the truth-free bootstrap rule (`rule` rows: the study's "
         "answer, `calibration=rule`, the default); `raw` rows keep the knob's default value "
         "(`--set calibration=raw` runs those alone)." if has_rule else
         "Each method's knob keeps its default value (`calibration=raw`: no rule fits)."),
        "",
        "| method | settings | N | knob value | σ_stat / truth | 16–84 % | in the crack "
        "| rms error of mean / rms truth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, label, n, s in _method_rows(rep):
        q = s["stat_ratio"]
        lines.append(f"| {m} | {label} | {n} | {s['setting']:.4g} | {q['median']:.3f} ± "
                     f"{_f(q['err'])} | {q['q16']:.2f}–{q['q84']:.2f} | "
                     f"{_f(s['stat_ratio_in_gap'], '.2f')} | "
                     f"{s['rms_error_over_replica_spread']:.2f} |")
    if has_rule:
        lines += ["", "The rule's own target, the bootstrap spread (from the one training set), "
                  "against the replica truth: " + ", ".join(
                      f"N = {n}: {s['bootstrap_ratio_to_replica']['median']:.2f}"
                      for n, s in rep["methods"]["vi"]["rule"]["per_size"].items()) + "."]
    scan = rep["vi_prior_scan_at_largest_N"]
    if scan:
        best = max(scan, key=lambda s: scan[s]["elbo_per_point"])
        lines += ["", f"VI prior width at N = {largest} (default KL weight): "
                  + "; ".join(f"s = {s}: ELBO/N {v['elbo_per_point']:.4f}, σ_stat/truth "
                              f"{v['stat_ratio_to_replica']['median']:.2f}"
                              for s, v in scan.items())
                  + f". The ELBO picks s = {best}; the prior width does not set VI's σ_stat."]
    lines += [
        "",
        "## Pulls, calibration, agreement",
        "",
        "Uncalibrated: pull = (y − mean)/σ_total on the test set, Gaussian fit to its histogram "
        "(mean, width) and its standard deviation. Recalibrated (separate): σ_total × s with s "
        "fitted on the held-out pulls (s² = mean pull²), applied to the test set.",
        "",
        "| method | settings | N | fit mean | fit width | std | |pull|<1 | coverage MAD "
        "| held-out log-lik | s | recal. fit width | σ_syst/σ_true |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, label, n, s in _method_rows(rep):
        p, f, g = s["pull_total"], s["pull_total_fit"], s["pull_total_recalibrated_fit"]
        lines.append(
            f"| {m} | {label} | {n} | {f['mean']:+.3f} | {f['width']:.3f} | "
            f"{p['width']:.3f} | {p['within_1']:.3f} | {s['coverage_mad']:.3f} | "
            f"{s['heldout_loglik']:.4f} ± {s['heldout_loglik_err']:.4f} | "
            f"{s['recalibration_scale']:.3f} | {g['width']:.3f} | "
            f"{s['mean_syst_over_truth']:.3f} |")
    ag = rep["agreement_at_largest_N"]
    lines += [
        "",
        f"Agreement at N = {ag['N']} ({ag['settings']} settings): median σ_total(BNN)/σ_total(RE) "
        f"= {ag['median_total_ratio_bnn_over_re']:.3f}, median σ_stat(BNN)/σ_stat(RE) = "
        f"{ag['median_stat_ratio_bnn_over_re']:.3f}; at the default settings "
        f"σ_total(RE)/σ_total(VI) = {ag['median_total_ratio_re_over_vi']:.3f}, "
        f"σ_stat(RE)/σ_stat(VI) = {ag['median_stat_ratio_re_over_vi']:.3f}.",
        "",
        "## σ_stat → 0, σ_syst → true noise",
        "",
    ]
    for m, r in rep["methods"].items():
        per = r["rule"]["per_size"] if "rule" in r else r["per_size"]
        lines.append(f"- {m}: median σ_stat " + ", ".join(
            f"{s['median_stat']:.4f}" for s in per.values()) + " and median σ_syst " + ", ".join(
            f"{s['median_syst']:.4f}" for s in per.values()) + " at N = " + ", ".join(per)
            + f"; rms σ_stat slope (default) {_f(r['stat_slope_vs_N'], '.2f')}; mean "
            f"σ_syst/σ_true at N = {largest}: {per[largest]['mean_syst_over_truth']:.3f}.")
    lines += ["", "## The uncertainty spectrum and the flagged inputs", ""]
    for m, r in rep["methods"].items():
        per = r["rule"]["per_size"] if "rule" in r else r["per_size"]
        fl = per[largest]["flag"]
        lines.append(
            f"- {m} (N = {largest}): {100 * fl['fraction_flagged']:.1f} % of the test inputs "
            f"flagged (σ_stat/σ_syst > {cfg['flag_factor']:g} × median); of them "
            f"{100 * (fl['fraction_of_flagged_in_poor_region'] or 0):.1f} % lie in the poorly "
            f"informed region (replica truth σ_stat/σ_true > {cfg['flag_factor']:g} × median: "
            f"{100 * fl['fraction_poor']:.1f} % of the test inputs, "
            f"{100 * (fl['fraction_poor_in_crack'] or 0):.0f} % of them in the crack), and "
            f"{100 * (fl['fraction_of_poor_region_flagged'] or 0):.1f} % of that region is "
            "flagged.")
    lines += ["", "## Done criteria (largest N, " + ag["settings"] + " settings)", "",
              "| criterion | value | target | met |", "|---|---|---|---|"]
    for name, c in rep["done_criteria"].items():
        extra = f" (std {c['std']:.3f})" if "std" in c else ""
        lines.append(f"| {name} | {c['value']:.3f}{extra} | {c['target']} | "
                     f"{'yes' if c['met'] else 'no'} |")
    lines += ["", "Fit times (s, as first fitted; cached fits are loaded): "
              + ", ".join(f"{k} {v:.1f}" for k, v in rep["timings_s"].items()),
              "", "Figures: " + (", ".join(rep["figures"]) or "none"), ""]
    return "\n".join(lines)
