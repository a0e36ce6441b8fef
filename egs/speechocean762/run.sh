#!/usr/bin/env bash
# speechocean762 (real read English, 16 kHz, adults and children; Apache-2.0): broadband teachers,
# narrowband (simulated telephone) and broadband CNN students, sized for 2 CPU cores.
#
#   git clone https://github.com/jimbozhang/speechocean762 /path/to/speechocean762   # once, by you
#   ./run.sh --corpus-dir /path/to/speechocean762                 # WAVE/, train/, test/
#   ./run.sh --corpus-dir ... --stop-stage 3                      # import, 8 kHz view, fbank, tokens
#   ./run.sh --corpus-dir ... --use-gpu true                      # the bigger models of conf/gpu/
#
# The official train/ and test/ lists are Kaldi data dirs whose wav.scp paths start at the
# corpus root; 10 training speakers are held out as dev (tuning and early stopping), the
# official test is for the final figures only. Options: see recipes/kd_asr.sh.
set -euo pipefail
cd "$(dirname "$0")"
args=()
use_gpu=false
corpus_dir=
while (( $# > 0 )); do
  case $1 in
    --use-gpu) use_gpu=${2:?--use-gpu needs true or false}; shift 2 ;;
    --corpus-dir) corpus_dir=${2:?--corpus-dir needs a directory}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
experiments=conf/experiments.txt
ensembles=
if [ "$use_gpu" = true ]; then
  experiments=conf/gpu/experiments.txt
  ensembles="ensemble_wb=vgg_wb+lstm_wb"   # the two teachers decoded together: the results' ensemble row
fi
exec ../../recipes/kd_asr.sh --corpus kaldi ${corpus_dir:+--corpus-dir "$corpus_dir" --kaldi-wav-root "$corpus_dir"} \
  --train-part train --dev-part dev --test-parts test --dev-speakers 10 --sampling-rate 16000 \
  --speed-perturb "0.9 1.0 1.1" --token-kind char \
  --use-gpu $use_gpu --experiments $experiments ${ensembles:+--ensembles "$ensembles"} "${args[@]}"
