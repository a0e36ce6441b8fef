#!/usr/bin/env bash
# kdasr on Aurora-4 (WSJ0 5k read speech with additive noise and channel
# mismatch): broadband (16 kHz) teachers trained on the multi-condition set,
# narrowband (8 kHz) CNN students taught by them; test = eval92 in its 14
# conditions, reported by group A (clean, 01), B (noise, 02-07), C (channel
# mismatch, 08) and D (noise + channel, 09-14). See README.md for the layout.
#
#   ./run.sh --corpus-dir /data/aurora4 --transcript-dir /data/wsj0
#   ./run.sh ... --stop-stage 3          # data, 8 kHz view, fbank and tokens only
#   ./run.sh ... --nb-source corpus      # students on Aurora-4's own 8 kHz audio
#   ./run.sh ... --nj 8 --cmd "../../tools/slurm.sh --num-threads 8 --mem 16G"
#
# The 8 kHz view of the students: by default (--nb-source simulate) every cut
# is passed through a simulated telephone channel (300-3400 Hz band-pass,
# 8 kHz; --mu-law true adds G.711). Aurora-4 also ships its own 8 kHz copy
# (wv2-like, G.712-filtered, its own noise mix); --nb-source corpus imports that
# copy instead, with the same cut ids and dev speakers, as the nb view. Either
# way the broadband teachers' soft labels reach the students by cut id.
#
# Dev: Aurora-4 has no dev list the importer reads (dev_0330 is not imported),
# so --dev-speakers training speakers (seeded by --dev-seed) are held out of
# training and their multi-condition utterances form part dev.
#
# Options: see recipes/kd_asr.sh (bash run.sh --help lists them with their values).
set -euo pipefail
cd "$(dirname "$0")"
exec ../../recipes/kd_asr.sh --corpus aurora4 \
  --train-part train_multi --dev-part dev --test-parts test \
  --dev-speakers 4 --normalize-text wsj --speed-perturb "0.9 1.0 1.1" \
  --token-kind char \
  --experiments conf/experiments.txt "$@"
