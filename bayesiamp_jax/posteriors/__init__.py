"""Weight posteriors of the vector field: VI, AdamMCMC, NUTS, all returning PosteriorDraws."""

from bayesiamp_jax.posteriors.draws import PosteriorDraws, load_draws, save_draws, stack_params

__all__ = ["PosteriorDraws", "load_draws", "save_draws", "stack_params"]
