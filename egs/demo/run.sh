#!/usr/bin/env bash
# kdasr demo: synthesized digits and commands (espeak-ng), broadband teachers,
# CNN students on broadband and narrowband (telephone) audio.
#
#   ./run.sh                      # the whole recipe (default corpus size)
#   ./run.sh --demo-size tiny     # the CI-sized variant
#   ./run.sh --stage 4 --stop-stage 4
#
# Options: see recipes/kd_asr.sh. Results: exp/RESULTS.md, exp/wer_vs_params.png.
set -euo pipefail
cd "$(dirname "$0")"
exec ../../recipes/kd_asr.sh --corpus demo --experiments conf/experiments.txt \
  --token-kind bpe --bpe-vocab 100 --train-jobs 2 --ensembles "ensemble_wb=vgg_wb+lstm_wb" "$@"
