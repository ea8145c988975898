"""Weight posteriors of the vector field: VI, AdamMCMC, NUTS, repulsive ensembles, all
returning ``PosteriorDraws``.

Entry points are named by what they do — ``fit_*`` optimises (VI: a ``VIResult`` to draw from
with ``sample_vi``; repulsive ensemble: the members are the draws), ``sample_*`` runs MCMC — on a
generic ``loss_fn``/``data`` pair, and with the suffix ``_cnf`` the same on a CNF vector field
with the reference likelihood and schedule. Every entry point but NUTS is a thin wrapper around
one algorithm run by ``driver.run`` (the unit axis, checkpoint, progress, finite checks,
held-out curves; docs/design/posteriors.md) and takes U keys (shape (U,)) to train U
independent units (runs × grid points) in one compiled program.
"""

from bayesiamp_jax.posteriors import adammcmc, diagnostics, driver
from bayesiamp_jax.posteriors.adammcmc import AdamMCMCInfo, AdamMCMCState
from bayesiamp_jax.posteriors.adammcmc_run import sample_adammcmc, sample_adammcmc_cnf
from bayesiamp_jax.posteriors.diagnostics import chain_statistics, draws_diagnostics
from bayesiamp_jax.posteriors.draws import (
    PosteriorDraws,
    load_draws,
    save_draws,
    split_units,
    stack_params,
    to_inference_data,
)
from bayesiamp_jax.posteriors.ensemble import fit_ensemble, fit_ensemble_cnf
from bayesiamp_jax.posteriors.laplace import (
    fit_laplace,
    fit_laplace_cnf,
    laplace_approximation,
    sample_laplace,
)
from bayesiamp_jax.posteriors.model import (
    WeightSpace,
    build_weight_model,
    cfm_fixed_noise_loss_fn,
    cfm_loss_fn,
    cnf_weight_model,
    exact_nll_loss_fn,
    weight_space,
    with_cfm_noise,
)
from bayesiamp_jax.posteriors.numpyro_kernel import AdamMCMC
from bayesiamp_jax.posteriors.nuts import sample_nuts, sample_nuts_cnf
from bayesiamp_jax.posteriors.repulsive import fit_repulsive, fit_repulsive_cnf
from bayesiamp_jax.posteriors.sgmcmc import (
    sample_sghmc,
    sample_sghmc_cnf,
    sample_sgld,
    sample_sgld_cnf,
)
from bayesiamp_jax.posteriors.swag import fit_swag, fit_swag_cnf, mandt_learning_rate
from bayesiamp_jax.posteriors.vi import (
    VIResult,
    VIState,
    build_svi,
    build_vi_runner,
    fit_vi,
    fit_vi_cnf,
    init_guide_params,
    init_vi_state,
    kl_site_scale,
    sample_vi,
)

__all__ = [
    "AdamMCMC",
    "AdamMCMCInfo",
    "AdamMCMCState",
    "PosteriorDraws",
    "VIResult",
    "VIState",
    "WeightSpace",
    "adammcmc",
    "build_svi",
    "build_vi_runner",
    "build_weight_model",
    "cfm_fixed_noise_loss_fn",
    "cfm_loss_fn",
    "chain_statistics",
    "cnf_weight_model",
    "diagnostics",
    "driver",
    "draws_diagnostics",
    "exact_nll_loss_fn",
    "fit_ensemble",
    "fit_ensemble_cnf",
    "fit_laplace",
    "fit_laplace_cnf",
    "fit_repulsive",
    "fit_repulsive_cnf",
    "fit_swag",
    "fit_swag_cnf",
    "fit_vi",
    "fit_vi_cnf",
    "init_guide_params",
    "init_vi_state",
    "kl_site_scale",
    "laplace_approximation",
    "load_draws",
    "mandt_learning_rate",
    "sample_adammcmc",
    "sample_adammcmc_cnf",
    "sample_laplace",
    "sample_nuts",
    "sample_nuts_cnf",
    "sample_sghmc",
    "sample_sghmc_cnf",
    "sample_sgld",
    "sample_sgld_cnf",
    "sample_vi",
    "save_draws",
    "split_units",
    "stack_params",
    "to_inference_data",
    "weight_space",
    "with_cfm_noise",
]
