"""Weight posteriors of the vector field: VI, AdamMCMC, NUTS, all returning PosteriorDraws."""

from bayesiamp_jax.posteriors import adammcmc
from bayesiamp_jax.posteriors.adammcmc import AdamMCMCInfo, AdamMCMCState
from bayesiamp_jax.posteriors.adammcmc_run import adammcmc_cnf, sample_adammcmc
from bayesiamp_jax.posteriors.draws import PosteriorDraws, load_draws, save_draws, stack_params
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
from bayesiamp_jax.posteriors.nuts import nuts_cnf, sample_nuts
from bayesiamp_jax.posteriors.repulsive import fit_repulsive, fit_repulsive_cnf
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
    "adammcmc",
    "adammcmc_cnf",
    "nuts_cnf",
    "fit_repulsive",
    "fit_repulsive_cnf",
    "sample_adammcmc",
    "sample_nuts",
    "PosteriorDraws",
    "VIResult",
    "VIState",
    "WeightSpace",
    "build_svi",
    "build_vi_runner",
    "build_weight_model",
    "cfm_fixed_noise_loss_fn",
    "cfm_loss_fn",
    "cnf_weight_model",
    "exact_nll_loss_fn",
    "fit_vi",
    "fit_vi_cnf",
    "init_guide_params",
    "init_vi_state",
    "kl_site_scale",
    "load_draws",
    "sample_vi",
    "save_draws",
    "stack_params",
    "weight_space",
    "with_cfm_noise",
]
