"""Configuration of the calibration study: frozen dataclasses, presets and ``--set`` overrides.

``resolve(preset, overrides)`` returns a validated ``Config``; ``overrides`` are strings
``"section.field=value"`` (e.g. ``"vi.num_epochs=2000"``, ``"vi.kl_weights=1,10"``,
``"adammcmc.enabled=false"``). ``to_dict``/``from_dict`` round-trip through JSON.

Presets:
- ``quick``: end-to-end on a 2-core CPU in ~2 min: one run, VI k=10 and AdamMCMC σ=0.1,
  reduced epochs (300 flow matching, 500 VI, 80 AdamMCMC steps), 20 draws, 4·10⁴ same-noise
  and 20·n² scaled samples per draw, binnings up to 50 × 50.
- ``paper``: the paper's grid and sizes (k ∈ {1,5,10,50,100}, σ ∈ {0.01,0.05,0.1,0.5}, 5 runs,
  50 draws, 10⁷-sample calibration and 1,000·n² scaled evaluation); meant for a GPU.
- ``replicate``: the headline labels (VI k=10, AdamMCMC σ=0.1) at the paper's training length
  for one run on a 2-core CPU, evaluated with fewer samples per cell.
- ``tiny``: seconds-sized smoke test of every stage (used by the test suite).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field

from bayesiamp_jax import _checks

PAPER_SCALED_BINS = (2, 3, 4, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 200, 500)
PAPER_FIT_BINS = (15, 20, 30, 40, 50, 70, 100, 200)


@dataclass(frozen=True)
class DataConfig:
    """Training data: ``num_train`` ring points per run at c = r_mean."""

    num_train: int = 10_000
    r_mean: float = 4.0

    def validate(self):
        _checks.positive_int("data.num_train", self.num_train)
        _checks.positive("data.r_mean", self.r_mean)


@dataclass(frozen=True)
class NetworkConfig:
    """Vector-field architecture (see ``bayesiamp_jax.VectorField``)."""

    hidden: tuple[int, ...] = (32, 32, 32)
    num_frequencies: int = 3
    precision: str = "highest"

    def validate(self):
        for i, w in enumerate(self.hidden):
            _checks.positive_int(f"network.hidden[{i}]", w)
        _checks.one_of("network.precision", self.precision, ("default", "high", "highest"))


@dataclass(frozen=True)
class DeterministicConfig:
    """Plain flow-matching training (a point estimate per run; also AdamMCMC's pretraining)."""

    enabled: bool = True
    num_epochs: int = 2_501
    batch_size: int = 1_000
    chunk_epochs: int = 100

    def validate(self):
        _checks.positive_int("deterministic.num_epochs", self.num_epochs)
        _checks.positive_int("deterministic.batch_size", self.batch_size)
        _checks.positive_int("deterministic.chunk_epochs", self.chunk_epochs)


@dataclass(frozen=True)
class VIConfig:
    """Mean-field Gaussian VI, one trained posterior per (k, run)."""

    enabled: bool = True
    kl_weights: tuple[float, ...] = (1.0, 5.0, 10.0, 50.0, 100.0)
    kl_normalisation: str = "reference"
    num_epochs: int = 250_000
    batch_size: int = 1_000
    num_draws: int = 50
    chunk_epochs: int = 500

    def validate(self):
        _nonempty("vi.kl_weights", self.kl_weights)
        for i, k in enumerate(self.kl_weights):
            _checks.non_negative(f"vi.kl_weights[{i}]", k)
        _checks.one_of("vi.kl_normalisation", self.kl_normalisation, ("reference", "total"))
        _checks.positive_int("vi.num_epochs", self.num_epochs)
        _checks.positive_int("vi.batch_size", self.batch_size)
        _at_least_two("vi.num_draws", self.num_draws)
        _checks.positive_int("vi.chunk_epochs", self.chunk_epochs)


@dataclass(frozen=True)
class AdamMCMCConfig:
    """AdamMCMC chains, one per (σ, run), started from the deterministic pretraining."""

    enabled: bool = True
    sigmas: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
    sigma_dir: float = -1.0  # < 0: the reference's P/50
    num_adam_steps: int = 5
    num_samples: int = 50
    thinning: int = 1_000
    batch_size: int = 1_000
    solver_steps: int = 20  # RK4 steps of the exact likelihood

    def validate(self):
        _nonempty("adammcmc.sigmas", self.sigmas)
        for i, s in enumerate(self.sigmas):
            _checks.positive(f"adammcmc.sigmas[{i}]", s)
        _checks.finite("adammcmc.sigma_dir", [self.sigma_dir])
        if self.num_adam_steps < 0:
            raise ValueError(f"adammcmc.num_adam_steps must be >= 0, got {self.num_adam_steps!r}")
        _at_least_two("adammcmc.num_samples", self.num_samples)
        _checks.positive_int("adammcmc.thinning", self.thinning)
        _checks.positive_int("adammcmc.batch_size", self.batch_size)
        _checks.positive_int("adammcmc.solver_steps", self.solver_steps)


@dataclass(frozen=True)
class NUTSConfig:
    """numpyro NUTS on a random subset of the training points (gold standard at small size)."""

    enabled: bool = False
    num_points: int = 1_000
    likelihood: str = "fm"
    num_warmup: int = 200
    num_samples: int = 50
    max_tree_depth: int = 6

    def validate(self):
        _checks.positive_int("nuts.num_points", self.num_points)
        _checks.one_of("nuts.likelihood", self.likelihood, ("fm", "exact"))
        _checks.positive_int("nuts.num_warmup", self.num_warmup)
        _at_least_two("nuts.num_samples", self.num_samples)
        _checks.positive_int("nuts.max_tree_depth", self.max_tree_depth)


@dataclass(frozen=True)
class RepulsiveConfig:
    """Repulsive deep ensemble of ``num_members`` vector fields (members are the draws)."""

    enabled: bool = False
    num_members: int = 50
    num_epochs: int = 2_501
    batch_size: int = 1_000

    def validate(self):
        _at_least_two("repulsive.num_members", self.num_members)
        _checks.positive_int("repulsive.num_epochs", self.num_epochs)
        _checks.positive_int("repulsive.batch_size", self.batch_size)


@dataclass(frozen=True)
class EvaluationConfig:
    """Calibration (same noise for every draw) and scaled (fresh 1,000·n² per draw) evaluation."""

    calib_bins: tuple[int, ...] = (5, 10, 50)
    calib_samples: int = 10_000_000
    scaled: bool = True
    scaled_bins: tuple[int, ...] = PAPER_SCALED_BINS
    scaled_factor: int = 1_000
    fit_bins: tuple[int, ...] = PAPER_FIT_BINS
    deviation_bins: int = 200
    solver: str = "rk4"
    solver_steps: int = 20
    chunk_size: int = 1_000_000

    def validate(self):
        for name in ("calib_bins", "scaled_bins", "fit_bins"):
            for i, n in enumerate(getattr(self, name)):
                _checks.positive_int(f"evaluation.{name}[{i}]", n)
        _nonempty("evaluation.calib_bins", self.calib_bins)
        _checks.positive_int("evaluation.calib_samples", self.calib_samples)
        _checks.positive_int("evaluation.scaled_factor", self.scaled_factor)
        _checks.positive_int("evaluation.deviation_bins", self.deviation_bins)
        _checks.one_of("evaluation.solver", self.solver, ("euler", "midpoint", "rk4", "dopri5",
                                                          "tsit5"))
        _checks.positive_int("evaluation.solver_steps", self.solver_steps)
        _checks.positive_int("evaluation.chunk_size", self.chunk_size)
        if self.scaled:
            missing = sorted(set(self.fit_bins) - set(self.scaled_bins))
            if missing:
                raise ValueError(f"evaluation.fit_bins {missing} are not in evaluation.scaled_bins "
                                 f"{list(self.scaled_bins)}")
            if len(self.fit_bins) < 2:
                raise ValueError(f"evaluation.fit_bins needs >= 2 binnings for the power-law fit, "
                                 f"got {list(self.fit_bins)}")


@dataclass(frozen=True)
class FiguresConfig:
    formats: tuple[str, ...] = ("png", "pdf")
    label_formats: tuple[str, ...] = ("png", "pdf")  # per-label figure sets (figures/<label>/)
    label_sets: str = "all"  # which labels get a figure set: "all", "headline" or "none"
    dpi: int = 150
    headline_vi_k: float = 10.0
    headline_adammcmc_sigma: float = 0.1

    def validate(self):
        for name in ("formats", "label_formats"):
            for i, f in enumerate(getattr(self, name)):
                _checks.one_of(f"figures.{name}[{i}]", f, ("png", "pdf", "svg"))
            _nonempty(f"figures.{name}", getattr(self, name))
        _checks.positive_int("figures.dpi", self.dpi)
        _checks.one_of("figures.label_sets", self.label_sets, ("all", "headline", "none"))


@dataclass(frozen=True)
class Config:
    """Everything the study depends on; saved with the results as config.json."""

    preset: str = "paper"
    seed: int = 0
    num_runs: int = 5
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    deterministic: DeterministicConfig = field(default_factory=DeterministicConfig)
    vi: VIConfig = field(default_factory=VIConfig)
    adammcmc: AdamMCMCConfig = field(default_factory=AdamMCMCConfig)
    nuts: NUTSConfig = field(default_factory=NUTSConfig)
    repulsive: RepulsiveConfig = field(default_factory=RepulsiveConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)

    def validate(self) -> Config:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        _checks.positive_int("num_runs", self.num_runs)
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate()
        for name in ("vi", "adammcmc", "repulsive"):
            section = getattr(self, name)
            if section.enabled and section.batch_size > self.data.num_train:
                raise ValueError(f"{name}.batch_size={section.batch_size} exceeds data.num_train="
                                 f"{self.data.num_train}")
        for m in ("adammcmc", "nuts"):
            if getattr(self, m).enabled and not self.deterministic.enabled:
                raise ValueError(f"{m}.enabled=true needs deterministic.enabled=true "
                                 "(it starts from the pretrained network)")
        if self.nuts.enabled and self.nuts.num_points > self.data.num_train:
            raise ValueError(f"nuts.num_points={self.nuts.num_points} exceeds data.num_train="
                             f"{self.data.num_train}")
        if not any(getattr(self, m).enabled for m in ("vi", "adammcmc", "nuts", "repulsive")):
            raise ValueError("no weight-posterior method is enabled "
                             "(vi, adammcmc, nuts, repulsive)")
        return self


def _nonempty(name, seq):
    if len(seq) == 0:
        raise ValueError(f"{name} must not be empty, got {seq!r}")


def _at_least_two(name, value):
    _checks.positive_int(name, value)
    if value < 2:
        raise ValueError(f"{name} must be >= 2 (a spread needs two draws), got {value!r}")


# ----------------------------------------------------------------------------- presets


def paper() -> Config:
    return Config(preset="paper")


def quick() -> Config:
    """~2.5 min of compute on a 2-core CPU: one run, VI k=10 and AdamMCMC σ=0.1, 20 draws each."""
    return Config(
        preset="quick",
        num_runs=1,
        deterministic=DeterministicConfig(num_epochs=300, chunk_epochs=100),
        vi=VIConfig(kl_weights=(10.0,), num_epochs=500, num_draws=20, chunk_epochs=250),
        adammcmc=AdamMCMCConfig(sigmas=(0.1,), num_samples=20, thinning=4, batch_size=500,
                                solver_steps=8),
        evaluation=EvaluationConfig(
            calib_bins=(5, 10, 50), calib_samples=40_000, scaled_bins=(2, 5, 10, 15, 20, 30),
            scaled_factor=20, fit_bins=(10, 15, 20, 30), deviation_bins=50, solver_steps=8,
            chunk_size=2**15,
        ),
        figures=FiguresConfig(label_formats=("png",)),
    )


def tiny() -> Config:
    return Config(
        preset="tiny",
        num_runs=2,
        data=DataConfig(num_train=400),
        network=NetworkConfig(hidden=(16, 16)),
        deterministic=DeterministicConfig(num_epochs=20, batch_size=100, chunk_epochs=10),
        vi=VIConfig(kl_weights=(10.0,), num_epochs=20, batch_size=100, num_draws=5,
                    chunk_epochs=10),
        adammcmc=AdamMCMCConfig(sigmas=(0.1,), num_samples=5, thinning=2, batch_size=100,
                                solver_steps=4),
        evaluation=EvaluationConfig(
            calib_bins=(3, 5), calib_samples=4_000, scaled_bins=(2, 3, 4, 5), scaled_factor=50,
            fit_bins=(3, 4, 5), deviation_bins=10, solver_steps=4, chunk_size=4_000,
        ),
        figures=FiguresConfig(formats=("png",), label_formats=("png",), label_sets="headline",
                              dpi=60),
    )


def replicate() -> Config:
    """The headline labels at the paper's training length on a 2-core CPU (≤ 2 h): one run,
    VI k=10 for 250,000 epochs and AdamMCMC σ=0.1 with 50 samples, 50 draws each."""
    return Config(
        preset="replicate",
        num_runs=1,
        vi=VIConfig(kl_weights=(10.0,), num_epochs=250_000, num_draws=50, chunk_epochs=2_500),
        adammcmc=AdamMCMCConfig(sigmas=(0.1,), num_samples=50, thinning=120),
        evaluation=EvaluationConfig(
            calib_bins=(5, 10, 50), calib_samples=1_000_000,
            scaled_bins=PAPER_SCALED_BINS[:-1], scaled_factor=50, chunk_size=2**17,
        ),
        figures=FiguresConfig(label_formats=("png",)),
    )


PRESETS = {"quick": quick, "paper": paper, "tiny": tiny, "replicate": replicate}


# ----------------------------------------------------------------------------- overrides


def apply_override(cfg, assignment: str):
    """Return ``cfg`` with one ``"dotted.name=value"`` assignment applied (value typed by field)."""
    if "=" not in assignment:
        raise ValueError(f"override must look like section.field=value, got {assignment!r}")
    name, raw = assignment.split("=", 1)
    path = name.strip().split(".")
    return _replace_path(cfg, path, raw.strip(), name.strip())


def _replace_path(obj, path, raw, full_name):
    fields = {f.name: f for f in dataclasses.fields(obj)}
    head = path[0]
    if head not in fields:
        raise ValueError(f"unknown setting {full_name!r}: {type(obj).__name__} has no field "
                         f"{head!r} (fields: {sorted(fields)})")
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown setting {full_name!r}: {head!r} is not a section")
        return dataclasses.replace(obj, **{head: _replace_path(current, path[1:], raw, full_name)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"setting {full_name!r} is a section; set one of its fields instead")
    return dataclasses.replace(obj, **{head: _parse(hints[head], raw, full_name)})


def _parse(tp, raw: str, name: str):
    try:
        if tp is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typing.get_origin(tp) is tuple:
            (elem, *_) = typing.get_args(tp)
            text = raw.strip("()[] ")
            items = [s.strip() for s in text.split(",") if s.strip()]
            return tuple(_parse(elem, s, name) for s in items)
        if tp is int:
            value = ast.literal_eval(raw.replace("_", ""))
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError
            return value
        if tp is float:
            return float(raw)
        if tp is str:
            return raw
    except (ValueError, SyntaxError):
        pass
    raise ValueError(f"cannot parse {raw!r} as {getattr(tp, '__name__', tp)} for setting {name!r}")


def resolve(preset: str = "quick", overrides=()) -> Config:
    """The preset's ``Config`` with ``overrides`` applied, validated."""
    _checks.one_of("preset", preset, tuple(PRESETS))
    cfg = PRESETS[preset]()
    for assignment in overrides:
        cfg = apply_override(cfg, assignment)
    return cfg.validate()


# ----------------------------------------------------------------------------- (de)serialisation


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict, cls=Config):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        tp, value = hints[f.name], d[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(value, tp)
        elif typing.get_origin(tp) is tuple:
            kwargs[f.name] = tuple(value)
        else:
            kwargs[f.name] = value
    return cls(**kwargs)


def fingerprint(*parts) -> str:
    """Short stable hash of JSON-able parts (config sections, upstream fingerprints)."""
    text = json.dumps([p if not dataclasses.is_dataclass(p) else to_dict(p) for p in parts],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def method_grid(cfg: Config) -> list[tuple[str, str, float | None]]:
    """Enabled (method, label, hyper-parameter) triples, e.g. ("vi", "vi_k10", 10.0)."""
    grid = []
    if cfg.vi.enabled:
        grid += [("vi", f"vi_k{k:g}", float(k)) for k in cfg.vi.kl_weights]
    if cfg.adammcmc.enabled:
        grid += [("adammcmc", f"adammcmc_sigma{s:g}", float(s)) for s in cfg.adammcmc.sigmas]
    if cfg.nuts.enabled:
        grid.append(("nuts", "nuts", None))
    if cfg.repulsive.enabled:
        grid.append(("repulsive", f"repulsive_m{cfg.repulsive.num_members}", None))
    return grid
