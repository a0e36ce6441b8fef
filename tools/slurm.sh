#!/usr/bin/env bash
# Runs a command, or an array of N copies of it, as a Slurm job and waits for
# it: tools/run.sh's interface (Kaldi's $cmd), on a cluster.
#
# Usage:
#   tools/slurm.sh [options] JOB=1:N path/to/log.JOB.log command [args...]
#   tools/slurm.sh [options] path/to/log.log command [args...]
#
# The array form submits one array job (sbatch --array=1-N --wait); task i
# replaces every JOB in the log name and the command by i (its
# SLURM_ARRAY_TASK_ID). The other form submits a single job. The command line
# is built as tools/run.sh builds it (an argument without whitespace goes in
# unquoted, so \| is a pipe) and each task writes the same log: a header (the
# command, host, Slurm job and task, start time), the output, and a footer with
# the exit code and elapsed time.
#
# The job runs in the current directory with the current environment
# (sbatch's defaults), so paths must be on a file system the nodes share.
# Next to the logs, in <log dir>/q/, are the batch script submitted and
# Slurm's own output of each task (<name>-<job>_<task>.out), which holds what
# happened outside the command (a time limit reached, a node lost).
#
# Options:
#   --max-jobs-run N   at most N tasks at once (--array=1-N%M)
#   --num-threads N    CPUs per task (--cpus-per-task=N)
#   --gpu N            GPUs per task (--gres=gpu:N; 0 asks for none)
#   --mem X            memory per node (--mem=X, e.g. 8G)
#   --time T           time limit (--time=T, e.g. 4:00:00)
#   --partition P      partition (--partition=P)
#   --extra "ARGS"     more sbatch arguments, split on whitespace; repeatable
#   -h, --help         print this text
#
# Exit status: 0 when every task exited 0. Otherwise 1, after naming each
# failed task and its log on stderr; a task counts as failed when the footer
# of its log has a non-zero exit code or is missing (when Slurm, through sacct
# or scontrol, says it completed or no longer knows it, a missing footer is
# given 30 s to appear on the shared file system). On SIGINT/SIGTERM the job
# is cancelled (scancel) and slurm.sh exits 130.
#
# Example (in a recipe):
#   cmd="tools/slurm.sh --mem 4G --time 1:00:00"
#   $cmd JOB=1:$nj exp/log/stage.JOB.log kdasr <stage> ... --job JOB --num-jobs $nj
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/jobs.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/jobs.sh" || exit 1

log_wait=30

max_jobs=""
num_threads=1
sbatch_args=()
# shellcheck disable=SC2317  # invoked by parse_options
on_option() {
  case $1 in
    --max-jobs-run)
      [[ $2 =~ ^[1-9][0-9]*$ ]] || die "--max-jobs-run must be a positive integer, got '$2'"
      max_jobs=$2 ;;
    --num-threads)
      [[ $2 =~ ^[1-9][0-9]*$ ]] || die "--num-threads must be a positive integer, got '$2'"
      num_threads=$2
      sbatch_args+=("--cpus-per-task=$2") ;;
    --gpu)
      [[ $2 =~ ^[0-9]+$ ]] || die "--gpu must be a number of GPUs, got '$2'"
      (( $2 > 0 )) && sbatch_args+=("--gres=gpu:$2") ;;
    --mem) sbatch_args+=("--mem=$2") ;;
    --time) sbatch_args+=("--time=$2") ;;
    --partition) sbatch_args+=("--partition=$2") ;;
    --extra) read -ra words <<< "$2"; sbatch_args+=("${words[@]}") ;;
  esac
}
parse_options "$job_options" "" "valid: $job_options; see --help" "$@"
set -- "${args[@]}"

# Sets var, first, last, log_template and cmd_template (see lib/jobs.sh).
parse_job_args "$@"
command -v sbatch > /dev/null || die "sbatch not found: Slurm's client commands are not installed here (tools/run.sh runs jobs locally)"

