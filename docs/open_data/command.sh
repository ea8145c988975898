# The worked open-data study of docs/results/open_data.md (run from the repository root; about
# 14 min on a shared 2-core CPU). The events come with the repository (benchmarks/open_data/,
# made by `python -m benchmarks.open_data.make_zee Zee_Run2011A.csv`).
python -m experiments.cli paper --preset quick -o outputs/zee \
  --set data.name=file --set data.path=benchmarks/open_data/zee_events.npz \
  --set data.reference=benchmarks/open_data/zee_reference.npz --set data.num_train=4000 \
  --set data.observable=benchmarks.open_data.zee:MASS_PT \
  --set data.preprocess=logcut:25,standardise,logcut:25,standardise,periodic:0:2pi \
  --set network.hidden=128,128,128 --set network.num_frequencies=8 \
  --set deterministic.num_epochs=6000 --set deterministic.chunk_epochs=500 \
  --set vi.enabled=false --set adammcmc.batch_size=200 --set adammcmc.solver_steps=4 \
  --set evaluation.classifier_retrain=0
# the Z peak per draw against the held-out events (docs/open_data/peak.json)
python -m benchmarks.open_data.analyse_study outputs/zee adammcmc_sigma0.1
# the field measurements (docs/open_data/field_measurements.json)
python -m benchmarks.open_data.measure_field --configs 32x3:3:2500 64x3:3:5000 128x3:3:12000 \
  128x3:8:6000 128x3:8:6000:cos
