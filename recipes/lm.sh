#!/usr/bin/env bash
# LSTM language models and N-best rescoring; called by recipes/kd_asr.sh (--lm-stage true, its
# stage 10) and by egs/wikitext2/run.sh (text only).
#
#   1 LM text (demo: kdasr prepare demo-lm; else --text-dir with train.txt dev.txt test.txt)
#   2 teachers (one per seed in --teacher-seeds; several = an averaged ensemble)
#   3 student trained alone     4 students distilled, one per trust form in --trust-forms
#   5 perplexities (exp/lm/RESULTS.md)
#   6 N-best of --acoustic on dev and test (WFST)   7 rescoring with n-gram only and each LM
#
# Finished steps leave their outputs and are skipped on a rerun; a killed training resumes.
set -euo pipefail

stage=1
stop_stage=100
data=data
exp=exp
text_dir=                  # train.txt dev.txt test.txt (default: demo-lm corpus in $data/lm)
demo_size=default
demo_seed=0
demo_lm_sentences=20000
conf=conf
teacher_conf=lm_teacher.yaml
student_conf=lm_student.yaml
distill_conf=lm_distill.yaml
teacher_seeds="1"
trust_forms="none threshold smooth"
lm_overrides=              # key=value words added to every LM training, e.g. "train.epochs=1"
acoustic=                  # acoustic experiment whose N-best is rescored (none: stop after stage 5)
lang_dir=data/lang_bpe
view=wb
dev_part=dev
test_part=test
nbest=20

kdasr_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$kdasr_root/tools/parse_options.sh"

log() { echo -e "$(date '+%Y-%m-%d %H:%M:%S') (lm.sh:${BASH_LINENO[0]}) $*"; }
sets() { local s=""; for kv in $lm_overrides "$@"; do s="$s --set $kv"; done; echo "$s"; }

demo_text=false; [ -z "$text_dir" ] && demo_text=true
text_dir=${text_dir:-$data/lm}
lm_exp=$exp/lm
train_args="data.train=$text_dir/train.txt data.dev=$text_dir/dev.txt"
teachers=""
for s in $teacher_seeds; do teachers="$teachers $lm_exp/teacher_seed$s"; done
teacher_list=$(for t in $teachers; do echo "$t/best.pt"; done | paste -sd, -)
# several teachers: their average is a model of its own (exp/lm/teacher_ensemble holds its figures)
ensemble=""; [ $(echo $teacher_seeds | wc -w) -gt 1 ] && ensemble=$lm_exp/teacher_ensemble
lm_args() {  # the --lm options of an LM dir (the ensemble: every teacher)
  if [ "$1" = "$ensemble" ]; then for t in $teachers; do echo -n " $2 $t/best.pt"; done; else echo -n " $2 $1/best.pt"; fi
}
students="$lm_exp/student"
for t in $trust_forms; do students="$students $lm_exp/student_kd_$t"; done

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [ ! -f $text_dir/train.txt ]; then
  [ $demo_text = true ] || { echo "$0: --text-dir $text_dir has no train.txt" >&2; exit 1; }
  log "Stage 1: demo LM text in $text_dir"
  kdasr prepare demo-lm --out-dir $text_dir --size $demo_size --seed $demo_seed --num-sentences $demo_lm_sentences
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  for s in $teacher_seeds; do
    d=$lm_exp/teacher_seed$s
    [ -f $d/train_summary.yaml ] && { log "skip $d (trained)"; continue; }
    log "Stage 2: LM teacher $d"
    # shellcheck disable=SC2046
    kdasr lm train $conf/$teacher_conf --exp-dir $d $(sets $train_args train.seed=$s)
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ] && [ ! -f $lm_exp/student/train_summary.yaml ]; then
  log "Stage 3: student LM alone"
  # shellcheck disable=SC2046
  kdasr lm train $conf/$student_conf --exp-dir $lm_exp/student $(sets $train_args)
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for t in $trust_forms; do
    d=$lm_exp/student_kd_$t
    [ -f $d/train_summary.yaml ] && { log "skip $d (trained)"; continue; }
    log "Stage 4: student LM distilled from$teachers, trust $t"
    # shellcheck disable=SC2046
    kdasr lm distill $conf/$distill_conf --exp-dir $d $(sets $train_args kd.trust=$t "kd.teachers=[$teacher_list]")
  done
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: perplexities"
  for d in $teachers $ensemble $students; do
    [ -f $d/ppl.yaml ] && [ $d/ppl.yaml -nt $d/best.pt ] && continue
    # shellcheck disable=SC2046
    kdasr lm eval $(lm_args $d --checkpoint) --out $d/ppl.yaml $text_dir/dev.txt $text_dir/test.txt
  done
  # shellcheck disable=SC2086
  kdasr lm report --lm-dirs "$teachers $ensemble $students" --out $lm_exp/RESULTS.md > /dev/null
  log "perplexity table: $lm_exp/RESULTS.md"
fi

[ -z "$acoustic" ] && exit 0
graph_dir=$(cat $lang_dir/graph_dir.txt)
am=$exp/$acoustic

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  for p in $dev_part $test_part; do
    out=$am/nbest_${p}_${view}
    [ -f $out/decode.yaml ] && continue
    log "Stage 6: $nbest-best WFST decode of $acoustic on $p"
    kdasr decode --checkpoint $am/best.pt --lang-dir $lang_dir --method wfst --opt graph_dir=$graph_dir \
      --opt nbest=$nbest --cuts $data/fbank/cuts_${p}_${view}.jsonl.gz --out-dir $out
  done
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  rescore_dirs=""
  for lm in ngram $teachers $ensemble $students; do
    name=$(basename $lm)
    out=$am/rescore_${test_part}_${view}_$name
    rescore_dirs="$rescore_dirs $out"
    [ -f $out/rescore.yaml ] && continue
    log "Stage 7: rescoring with $name"
    lm_opt=""; [ $lm != ngram ] && lm_opt=$(lm_args $lm --lm)
    # shellcheck disable=SC2086
    kdasr rescore --dev-nbest $am/nbest_${dev_part}_${view}/nbest-${dev_part}_${view}-wfst.txt \
      --dev-cuts $data/fbank/cuts_${dev_part}_${view}.jsonl.gz \
      --test-nbest $am/nbest_${test_part}_${view}/nbest-${test_part}_${view}-wfst.txt \
      --test-cuts $data/fbank/cuts_${test_part}_${view}.jsonl.gz --arpa $graph_dir/G.arpa \
      --name ${test_part}_${view} --out-dir $out $lm_opt
  done
  # shellcheck disable=SC2086
  kdasr lm report --lm-dirs "$teachers $ensemble $students" --rescore-dirs "$rescore_dirs" \
    --out $lm_exp/RESULTS.md > /dev/null
  log "perplexity and rescoring tables: $lm_exp/RESULTS.md"
fi
