#!/usr/bin/env bash
# kdasr on your own corpus, prepared as Kaldi data dirs (wav.scp, text, and
# optionally segments, utt2spk): broadband teachers, narrowband (simulated
# telephone) CNN students. See README.md for what the dirs must hold.
#
#   ./run.sh --data-root /path/to/kaldi/egs/x/s5/data                 # data/{train,dev,test}
#   ./run.sh --data-root /path/to/data --train-part train_si284 --dev-part test_dev93 \
#            --test-parts "test_eval92 test_eval93"                   # your dir names
#   ./run.sh --data-root ... --stop-stage 3        # data, 8 kHz view, fbank and tokens only
#   ./run.sh --data-root ... --token-kind bpe --bpe-vocab 500
#   ./run.sh --data-root ... --use-gpu false       # CPU-sized models (conf/cpu/; default without a GPU)
#
# --data-root (or --corpus-dir, the same) holds one Kaldi data dir per part; the
# part names are the dir names. Options: see recipes/kd_asr.sh
# (bash run.sh --help lists them with their values).
set -euo pipefail
cd "$(dirname "$0")"
args=()
use_gpu=auto   # true: conf/ (GPU sizes); false: conf/cpu/ (2 CPU cores); auto: true when torch sees a GPU
while (( $# > 0 )); do
  case $1 in
    --use-gpu) use_gpu=${2:?--use-gpu needs true, false or auto}; shift 2 ;;
    --data-root=*) args+=(--corpus-dir "${1#*=}"); shift ;;
    --data-root) args+=(--corpus-dir "${2:?--data-root needs a directory}"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ "$use_gpu" = auto ]; then
  use_gpu=$(python3 -c 'import torch; print(str(torch.cuda.is_available()).lower())' 2>/dev/null || echo false)
fi
experiments=conf/cpu/experiments.txt
[ "$use_gpu" = true ] && experiments=conf/experiments.txt
exec ../../recipes/kd_asr.sh --corpus kaldi \
  --train-part train --dev-part dev --test-parts test \
  --speed-perturb "0.9 1.0 1.1" --token-kind char \
  --use-gpu $use_gpu --experiments $experiments "${args[@]}"
