#!/usr/bin/env bash
# Runs a command, or an array of N copies of it, in parallel on this machine,
# each copy with its own log file: the $cmd interface of Kaldi's run.pl.
# tools/slurm.sh takes the same arguments and runs the copies on Slurm.
#
# Usage:
#   tools/run.sh [options] JOB=1:N path/to/log.JOB.log command [args...]
#   tools/run.sh [options] path/to/log.log command [args...]
#
# In the array form every occurrence of the string JOB in the log name and in
# the command is replaced by the job's index, 1..N (any uppercase name works:
# SPLIT=1:4 replaces SPLIT; JOB=3 runs index 3 alone). The log name must
# contain it. The arguments are joined into one line run by bash: an argument
# without whitespace is passed unquoted, so \| and \> become a pipe and a
# redirection; one with whitespace is quoted.
#
# Each log holds a header (the command as run, host, start time), the
# command's output (stdout and stderr; stdin is /dev/null), and a footer with
# the exit code and elapsed time, as Kaldi writes them:
#   # Accounting: time=12 threads=1
#   # Ended (code 0) at Mon Jan  1 00:00:12 UTC 2024, elapsed time 12 seconds
#
# Options:
#   --max-jobs-run N   at most N copies at once (default: nproc)
#   --num-threads N    threads each copy uses (recorded in the footer)
#   --gpu N, --mem X, --time T, --partition P, --extra "ARGS"
#                      resources for tools/slurm.sh; accepted and ignored here,
#                      so a recipe passes the same options to either script
#   -h, --help         print this text
#
# Exit status: 0 when every copy exited 0; otherwise 1, after naming each
# failed copy and its log on stderr. On SIGINT/SIGTERM the running copies (and
# their child processes) are sent SIGTERM and run.sh exits 130.
#
# Example (in a recipe; a split stage takes kdasr's --job J --num-jobs N):
#   cmd="tools/run.sh --max-jobs-run 4"
#   $cmd JOB=1:$nj exp/log/stage.JOB.log kdasr <stage> ... --job JOB --num-jobs $nj
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/jobs.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/jobs.sh" || exit 1

max_jobs=$(nproc 2>/dev/null || echo 1)
num_threads=1
# --gpu, --mem, --time, --partition, --extra: accepted and ignored.
# shellcheck disable=SC2317  # invoked by parse_options
on_option() {
  case $1 in
    --max-jobs-run) max_jobs=$2 ;;
    --num-threads) num_threads=$2 ;;
  esac
}
parse_options "$job_options" "" "valid: $job_options; see --help" "$@"
set -- "${args[@]}"
[[ $max_jobs =~ ^[1-9][0-9]*$ ]] || die "--max-jobs-run must be a positive integer, got '$max_jobs'"
[[ $num_threads =~ ^[1-9][0-9]*$ ]] || die "--num-threads must be a positive integer, got '$num_threads'"

# Sets var, first, last, log_template and cmd_template (see lib/jobs.sh).
parse_job_args "$@"

# Runs one copy in its own session (so that a signal reaches all its
# processes) with the shared job body of lib/jobs.sh.
# shellcheck disable=SC2016
wrapper='log=$1 cmd=$2 threads=$3 where=$HOSTNAME'"$job_body"

# SIGTERM to every running copy's process group, again each second (a copy
# may have been starting its command), SIGKILL after 10 s.
# shellcheck disable=SC2317  # invoked by the trap below
on_signal() {
  trap - INT TERM HUP
  local pid pids i
  for (( i = 0; i < 100; i++ )); do
    pids=$(jobs -pr)
    [[ -n $pids ]] || break
    if (( i % 10 == 0 )); then
      for pid in $pids; do kill -TERM -- "-$pid" 2>/dev/null; done
    fi
    sleep 0.1
  done
  for pid in $(jobs -pr); do kill -KILL -- "-$pid" 2>/dev/null; done
  wait
  echo "$prog: interrupted; the running jobs were sent SIGTERM" >&2
  exit 130
}
trap on_signal INT TERM HUP

for (( j = first; j <= last; j++ )); do
  while (( $(jobs -pr | wc -l) >= max_jobs )); do
    wait -n
  done
  log=$(job_log "$j")
  mkdir -p "$(dirname "$log")" || die "cannot create the directory of $log"
  setsid bash -c "$wrapper" "$prog-job" "$log" "$(job_cmd "$j")" "$num_threads" &
done
wait

# The footer holds each copy's exit code; a copy without one was killed.
failed=0
for (( j = first; j <= last; j++ )); do
  log=$(job_log "$j")
  code=$(footer_code "$log")
  if [[ $code != 0 ]]; then
    failed=$((failed + 1))
    name="job $j"
    [[ -z $var ]] && name="the job"
    echo "$prog: $name failed (exit code ${code:-unknown: no footer}), log: $log" >&2
  fi
done
if (( failed > 0 )); then
  (( last > first )) && echo "$prog: $failed / $((last - first + 1)) jobs failed" >&2
  exit 1
fi
exit 0
