#!/usr/bin/env bash
# The shared kdasr pipeline: every egs/<corpus>/run.sh sets its options and calls this.
#
#   data → narrowband view → fbank (wb, nb) → tokens → teachers → soft labels
#   → students → decode → report
#
# Stages run alone with --stage N --stop-stage M; a finished experiment leaves
# exp/<name>/.done and is skipped on a rerun, a killed one resumes from its
# last checkpoint. Experiments are listed in a plain file (--experiments), one
# per line:  name  role  view  config.yaml [config.yaml ...] [key=value ...]
# role is teacher or student; view is wb (16 kHz) or nb (8 kHz telephone).
set -euo pipefail

# ------------------------------------------------------------------ options
stage=0
stop_stage=100
corpus=demo              # demo | kaldi | tsv | lhotse | aurora4
corpus_dir=              # source data (not used by demo)
demo_size=default        # demo corpus size: tiny | small | default
demo_seed=0
lhotse_recipe=           # with --corpus lhotse, e.g. librispeech
train_part=train
dev_part=dev
test_parts=test
views="wb nb"
token_kind=char          # char | bpe | phone
bpe_vocab=100
lexicon=                 # phone lexicon (default for the demo: data/lexicon.txt)
experiments=conf/experiments.txt
seeds=1                  # students are trained once per seed (name_seedN)
decode_methods=greedy
nj=2
cmd=../../tools/run.sh
data=data
exp=exp

help_message="Usage: $0 [options]   (see recipes/kd_asr.sh for every option)"
kdasr_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$kdasr_root/tools/parse_options.sh"

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

lang_dir=$data/lang_${token_kind}
all_parts="$train_part $dev_part $test_parts"
parts_csv=$(echo $all_parts | tr ' ' ',')

# Lines of the experiments file without comments/blank lines.
read_experiments() { grep -v '^\s*#' "$experiments" | grep -v '^\s*$'; }

# Split a config list into files and --set overrides (key=value words).
config_args() {
  local w
  for w in "$@"; do
    if [[ $w == *=* ]]; then printf -- '--set %s ' "$w"; else printf '%s ' "$w"; fi
  done
}

# train NAME ROLE VIEW SEED CONFIG... : one experiment, skipped when .done exists.
train_one() {
  local name=$1 role=$2 view=$3 seed=$4; shift 4
  local dir=$exp/$name
  if [ -f "$dir/.done" ]; then log "skip $name (done)"; return; fi
  log "train $name ($view, seed $seed)"
  # shellcheck disable=SC2046
  kdasr train $(config_args "$@") --exp-dir "$dir" \
    --set data.train_cuts=$data/fbank/cuts_${train_part}_${view}.jsonl.gz \
    --set data.dev_cuts=$data/fbank/cuts_${dev_part}_${view}.jsonl.gz \
    --set data.cmvn=$data/fbank/cmvn_${view}.json \
    --set data.lang_dir=$lang_dir \
    --set train.seed=$seed --set view=$view --set role=$role
  touch "$dir/.done"
}

# Each experiment line expanded to "name role view seed configs..." (students once per seed).
expand_experiments() {
  local name role view rest s
  while read -r name role view rest; do
    if [ "$role" = teacher ]; then
      echo "$name $role $view 1 $rest"
    else
      for s in $seeds; do
        if [ "$(echo $seeds | wc -w)" -gt 1 ]; then echo "${name}_seed$s $role $view $s $rest";
        else echo "$name $role $view $s $rest"; fi
      done
    fi
  done < <(read_experiments)
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: corpus → lhotse manifests ($corpus)"
  if [ ! -f $data/manifests/.import.done ]; then
    case $corpus in
      demo) kdasr prepare demo --out-dir $data --size $demo_size --seed $demo_seed --num-jobs $nj ;;
      kaldi) for p in $all_parts; do
               kdasr prepare import kaldi $corpus_dir/$p --part $p --out-dir $data/manifests; done ;;
      tsv) for p in $all_parts; do
             kdasr prepare import tsv $corpus_dir/$p.tsv --part $p --out-dir $data/manifests; done ;;
      lhotse) kdasr prepare import lhotse --recipe $lhotse_recipe --corpus-dir $corpus_dir \
                --parts $parts_csv --out-dir $data/manifests ;;
      aurora4) kdasr prepare import aurora4 --corpus-dir $corpus_dir --sampling-rate 16000 \
                 --out-dir $data/manifests ;;
      *) echo "$0: unknown --corpus $corpus" >&2; exit 1 ;;
    esac
    touch $data/manifests/.import.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [[ " $views " == *" nb "* ]]; then
  log "Stage 1: narrowband (telephone) view, same cut ids"
  if [ ! -f $data/narrowband/.done ]; then
    kdasr prepare narrowband --manifest-dir $data/manifests --parts $parts_csv \
      --out-dir $data/narrowband --num-jobs $nj
    touch $data/narrowband/.done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: fbank features and global CMVN"
  for view in $views; do
    kdasr prepare fbank --manifest-dir $data/manifests --parts $parts_csv --view $view \
      --out-dir $data/fbank --num-jobs $nj --cmvn-part $train_part
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: tokens ($token_kind) in $lang_dir"
  if [ ! -f $lang_dir/tokens.txt ]; then
    extra=""
    [ $token_kind = bpe ] && extra="--vocab-size $bpe_vocab"
    [ $token_kind = phone ] && extra="--lexicon ${lexicon:-$data/lexicon.txt}"
    # shellcheck disable=SC2086
    kdasr prepare tokens --kind $token_kind --cuts $data/manifests/cuts_${train_part}.jsonl.gz \
      --lang-dir $lang_dir $extra
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: teachers"
  while read -r name role view seed rest; do
    [ "$role" = teacher ] || continue
    # shellcheck disable=SC2086
    train_one $name $role $view $seed $rest
  done < <(expand_experiments)
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: students"
  while read -r name role view seed rest; do
    [ "$role" = student ] || continue
    # shellcheck disable=SC2086
    train_one $name $role $view $seed $rest
  done < <(expand_experiments)
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: decode ($decode_methods) on $test_parts"
  while read -r name role view seed rest; do
    for part in $test_parts; do
      for method in $decode_methods; do
        out=$exp/$name/decode_${part}_${view}_${method}
        [ -f $out/decode.yaml ] && continue
        kdasr decode --checkpoint $exp/$name/best.pt --lang-dir $lang_dir --method $method \
          --cuts $data/fbank/cuts_${part}_${view}.jsonl.gz --out-dir $out
      done
    done
  done < <(expand_experiments)
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: results table"
  dirs=$(expand_experiments | awk -v e=$exp '{print e"/"$1}')
  # shellcheck disable=SC2086
  kdasr report $dirs --out $exp/RESULTS.md --plot $exp/wer_vs_params.png \
    --plot-test ${test_parts%% *}_wb
fi
