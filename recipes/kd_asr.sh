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
# role is teacher or student, view wb (16 kHz) or nb (8 kHz telephone).
# `kdasr plan` turns the list into the plan the stages run (exp/plan/: each
# experiment's resolved config, its stage, whose archive or checkpoint it
# reads); config paths missing here are taken from the shared recipes/conf/.
# An experiment starts once the experiments it reads are trained (and their
# archives written), the first ready one in plan order whenever a job is free.
set -euo pipefail

# ------------------------------------------------------------------ options
stage=0
stop_stage=100
corpus=demo              # demo | kaldi | tsv | lhotse | aurora4
corpus_dir=              # source data (not used by demo)
demo_size=default        # demo corpus size: tiny | small | default
demo_seed=0
lhotse_recipe=           # with --corpus lhotse, e.g. librispeech
lhotse_opts=             # with --corpus lhotse: KEY=VALUE options of lhotse's prepare_<recipe>, e.g. "num_jobs=4"
kaldi_wav_root=          # with --corpus kaldi: where relative wav.scp paths start (default: the parent of --corpus-dir)
sampling_rate=           # kaldi | tsv | lhotse: required rate of the source audio (default: any)
skip_bad=false           # import: leave out bad utterances (listed in data/manifests/import_<part>.skipped.txt)
dev_speakers=0           # aurora4, kaldi: training speakers held out as part dev (for corpora without a dev list)
dev_seed=0               # aurora4, kaldi: seed of the choice of dev speakers
speed_perturb=           # speed factors of precomputed training copies <id>_sp<f>, e.g. "0.9 1.0 1.1" (empty: none)
transcript_dir=          # aurora4: where the WSJ0 .dot/.lsn transcripts are, if not under --corpus-dir
normalize_text=none      # aurora4: none | wsj (drop WSJ markup such as [noise] and <word>, as Kaldi does)
nb_source=simulate       # 8 kHz view: simulate (telephone channel on the wb audio) | corpus (aurora4's own 8 kHz copy)
mu_law=false             # nb_source=simulate: add G.711 mu-law companding
train_part=train
dev_part=dev
test_parts=test
views="wb nb"
token_kind=char          # char | bpe | phone
bpe_vocab=100
lexicon=                 # phone lexicon (default for the demo: data/lexicon.txt)
experiments=conf/experiments.txt
seeds=1                  # students are trained once per seed (name_seedN)
decode_methods="greedy beam wfst"   # greedy | beam (flashlight, lexicon + n-gram LM) | wfst (TLG, same LM)
use_gpu=                 # true: stage 8 decodes on CUDA (network, greedy/beam, batched torch WFST); false: CPU; empty: CUDA if any
lm_order=3               # word n-gram of the WFST graph, trained on the training transcripts
lm_weights="0.3 0.5 0.7 1.0 1.4"  # beam, wfst: LM weights tried on the dev part; the test is decoded with
                         # the best (lm-weight-scan-*.md next to it); empty: the decoders' default, 1.0
kd_temperature=2         # temperature of the teachers' soft labels
ensembles=               # ensemble rows of stage 8/9: "NAME=A+B ...", e.g. "ensemble_wb=vgg_wb+lstm_wb": the listed
                         # experiments decoded together (posteriors averaged after re-timing onto A's spikes)
train_jobs=1             # experiments trained (and decoded) at once, each with nproc/train_jobs threads
train_overrides=         # key=value words added to every experiment, e.g. "train.epochs=2"
train_launcher=          # prefix of `kdasr train`, e.g. "torchrun --standalone --nproc-per-node 4 --no-python"
                         # (multi-GPU DDP) or "tools/slurm_torchrun.sh --nodes 2 --gpu 4 exp/log/train.log"
lm_stage=false           # stage 10: LSTM LMs, distillation and N-best rescoring (recipes/lm.sh)
lm_opts=                 # options of recipes/lm.sh, e.g. "--acoustic cnn_wb --teacher-seeds '1 2'"
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

