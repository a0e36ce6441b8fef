# shellcheck shell=bash
# Shared by tools/run.sh, tools/slurm.sh and tools/slurm_torchrun.sh, which
# source it (after `set -uo pipefail`) with
#   . "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/jobs.sh" || exit 1
# It defines no behaviour of its own: the usage text and error exits, the
# option loop, the Kaldi-style `VAR=first:last log command...` arguments and
# the one-line command built from them, and reading a log's footer.

prog=$(basename "$0")

# The options tools/run.sh and tools/slurm.sh both take, each with a value.
# shellcheck disable=SC2034  # used by the scripts
job_options="--max-jobs-run --num-threads --gpu --mem --time --partition --extra"

# Prints the comment block at the top of the script that was run.
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

# A usage error: the usage text on stderr, exit status 1.
usage_error() {
  usage >&2
  exit 1
}

die() {
  echo "$prog: $*" >&2
  exit 1
}

# parse_options VALUED FLAGS HINT [ARGS...]
# Reads the options at the head of ARGS: --name VALUE or --name=VALUE for each
# name in VALUED, --name alone for each in FLAGS (both space-separated lists),
# calling the script's `on_option NAME [VALUE]` for each in turn. -h/--help
# prints the usage text and exits 0; `--`, or the first argument that does not
# start with --, ends the options. An unknown option dies with
# "unknown option NAME (HINT)", one without its value with "option NAME needs
# a value". The arguments left are put in the array `args`.
parse_options() {
  local valued=" $1 " flags=" $2 " hint=$3
  shift 3
  while (( $# > 0 )); do
    case $1 in
      --?*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
      -h|--help) usage; exit 0 ;;
      --) shift; break ;;
      --*)
        if [[ $flags == *" $1 "* ]]; then
          on_option "$1"
          shift
        elif [[ $valued == *" $1 "* ]]; then
          (( $# >= 2 )) || die "option $1 needs a value"
          on_option "$1" "$2"
          shift 2
        else
          die "unknown option $1 ($hint)"
        fi ;;
      *) break ;;
    esac
  done
  # shellcheck disable=SC2034  # used by the scripts
  args=("$@")
}

# parse_job_args [VAR=FIRST[:LAST]] LOG COMMAND [ARGS...]
# Sets var (empty without the range), first and last (1 and 1 without it; a
# single FIRST means FIRST:FIRST), log_template (LOG, which must contain VAR)
# and cmd_template: the command and its arguments joined into one line for
# bash, where an argument without whitespace goes in as it is (so \| and \>
# become a pipe and a redirection) and any other is single-quoted.
parse_job_args() {
  var=""
  first=1
  last=1
  if [[ ${1:-} =~ ^([A-Z_][A-Z0-9_]*)=([0-9]+)(:([0-9]+))?$ ]]; then
    var=${BASH_REMATCH[1]}
    first=${BASH_REMATCH[2]}
    last=${BASH_REMATCH[4]:-$first}
    (( 10#$first <= 10#$last )) || die "empty job range $1"
    first=$((10#$first))
    last=$((10#$last))
    shift
  fi
  (( $# >= 2 )) || usage_error
  log_template=$1
  shift
  if [[ -n $var && $log_template != *"$var"* ]]; then
    die "the log name '$log_template' must contain $var, the array index"
  fi

  local arg
  cmd_template=""
  for arg in "$@"; do
    if [[ -n $arg && $arg != *[[:space:]]* ]]; then
      cmd_template+="$arg "
    else
      cmd_template+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  cmd_template=${cmd_template% }
}

# job_log J, job_cmd J: the log name and the command of job J (VAR replaced).
job_log() {
  if [[ -n $var ]]; then echo "${log_template//"$var"/$1}"; else echo "$log_template"; fi
}

job_cmd() {
  if [[ -n $var ]]; then echo "${cmd_template//"$var"/$1}"; else echo "$cmd_template"; fi
}

# footer_code LOG: the exit code in the log's last "# Ended (code N)" line;
# nothing when it has none (or cannot be read).
footer_code() {
  sed -n 's/^# Ended (code \([0-9]*\)).*/\1/p' "$1" 2>/dev/null | tail -n 1
}

# The body of one job, as bash source: runs $cmd with its output in $log,
# between a header and the "# Ended (code N)" footer that job_status reads.
# Expects $log, $cmd, $threads and $where (the text after "Running on") set.
# A TERM sent to the job's process group ends the command; the trap lets the
# footer still be written.
# shellcheck disable=SC2016,SC2034  # expanded when the job runs
job_body='
trap : TERM
{
  printf "# %s\n" "$cmd"
  echo "# Running on $where"
  echo "# Started at $(date)"
  echo "#"
} > "$log"
exec >> "$log" 2>&1 < /dev/null
start=$SECONDS
bash -c "$cmd"
rc=$?
elapsed=$((SECONDS - start))
echo "# Accounting: time=$elapsed threads=$threads"
echo "# Ended (code $rc) at $(date), elapsed time $elapsed seconds"
exit $rc
'
