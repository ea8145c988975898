# The comparison of every posterior family on the ring (docs/results/compare.md), run from the
# repository root on the project's shared 2-core CPU (2026-12-06, load 6-14). The folder here
# keeps the small files (compare.*, report.*, config.json, figures/compare.png); draws,
# histograms and checkpoints stay in outputs/compare-ring.
# 1. quick preset, T = 1 for every tempered family (about 16 min):
bayesiamp compare --preset quick -o outputs/compare-ring
# 2. the same folder with a second temperature per tempered family (T ≈ s² of the first run's
#    held-out scales), so the held-out check can choose it; VI, AdamMCMC and the ensembles are
#    reused, Laplace, SGLD, SGHMC, SWAG retrained and re-evaluated (about 11 min).
#    This run's files are the ones committed.
bayesiamp compare --preset quick -o outputs/compare-ring --overwrite \
  --set laplace.temperatures=1,16 --set sgld.temperatures=1,8 \
  --set sghmc.temperatures=1,16 --set swag.temperatures=1,10
