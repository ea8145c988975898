# The pair-frame study of docs/open_data_pair with the AdamMCMC chain's Adam at 1e-5, the rate the
# flow-matching fit ended at (issue 22.6: does the chain's restart at a constant 1e-3 with fresh
# moments move the Z peak?). The same command as docs/open_data_pair/command.sh plus
# --set adammcmc.learning_rate=1e-5; its deterministic stage reproduces that study's fit bit for
# bit (every parameter and epoch loss equal), so the chain starts from the same fit. About 16 min on
# a 2-core CPU shared with other jobs (deterministic 198 s, AdamMCMC 84 s, evaluation ~10 min).
python -m experiments.cli paper --preset quick \
  -o outputs/zee_pair_lr1e-5 \
  --set data.name=file --set data.path=benchmarks/open_data/zee_pair_events.npz \
  --set data.reference=benchmarks/open_data/zee_pair_reference.npz --set data.num_train=4000 \
  --set data.observable=benchmarks.open_data.zee:PAIR_MASS_PT \
  --set data.preprocess=logit:60:120,log,standardise,logit:-1:1,periodic:0:2pi \
  --set deterministic.num_epochs=5000 --set deterministic.chunk_epochs=500 \
  --set vi.enabled=false --set adammcmc.batch_size=200 --set adammcmc.solver_steps=4 \
  --set adammcmc.learning_rate=1e-5 \
  --set evaluation.classifier_retrain=0 --no-progress
# the Z peak per posterior draw against the held-out events (peak.json)
python -m benchmarks.open_data.analyse_study outputs/zee_pair_lr1e-5 adammcmc_sigma0.1 > peak.json
