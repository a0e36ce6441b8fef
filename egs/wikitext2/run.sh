#!/usr/bin/env bash
# WikiText-2 LM perplexities (text only): LSTM teachers, a student trained alone, and students
# distilled with and without trust regularization (recipes/lm.sh stages 2-5).
#
#   ./run.sh --wikitext-dir /path/to/wikitext-2      # train.txt valid.txt test.txt, as distributed
#                                                    # with PyTorch's word_language_model example
#   ./run.sh --wikitext-dir DIR --lm-overrides "train.epochs=1"   # a quick look
#
# Results: exp/lm/RESULTS.md. The corpus (CC BY-SA) is read from your copy, never stored here.
set -euo pipefail
cd "$(dirname "$0")"
wikitext_dir=
lm_overrides=
teacher_seeds="1"
. ../../tools/parse_options.sh
[ -n "$wikitext_dir" ] || { echo "usage: $0 --wikitext-dir DIR [--teacher-seeds '1 2'] [--lm-overrides ...]" >&2; exit 1; }
for f in train valid test; do
  [ -f $wikitext_dir/$f.txt ] || { echo "$0: $wikitext_dir/$f.txt is missing" >&2; exit 1; }
done
mkdir -p data/wikitext2
ln -sf "$(cd $wikitext_dir && pwd)/train.txt" data/wikitext2/train.txt
ln -sf "$(cd $wikitext_dir && pwd)/valid.txt" data/wikitext2/dev.txt
ln -sf "$(cd $wikitext_dir && pwd)/test.txt" data/wikitext2/test.txt
exec ../../recipes/lm.sh --text-dir data/wikitext2 --stop-stage 5 --teacher-seeds "$teacher_seeds" \
  --lm-overrides "$lm_overrides"
