# A deep ensemble on the pair-frame Z -> ee events (docs/results/open_data.md, "VI on real
# events"), 2026-12-06, idle 2-core CPU: 10 members, each a flow-matching fit of the file defaults
# (128x3, 5,000 epochs, the cosine rate it inherits from deterministic.learning_rate_schedule).
# Run on a copy of outputs/zee_pair_quick_default (../quick_default/command.sh), so the same fit,
# VI and AdamMCMC; the ensemble trained in 570 s (the budget predicted 8 min), its evaluation 51 s.
python -m experiments.cli paper --preset quick -o outputs/zee_ens --overwrite \
  --set data.name=file --set data.path=benchmarks/open_data/zee_pair_events.npz \
  --set data.reference=benchmarks/open_data/zee_pair_reference.npz --set data.num_train=4000 \
  --set data.observable=benchmarks.open_data.zee:PAIR_MASS_PT \
  --set data.preprocess=logit:60:120,log,standardise,logit:-1:1,periodic:0:2pi \
  --set ensemble.enabled=true --no-progress
python -m benchmarks.open_data.analyse_study outputs/zee_ens ensemble_m10 > peak_ensemble.json
