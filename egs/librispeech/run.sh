#!/usr/bin/env bash
# kdasr on LibriSpeech (read audiobooks, 16 kHz): broadband VGG and BiLSTM
# teachers on train-clean-100, CNN students on the broadband audio and on its
# narrowband (simulated telephone) view, 500 BPE tokens; dev-clean for model
# selection, test-clean and test-other for the results. Nothing is downloaded:
# lhotse's librispeech recipe reads the corpus already on disk.
#
#   ./run.sh --corpus-dir /data/LibriSpeech
#   ./run.sh --corpus-dir /data/LibriSpeech --stop-stage 3     # data, fbank, tokens only
#   ./run.sh --corpus-dir /data/LibriSpeech --train-part train-clean-360
#   ./run.sh ... --nj 16 --cmd "../../tools/slurm.sh --num-threads 16 --mem 32G"
#
# --corpus-dir is the LibriSpeech/ directory that holds train-clean-100/,
# dev-clean/, ... (see README.md). Options: see recipes/kd_asr.sh
# (bash run.sh --help lists them with their values).
set -euo pipefail
cd "$(dirname "$0")"
exec ../../recipes/kd_asr.sh --corpus lhotse --lhotse-recipe librispeech --lhotse-opts "num_jobs=4" \
  --sampling-rate 16000 --speed-perturb "0.9 1.0 1.1" \
  --train-part train-clean-100 --dev-part dev-clean --test-parts "test-clean test-other" \
  --token-kind bpe --bpe-vocab 500 \
  --experiments conf/experiments.txt "$@"