# Where the batch script and Slurm's own output go: <log dir>/q/<name>.*
log_dir=$(dirname "$log_template")
qdir=$log_dir/q
name=$(basename "$log_template")
name=${name%.log}
if [[ -n $var ]]; then
  name=${name//".$var"/}
  name=${name//"$var"/}
fi
name=${name:-job}
mkdir -p "$qdir" || die "cannot create $qdir"
script=$qdir/$name.sh

# A log left by an earlier run must not pass for this run's result.
for (( j = first; j <= last; j++ )); do
  rm -f "$(job_log "$j")"
done

# The batch script: picks its task's log and command, then runs the command
# between the log header and footer. Slurm ends a task with SIGTERM (then
# SIGKILL); the trap lets the footer record it.
{
  echo '#!/usr/bin/env bash'
  echo "# Written by $prog on $(date) and submitted with sbatch."
  printf 'var=%q\n' "$var"
  printf 'log=%q\n' "$log_template"
  printf 'cmd=%q\n' "$cmd_template"
  printf 'threads=%q\n' "$num_threads"
  cat << 'EOF'
if [[ -n $var ]]; then
  log=${log//"$var"/$SLURM_ARRAY_TASK_ID}
  cmd=${cmd//"$var"/$SLURM_ARRAY_TASK_ID}
fi
mkdir -p "$(dirname "$log")"
where="$HOSTNAME, Slurm job $SLURM_JOB_ID${SLURM_ARRAY_TASK_ID:+ (array job $SLURM_ARRAY_JOB_ID, task $SLURM_ARRAY_TASK_ID)}"
EOF
  printf '%s\n' "$job_body"
} > "$script" || die "cannot write $script"

submit_args=(--parsable --wait "--job-name=$name" "--chdir=$PWD")
if [[ -n $var ]]; then
  submit_args+=("--array=$first-$last${max_jobs:+%$max_jobs}" "--output=$qdir/$name-%A_%a.out")
else
  submit_args+=("--output=$qdir/$name-%j.out")
fi

id_file=$(mktemp "$qdir/$name.id.XXXXXX") || die "cannot create a file in $qdir"
job_id=""
sbatch_pid=""

read_job_id() {
  [[ -n $job_id ]] || job_id=$(head -n 1 "$id_file" 2>/dev/null | cut -d ';' -f 1)
}

# shellcheck disable=SC2317  # invoked by the trap below
on_signal() {
  trap - INT TERM HUP
  read_job_id
  if [[ -n $job_id ]]; then
    scancel "$job_id" && echo "$prog: interrupted; cancelled Slurm job $job_id" >&2
  fi
  [[ -n $sbatch_pid ]] && kill "$sbatch_pid" 2>/dev/null
  rm -f "$id_file"
  exit 130
}
trap on_signal INT TERM HUP

# In the background, so that a signal is handled while sbatch waits.
sbatch "${submit_args[@]}" "${sbatch_args[@]}" "$script" > "$id_file" &
sbatch_pid=$!
wait "$sbatch_pid"
sbatch_rc=$?
sbatch_pid=""
read_job_id
rm -f "$id_file"
[[ -n $job_id ]] || die "sbatch did not submit the job (exit code $sbatch_rc); see its message above"

# Slurm's view of each task (state[task] = COMPLETED, FAILED, TIMEOUT...):
# from sacct where accounting is on, else from slurmctld, which remembers a
# finished job for MinJobAge (300 s by default).
declare -A state=()
while IFS='|' read -r id st; do
  if [[ -n $var && $id == "${job_id}_"* ]]; then
    state[${id#"${job_id}_"}]=${st%% *}
  elif [[ -z $var && $id == "$job_id" ]]; then
    state[1]=${st%% *}
  fi
done < <(sacct -j "$job_id" -X -n -P -o JobID,State 2>/dev/null)
if (( ${#state[@]} == 0 )); then
  while read -r line; do
    [[ $line =~ JobState=([A-Z_]+) ]] || continue
    st=${BASH_REMATCH[1]}
    if [[ -n $var && $line =~ ArrayTaskId=([0-9]+) ]]; then
      state[${BASH_REMATCH[1]}]=$st
    elif [[ -z $var ]]; then
      state[1]=$st
    fi
  done < <(scontrol -o show job "$job_id" 2>/dev/null)
fi

failed=0
for (( j = first; j <= last; j++ )); do
  log=$(job_log "$j")
  code=$(footer_code "$log")
  key=$j
  [[ -n $var ]] || key=1
  if [[ -z $code && ${state[$key]:-COMPLETED} == COMPLETED ]]; then
    deadline=$((SECONDS + log_wait))
    while [[ -z $code ]] && (( SECONDS < deadline )); do
      sleep 1
      code=$(footer_code "$log")
    done
  fi
  [[ $code == 0 ]] && continue
  failed=$((failed + 1))
  why="exit code ${code:-unknown: the log has no footer}${state[$key]:+, Slurm state ${state[$key]}}"
  if [[ -n $var ]]; then
    echo "$prog: task $j of array job $job_id failed ($why), log: $log (Slurm output: $qdir/$name-${job_id}_$j.out)" >&2
  else
    echo "$prog: job $job_id failed ($why), log: $log (Slurm output: $qdir/$name-$job_id.out)" >&2
  fi
done
if (( failed > 0 )); then
  (( last > first )) && echo "$prog: $failed / $((last - first + 1)) tasks of array job $job_id failed" >&2
  exit 1
fi
(( sbatch_rc == 0 )) || echo "$prog: warning: sbatch exited $sbatch_rc although every task's log reports exit code 0" >&2
exit 0
