# The comparison of every posterior family on the 4-d shell (docs/results/compare.md), run from
# the repository root: quick preset, T = 1 for every tempered family. About 19 min on the
# project's shared 2-core CPU (2026-12-06, load 6-14). The folder here keeps the small files
# (compare.*, report.*, config.json, figures/compare.png); draws, histograms and checkpoints
# stay in outputs/compare-shell4.
bayesiamp compare --preset quick --set data.name=shell --set data.dim=4 -o outputs/compare-shell4