# logged [JOB=1:N] LOG COMMAND...: run through $cmd (tools/run.sh or tools/slurm.sh) with a log
# per job; when a job fails, the end of its log is printed too.
logged() {
  local range="" var n i f
  if [[ $1 =~ ^[A-Z_]+=[0-9]+:[0-9]+$ ]]; then range=$1; shift; fi
  # shellcheck disable=SC2086
  if ! $cmd $range "$@"; then
    var=${range%%=*} n=${range##*:}
    for i in $(seq 1 ${n:-1}); do
      f=$1; [ -n "$range" ] && f=${1//$var/$i}
      grep -q '^# Ended (code 0)' "$f" 2>/dev/null || { echo "--- end of $f:"; tail -n 20 "$f"; } >&2
    done
    exit 1
  fi
}

# The plan of the experiments file (kdasr plan): exp/plan/<name>.yaml, the resolved config of
# each experiment, and exp/plan/plan.tsv, read into plan_* below. plan_names: the listed
# experiments in run order (stage 4 first); plan_* also know the unlisted ones they read.
declare -A plan_view plan_seed plan_stage plan_deps plan_archived plan_config
plan_names=() plan_all=()
mkdir -p $exp/log
log "Plan of $experiments (seeds $seeds), also in $exp/plan/plan.tsv:"
# shellcheck disable=SC2046
kdasr plan "$experiments" --seeds "$seeds" --exp-dir $exp --data-dir $data --train-part $train_part \
  --dev-part $dev_part --lang-dir $lang_dir --shared-configs "$kdasr_root/recipes" \
  $(for w in $train_overrides; do printf -- '--set %s ' "$w"; done) --out-dir $exp/plan
while IFS=$'\t' read -r p_name _ p_view p_seed p_stage p_deps p_archived p_config; do
  [ "$p_name" = name ] && continue
  plan_view[$p_name]=$p_view plan_seed[$p_name]=$p_seed plan_stage[$p_name]=$p_stage
  plan_deps[$p_name]=${p_deps//,/ } plan_archived[$p_name]=$p_archived plan_config[$p_name]=$p_config
  plan_all+=("$p_name")
  [ "$p_stage" != - ] && plan_names+=("$p_name")
done < $exp/plan/plan.tsv

# --ensembles: NAME -> its members, each an experiment of the plan (decoded together in stage 8).
declare -A ens_members
for e in $ensembles; do
  members=${e#*=}
  [[ $e == *=*+* ]] || { echo "$0: --ensembles: '$e' is not NAME=A+B[+...]" >&2; exit 1; }
  for m in ${members//+/ }; do
    [ -n "${plan_view[$m]:-}" ] || { echo "$0: --ensembles: $m (of ${e%%=*}) is not an experiment of $experiments" >&2; exit 1; }
  done
  ens_members[${e%%=*}]=${members//+/ }
done
# decode_view NAME: the view NAME decodes (an ensemble's: its first member's).
decode_view() {
  local members=${ens_members[$1]:-$1}
  echo ${plan_view[${members%% *}]}
}

# train_one NAME: one experiment from its planned config, skipped when .done exists.
train_one() {
  local name=$1 dir=$exp/$1
  if [ -f "$dir/.done" ]; then log "skip $name (done)"; return; fi
  log "train $name (${plan_view[$name]}, seed ${plan_seed[$name]})"
  $train_launcher kdasr train "${plan_config[$name]}" --exp-dir "$dir"
  touch "$dir/.done"
}

# dump_archive NAME: write exp/NAME/softlabels (once) on the training cuts of NAME's view.
dump_archive() {
  local name=$1 out=$exp/$1/softlabels view=${plan_view[$1]}
  [ -f $out/cuts.jsonl.gz ] && return
  log "soft labels of $name (T=$kd_temperature), keyed by cut id"
  # nproc/nj threads per dump job, one beside running trainings.
  local threads=$(( pool_running > 0 ? 1 : $(nproc) / nj )); (( threads < 1 )) && threads=1
  OMP_NUM_THREADS=$threads logged JOB=1:$nj $exp/$name/log/softlabels.JOB.log \
    kdasr soft-labels --checkpoint $exp/$name/best.pt \
      --cuts $data/fbank/cuts_${train_part}_${view}.jsonl.gz --out-dir $out \
      --temperature $kd_temperature --view $view --job JOB --num-jobs $nj
  kdasr archive merge $out
  kdasr archive info $out
}

# dump_archives [--trained]: the archive of every experiment the plan archives (teachers and
# what others read); with --trained, of those already trained only.
dump_archives() {
  local name
  for name in "${plan_all[@]}"; do
    [ "${plan_archived[$name]}" = yes ] || continue
    if [ "${1:-}" = --trained ] && [ ! -f $exp/$name/.done ]; then continue; fi
    dump_archive $name < /dev/null
  done
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: corpus → lhotse manifests ($corpus), logs in $data/log/"
  if [ ! -f $data/manifests/.import.done ]; then
    mkdir -p $data/manifests $data/log
    import_opts=""
    [ "$skip_bad" = true ] && import_opts="--skip-bad"
    if [ $corpus != demo ] && [ ! -d "$corpus_dir" ]; then
      echo "$0: --corpus $corpus needs --corpus-dir, the corpus on disk ('$corpus_dir' is no directory)" >&2
      exit 1
    fi
    case $corpus in
      demo) logged $data/log/prepare_demo.log \
              kdasr prepare demo --out-dir $data --size $demo_size --seed $demo_seed --num-jobs $nj ;;
      kaldi|tsv)
        # One job per part: job i imports the i-th of the parts from <corpus_dir>/<part>[.tsv].
        [ -n "$sampling_rate" ] && import_opts="$import_opts --sampling-rate $sampling_rate"
        src=$(cd "$corpus_dir" && pwd)
        out=$(cd $data/manifests && pwd)
        wav_root=${kaldi_wav_root:-$(dirname "$src")}
        ext=""; [ $corpus = tsv ] && ext=.tsv
        # With --dev-speakers the dev part is held out of the training part, not imported.
        import_parts=$all_parts
        if (( dev_speakers > 0 )); then
          import_parts=$(echo " $all_parts " | sed "s/ $dev_part / /")
          dev_opts="--dev-speakers $dev_speakers --dev-part $dev_part --seed $dev_seed"
        fi
        n=0
        for p in $import_parts; do
          n=$((n + 1))
          if [ ! -e "$src/$p$ext" ]; then
            echo "$0: part $p: $src/$p$ext does not exist (name yours with --train-part, --dev-part, --test-parts)" >&2
            exit 1
          fi
          log "  job $n: $src/$p$ext → part $p"
        done
        job="parts=(- $import_parts); cd $(printf %q "$wav_root") && kdasr prepare import $corpus"
        job+=" $(printf %q "$src")/\${parts[JOB]}$ext --part \${parts[JOB]} --out-dir $(printf %q "$out") $import_opts"
        if (( dev_speakers > 0 )); then  # only the training part's job holds the dev speakers out
          # shellcheck disable=SC2016
          job+=' $([ ${parts[JOB]} = '"$train_part"' ] && echo '"$dev_opts"')'
        fi
        logged JOB=1:$n $data/log/import_$corpus.JOB.log bash -c "$job" ;;
      lhotse)
        [ -n "$sampling_rate" ] && import_opts="$import_opts --sampling-rate $sampling_rate"
        for kv in $lhotse_opts; do import_opts="$import_opts --recipe-opt $kv"; done
        # shellcheck disable=SC2086
        logged $data/log/import_lhotse.log kdasr prepare import lhotse --recipe $lhotse_recipe \
          --corpus-dir $corpus_dir --parts $parts_csv --out-dir $data/manifests $import_opts ;;
      aurora4)
        # shellcheck disable=SC2086
        logged $data/log/import_aurora4.log kdasr prepare import aurora4 --corpus-dir $corpus_dir \
          --sampling-rate 16000 --parts $parts_csv --dev-speakers $dev_speakers --seed $dev_seed \
          --normalize-text $normalize_text ${transcript_dir:+--transcript-dir $transcript_dir} \
          --out-dir $data/manifests $import_opts ;;
      *) echo "$0: unknown --corpus $corpus" >&2; exit 1 ;;
    esac
    touch $data/manifests/.import.done
  fi
  if [ -n "$speed_perturb" ]; then
    log "  speed perturbation of $train_part: copies <id>_sp<f> for factors $speed_perturb"
    logged $data/log/speed.log kdasr prepare speed --manifest-dir $data/manifests --part $train_part \
      --factors "$(echo $speed_perturb | tr ' ' ',')"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [[ " $views " == *" nb "* ]]; then
  log "Stage 1: narrowband (8 kHz) view, same cut ids ($nb_source)"
  if [ ! -f $data/narrowband/.done ]; then
    mkdir -p $data/narrowband $data/log
    case $nb_source in
      simulate)
        log "  telephone channel on the wb audio, log: $data/log/narrowband.log"
        opts=""; [ "$mu_law" = true ] && opts="--mu-law"
        # shellcheck disable=SC2086
        logged $data/log/narrowband.log kdasr prepare narrowband --manifest-dir $data/manifests \
          --parts $parts_csv --out-dir $data/narrowband --num-jobs $nj $opts ;;
      corpus)
        # The corpus's own 8 kHz recordings, imported with the same cut ids (and dev speakers).
        if [ $corpus != aurora4 ]; then
          echo "$0: --nb-source corpus needs a corpus with its own 8 kHz copy (aurora4), not $corpus" >&2; exit 1
        fi
        log "  Aurora-4's own 8 kHz copy, log: $data/log/import_aurora4_8k.log"
        opts=""; [ "$skip_bad" = true ] && opts="--skip-bad"
        # shellcheck disable=SC2086
        logged $data/log/import_aurora4_8k.log kdasr prepare import aurora4 --corpus-dir $corpus_dir \
          --sampling-rate 8000 --parts $parts_csv --dev-speakers $dev_speakers --seed $dev_seed \
          --normalize-text $normalize_text ${transcript_dir:+--transcript-dir $transcript_dir} \
          --out-dir $data/manifests_8k $opts
        for p in $all_parts; do cp $data/manifests_8k/cuts_$p.jsonl.gz $data/manifests/cuts_${p}_nb.jsonl.gz; done
        if [ -n "$speed_perturb" ]; then  # the same copies (same ids) of the 8 kHz recordings
          logged $data/log/speed_nb.log kdasr prepare speed --manifest-dir $data/manifests --part $train_part \
            --view nb --factors "$(echo $speed_perturb | tr ' ' ',')"
        fi ;;
      *) echo "$0: unknown --nb-source $nb_source (simulate or corpus)" >&2; exit 1 ;;
    esac
    touch $data/narrowband/.done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: fbank features ($views) and global CMVN of $train_part, log: $data/log/fbank.log"
  mkdir -p $data/log
  logged $data/log/fbank.log kdasr prepare fbank --manifest-dir $data/manifests --parts $parts_csv \
    --view "$(echo $views | tr ' ' ',')" --out-dir $data/fbank --num-jobs $nj --cmvn-part $train_part
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: tokens ($token_kind) in $lang_dir"
  if [ ! -f $lang_dir/tokens.txt ]; then
    extra=""
    [ $token_kind = bpe ] && extra="--vocab-size $bpe_vocab"
    [ $token_kind = phone ] && extra="--lexicon ${lexicon:-$data/lexicon.txt}"
    mkdir -p $data/log
    # shellcheck disable=SC2086
    logged $data/log/tokens.log kdasr prepare tokens --kind $token_kind \
      --cuts $data/manifests/cuts_${train_part}.jsonl.gz --lang-dir $lang_dir $extra
  fi
