# VI on the pair-frame Z -> ee events (docs/results/open_data.md, "VI on real events"),
# 2026-12-06, 2-core CPU (other jobs ran beside some of these; the seconds are not timings).
#
# 1. Variants of the VI start, rate and length on run 0 of docs/open_data_pair/quick_default's
#    study (its data, field and flow-matching fit), KL weights 10 and 1, 20 draws, the Z peak per
#    draw against the 7,000 held-out events -> ../vi_measurements.json (one line each, A-E):
python -m benchmarks.open_data.measure_vi A_scratch_cos scratch 5000 10,1 1e-3 0.01 -3
python -m benchmarks.open_data.measure_vi B_fm_cos1e-4 fm 2000 10,1 1e-4 0.01 -6
python -m benchmarks.open_data.measure_vi C_fm_cos1e-3 fm 5000 10,1 1e-3 0.01 -6
python -m benchmarks.open_data.measure_vi D_scratch_cos_rho6 scratch 5000 10,1 1e-3 0.01 -6
python -m benchmarks.open_data.measure_vi E_fm_cos1e-3_1500 fm 1500 10,1 1e-3 0.01 -6
# 2. The whole study with VI from the flow-matching fit (vi.init=deterministic, rho -6, cosine
#    rate: the file defaults since this measurement) at 1,500 and 5,000 VI epochs, k = 1 and 10:
#    the held-out check, the calibration against the reference, the amplification and its
#    verdict (epochs1500/, epochs5000/: config.json, report.json, peak_vi_k*.json). Run on a copy
#    of outputs/zee_pair_quick_default, so the same flow-matching fit and AdamMCMC chain.
for n in 1500 5000; do
  python -m experiments.cli paper --preset quick -o outputs/zee_vi_fm$n --overwrite \
    --set data.name=file --set data.path=benchmarks/open_data/zee_pair_events.npz \
    --set data.reference=benchmarks/open_data/zee_pair_reference.npz --set data.num_train=4000 \
    --set data.observable=benchmarks.open_data.zee:PAIR_MASS_PT \
    --set data.preprocess=logit:60:120,log,standardise,logit:-1:1,periodic:0:2pi \
    --set vi.init=deterministic --set vi.init_rho=-6 --set vi.num_epochs=$n \
    --set vi.kl_weights=1,10 --no-progress
  for k in 1 10; do
    python -m benchmarks.open_data.analyse_study outputs/zee_vi_fm$n vi_k$k > epochs$n/peak_vi_k$k.json
  done
done
