#!/usr/bin/env bash
# Multi-node distributed training on Slurm: one torchrun agent per node,
# started by srun, meeting at a c10d rendezvous on the job's first node.
#
# Usage:
#   tools/slurm_torchrun.sh [options] path/to/train.log command [args...]
#       submits a job of --nodes nodes through tools/slurm.sh (so it waits for
#       the job, and the log gets the same header and footer) and runs the
#       second form below in it
#   tools/slurm_torchrun.sh --in-allocation [options] command [args...]
#       inside an allocation (an sbatch script, salloc): runs, on every node,
#         srun torchrun --nnodes=$SLURM_NNODES --nproc-per-node=P \
#           --rdzv-id=$SLURM_JOB_ID --rdzv-backend=c10d \
#           --rdzv-endpoint=MASTER:PORT command [args...]
#       MASTER being the first host of `scontrol show hostnames`
#
# The command is a Python script (train.py ...), a module (-m pkg.mod ...) or
# a program on PATH (kdasr train ..., run with torchrun --no-python). Each
# process gets torchrun's RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
# MASTER_PORT; kdasr's trainer reads them. torchrun comes from PATH, or else
# from `python3 -m torch.distributed.run`.
#
# Options:
#   --nodes N            nodes (default 1)
#   --gpu G              GPUs per node (--gres=gpu:G; default 1, 0 for CPU)
#   --nproc-per-node P   processes per node (default: G, or 1 when G is 0)
#   --port PORT          rendezvous port (default 20000 + job id % 10000)
#   --num-threads N      CPUs per node (--cpus-per-task=N)
#   --mem X, --time T, --partition P, --extra "ARGS"
#                        passed to tools/slurm.sh (see its --help)
#   --in-allocation      run in the current allocation instead of submitting;
#                        only --nproc-per-node and --port apply
#   -h, --help           print this text
#
# Exit status: that of tools/slurm.sh (0 when training exited 0 on every
# node; srun --kill-on-bad-exit ends all nodes when one fails), or that of
# srun with --in-allocation.
#
# Example: two nodes of four GPUs each
#   tools/slurm_torchrun.sh --nodes 2 --gpu 4 --time 24:00:00 \
#     exp/vgg/log/train.log kdasr train conf/train.yaml conf/model_vgg.yaml --exp-dir exp/vgg
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/jobs.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/jobs.sh" || exit 1

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

nodes=1
gpu=1
nproc=""
port=""
in_allocation=false
slurm_args=()
# shellcheck disable=SC2317  # invoked by parse_options
on_option() {
  case $1 in
    --in-allocation) in_allocation=true ;;
    --nodes) nodes=$2 ;;
    --gpu) gpu=$2 ;;
    --nproc-per-node) nproc=$2 ;;
    --port) port=$2 ;;
    *) slurm_args+=("$1" "$2") ;;
  esac
}
parse_options "--nodes --gpu --nproc-per-node --port --num-threads --mem --time --partition --extra" \
  "--in-allocation" "see --help" "$@"
set -- "${args[@]}"
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$nodes'"
[[ $gpu =~ ^[0-9]+$ ]] || die "--gpu must be a number of GPUs, got '$gpu'"
[[ -z $nproc || $nproc =~ ^[1-9][0-9]*$ ]] || die "--nproc-per-node must be a positive integer, got '$nproc'"
[[ -z $port || $port =~ ^[1-9][0-9]*$ ]] || die "--port must be a port number, got '$port'"

if [[ $in_allocation == false ]]; then
  (( $# >= 2 )) || usage_error
  log=$1
  shift
  (( gpu > 0 )) || [[ -n $nproc ]] || nproc=1
  launch=("$self" --in-allocation --nproc-per-node "${nproc:-$gpu}")
  [[ -n $port ]] && launch+=(--port "$port")
  exec "$(dirname "$self")/slurm.sh" --gpu "$gpu" "${slurm_args[@]}" \
    --extra "--nodes=$nodes --ntasks-per-node=1" "$log" "${launch[@]}" -- "$@"
fi

(( $# >= 1 )) || usage_error
[[ -n ${SLURM_JOB_ID:-} && -n ${SLURM_JOB_NODELIST:-} ]] \
  || die "--in-allocation runs inside a Slurm allocation (no SLURM_JOB_ID here)"
nnodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
[[ -n $master ]] || die "scontrol show hostnames '$SLURM_JOB_NODELIST' gave no host"
port=${port:-$((20000 + SLURM_JOB_ID % 10000))}
nproc=${nproc:-${SLURM_GPUS_ON_NODE:-1}}

if command -v torchrun > /dev/null; then
  torchrun=(torchrun)
else
  torchrun=(python3 -m torch.distributed.run)
fi
torchrun+=(--nnodes="$nnodes" --nproc-per-node="$nproc" --rdzv-id="$SLURM_JOB_ID"
  --rdzv-backend=c10d --rdzv-endpoint="$master:$port")
[[ $1 == *.py || $1 == -m ]] || torchrun+=(--no-python)

echo "$prog: $nnodes node(s) x $nproc process(es), rendezvous at $master:$port" >&2
exec srun --nodes="$nnodes" --ntasks="$nnodes" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  "${torchrun[@]}" "$@"