fi

# A pool of background jobs, $train_jobs at a time with nproc/train_jobs threads each: the
# trainings of stages 4 and 6 and the decodes of stage 8. run_jobs starts the first job of its
# list whose needs are met whenever a slot is free, so an experiment waiting for a teacher
# holds back nothing else, and the pool is not emptied between stages: decoding starts beside
# the last students. With train_jobs=1 a job runs in the foreground, its output on the terminal.
pool_running=0
pool_failed=0
pool_threads=$(( $(nproc) / train_jobs )); (( pool_threads < 1 )) && pool_threads=1
pool_wait_one() { wait -n || pool_failed=1; pool_running=$((pool_running - 1)); }
# pool_add LOG COMMAND...: run COMMAND (a function or a program), its output in LOG.
pool_add() {
  local out=$1; shift
  if (( train_jobs > 1 )); then
    OMP_NUM_THREADS=$pool_threads "$@" < /dev/null > "$out" 2>&1 &
    pool_running=$((pool_running + 1))
  else
    "$@"
  fi
}
# pool_drain: wait for every job; stop the recipe if one failed.
pool_drain() {
  while (( pool_running > 0 )); do pool_wait_one; done
  (( pool_failed == 0 )) || { log "some jobs failed; see $exp/log/train_*.log and $exp/log/decode_*.log"; exit 1; }
}

