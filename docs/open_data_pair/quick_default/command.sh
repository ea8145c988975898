# The pair-frame Z -> ee events with the quick preset and nothing but the data settings: the
# file defaults (128x3 field, cosine schedule, 5,000 flow-matching epochs; AdamMCMC's rate the
# one the fit ended at, 1e-5; VI from the flow-matching fit, rho -6, cosine, 1,500 epochs)
# reproduce docs/open_data_pair's flow-matching fit number for number (peak_deterministic.json
# equal to ../peak_deterministic.json). 7 min 0 s on the idle 2-core CPU (flow matching 56 s,
# VI 45 s, AdamMCMC 138 s, evaluation 142 s), 2026-12-06, after VI's file defaults and the
# evaluation's even chunks (before the chunks: 7 min 23 s, evaluation 167 s, the same numbers);
# the run before VI's defaults (VI from random means for 500 epochs) took 6 min 27 s and gave
# the same flow-matching and AdamMCMC numbers (peak_deterministic.json and peak.json unchanged).
python -m experiments.cli paper --preset quick -o outputs/zee_pair_quick_default \
  --set data.name=file --set data.path=benchmarks/open_data/zee_pair_events.npz \
  --set data.reference=benchmarks/open_data/zee_pair_reference.npz --set data.num_train=4000 \
  --set data.observable=benchmarks.open_data.zee:PAIR_MASS_PT \
  --set data.preprocess=logit:60:120,log,standardise,logit:-1:1,periodic:0:2pi --no-progress
python -m benchmarks.open_data.analyse_study outputs/zee_pair_quick_default deterministic > peak_deterministic.json
python -m benchmarks.open_data.analyse_study outputs/zee_pair_quick_default adammcmc_sigma0.1 > peak.json
python -m benchmarks.open_data.analyse_study outputs/zee_pair_quick_default vi_k10 > peak_vi.json