# Jobs are words: train:NAME, or decode:NAME:PART:METHOD.
# job_ready JOB: whether what JOB needs is trained (its experiment, or the ones it reads).
job_ready() {
  local what name dep
  IFS=: read -r what name _ <<< "$1"
  if [ $what = decode ]; then
    for dep in ${ens_members[$name]:-$name}; do [ -f $exp/$dep/.done ] || return 1; done
    return 0
  fi
  for dep in ${plan_deps[$name]}; do
    [ "$dep" = - ] || [ -f $exp/${dep%%=*}/.done ] || return 1
  done
}
# job_start JOB: write the archives it reads, then add it to the pool.
job_start() {
  local what name part method dep opts=""
  IFS=: read -r what name part method <<< "$1"
  if [ $what = train ]; then
    for dep in ${plan_deps[$name]}; do
      [ "${dep#*=}" = archive ] && dump_archive ${dep%%=*} < /dev/null
    done
    (( train_jobs > 1 )) && log "train $name in the background, log: $exp/log/train_$name.log"
    pool_add $exp/log/train_$name.log train_one $name
  else
    (( train_jobs > 1 )) && log "decode $name $part $method, log: $exp/log/decode_${name}_${part}_$method.log"
    local ckpts="" view
    for dep in ${ens_members[$name]:-$name}; do ckpts+=" --checkpoint $exp/$dep/best.pt"; done
    view=$(decode_view $name)
    # beam and wfst search the same words and LM: the graph dir has lexicon.txt and G.arpa.
    if [ $method != greedy ]; then
      opts="--opt graph_dir=$(cat $graph_dir_file)"
      [ -n "$lm_weights" ] && opts+=" --scan-lm-weights ${lm_weights// /,} --scan-cuts $data/fbank/cuts_${dev_part}_${view}.jsonl.gz"
    fi
    # shellcheck disable=SC2086
    pool_add $exp/log/decode_${name}_${part}_$method.log \
      kdasr decode $ckpts --lang-dir $lang_dir --method $method \
        --cuts $data/fbank/cuts_${part}_${view}.jsonl.gz \
        --out-dir $exp/$name/decode_${part}_${view}_${method} $opts \
        ${use_gpu:+--device $([ "$use_gpu" = true ] && echo cuda || echo cpu)}
  fi
}
# job_blocked JOB: JOB can never start (what it needs failed or was not run).
job_blocked() {
  local what name dep
  IFS=: read -r what name _ <<< "$1"
  pool_failed=1
  if [ $what = decode ]; then
    if [ -n "${ens_members[$name]:-}" ]; then log "$name: not all of ${ens_members[$name]} trained: not decoded"
    else log "$name is not trained: not decoded"; fi
    return
  fi
  for dep in ${plan_deps[$name]}; do
    [ "$dep" = - ] || [ -f $exp/${dep%%=*}/.done ] || log "$name is not trained: it reads ${dep%%=*}, which is not trained"
  done
}
# run_jobs JOB...: start every job once it is ready, the first ready one whenever a slot is
# free; returns when all are started (or can never be).
run_jobs() {
  local todo=("$@") i picked
  while (( ${#todo[@]} > 0 )); do
    if (( train_jobs > 1 && pool_running >= train_jobs )); then pool_wait_one; continue; fi
    picked=-1
    for i in "${!todo[@]}"; do
      if job_ready "${todo[$i]}"; then picked=$i; break; fi
    done
    if (( picked < 0 )); then
      if (( pool_running > 0 )); then pool_wait_one; continue; fi
      for i in "${!todo[@]}"; do job_blocked "${todo[$i]}"; done
      return
    fi
    job_start "${todo[$picked]}"
    todo=("${todo[@]:0:picked}" "${todo[@]:picked+1}")
  done
}

# Stages 4 and 6 run as one list of jobs: a student need not wait for a teacher it does not read.
train_stages=""
[ $stage -le 4 ] && [ $stop_stage -ge 4 ] && train_stages+=" 4"
[ $stage -le 6 ] && [ $stop_stage -ge 6 ] && train_stages+=" 6"
if [ -n "$train_stages" ]; then
  log "Training (stages$train_stages): teachers and what they read (4), students (6), each once what it reads is trained"
  jobs=()
  for name in "${plan_names[@]}"; do
    [[ " $train_stages " == *" ${plan_stage[$name]} "* ]] || continue
    if [ -f "$exp/$name/.done" ]; then log "skip $name (done)"; else jobs+=("train:$name"); fi
  done
  run_jobs "${jobs[@]}"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  # A teacher still training is archived when a student needs it, or after the last stage.
  log "Stage 5: soft labels of the trained teachers (and what teachers read) on $train_part"
  dump_archives --trained
fi

graph_dir_file=$lang_dir/graph_dir.txt
if [ $stage -le 7 ] && [ $stop_stage -ge 7 ] && [[ " $decode_methods " =~ " "(beam|wfst)" " ]]; then
  log "Stage 7: TLG graph with a ${lm_order}-gram word LM on the $train_part transcripts"
  kdasr graph --lang-dir $lang_dir --lm-text $data/manifests/cuts_${train_part}.jsonl.gz \
    --order $lm_order | tail -n 1 > $graph_dir_file.tmp
  mv $graph_dir_file.tmp $graph_dir_file
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: decode ($decode_methods) on $test_parts"
  jobs=()
  for name in "${plan_names[@]}" "${!ens_members[@]}"; do
    for part in $test_parts; do
      for method in $decode_methods; do
        [ -f $exp/$name/decode_${part}_$(decode_view $name)_${method}/decode.yaml ] || jobs+=("decode:$name:$part:$method")
      done
    done
  done
  run_jobs "${jobs[@]}"
fi

pool_drain
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then dump_archives; fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: results table of every experiment in $exp (this file's first)"
  dirs=$(printf "$exp/%s " "${plan_names[@]}")
  for d in $exp/*/; do
    d=${d%/}
    [[ " $(echo $dirs) " == *" $d "* ]] || dirs="$dirs $d"
  done
  # shellcheck disable=SC2086
  kdasr report $dirs --out $exp/RESULTS.md --plot $exp/wer_vs_params.png \
    --plot-test ${test_parts%% *}_wb
fi

if [ $stage -le 10 ] && [ $stop_stage -ge 10 ] && [ "$lm_stage" = true ]; then
  log "Stage 10: LSTM LMs and N-best rescoring (recipes/lm.sh $lm_opts)"
  # shellcheck disable=SC2086
  eval "$kdasr_root/recipes/lm.sh" --data $data --exp $exp --lang-dir $lang_dir --dev-part $dev_part \
    --test-part ${test_parts%% *} --demo-size $demo_size --demo-seed $demo_seed $lm_opts
fi
