#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine, for tests/test_slurm.py
# and CI. Needs root (it runs the daemons as root, with no cgroups).
#
# Usage:
#   tools/ci_slurm_setup.sh [--no-install] [--dir DIR]   start the cluster
#   tools/ci_slurm_setup.sh --stop [--dir DIR]           stop its daemons
#
# Start: installs the Debian packages slurm-wlm and munge when slurmctld,
# slurmd, sbatch or munged is missing (unless --no-install); then, unless a
# cluster from an earlier run in DIR still answers, stops what is left of one,
# and starts
#   munged     with its own key and socket under DIR/munge (the machine's own
#              munge, if any, is left alone)
#   slurmctld  and slurmd, from DIR/slurm.conf: a cluster "kdasr" of one node,
#              this host (127.0.0.1) with nproc CPUs, in partition "debug",
#              ports 16817/16818, state and spool under DIR, logs in DIR/log
# and waits (up to about a minute) until sinfo shows the node idle. Every client command
# then needs SLURM_CONF=DIR/slurm.conf in its environment; the last line
# printed is that export. When a daemon does not start, the script exits 1
# after printing which one and the tail of its log.
#
# Stop: ends the daemons whose pid files are in DIR (those this script
# started), and nothing else.
#
# Options:
#   --dir DIR       where everything goes (default /tmp/kdasr-slurm)
#   --no-install    do not call apt-get
#   --stop          stop the daemons started in DIR
#   -h, --help      print this text
set -uo pipefail

prog=$(basename "$0")
dir=/tmp/kdasr-slurm
install=true
stop=false
PATH=$PATH:/usr/sbin:/sbin

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

die() {
  echo "$prog: $*" >&2
  exit 1
}

while (( $# > 0 )); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --no-install) install=false; shift ;;
    --stop) stop=true; shift ;;
    --dir) (( $# >= 2 )) || die "--dir needs a value"; dir=$2; shift 2 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
mkdir -p "$dir" || die "cannot create $dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf
socket=$dir/munge/run/munge.socket
export SLURM_CONF=$conf

# Sends TERM to the daemons whose pid files are in DIR (when the pid is still
# that daemon's), then KILL to any still there after 10 s.
stop_all() {
  local pid_file name pid i pids=()
  for pid_file in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/run/munged.pid"; do
    [[ -f $pid_file ]] || continue
    name=$(basename "$pid_file" .pid)
    pid=$(< "$pid_file")
    rm -f "$pid_file"
    if [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && echo "$prog: stopping $name (pid $pid)"
    fi
  done
  for (( i = 0; i < 100; i++ )); do
    running "${pids[@]}" || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    running "$pid" && kill -KILL "$pid" 2>/dev/null
  done
  return 0
}

# Whether any of the processes runs (exists and is not a zombie).
running() {
  local pid
  for pid in "$@"; do
    [[ -r /proc/$pid/stat && $(sed 's/.*) \(.\).*/\1/' "/proc/$pid/stat") != Z ]] && return 0
  done
  return 1
}

if [[ $stop == true ]]; then
  stop_all
  exit 0
fi

# Prints why daemon $1 (log file $2) is not up, and exits 1.
fail() {
  echo "$prog: $1 did not start or stopped; last lines of $2:" >&2
  tail -n 15 "$2" >&2 2>/dev/null || echo "  (no log)" >&2
  exit 1
}

missing() {
  local p
  for p in slurmctld slurmd sbatch sinfo munged munge; do
    command -v "$p" > /dev/null || { echo "$p"; return 0; }
  done
  return 1
}

if p=$(missing); then
  [[ $install == true ]] || die "$p is not installed (Debian packages slurm-wlm and munge)"
  (( EUID == 0 )) || die "$p is not installed, and installing Slurm needs root"
  echo "$prog: installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
      > "$dir/apt.log" 2>&1; then
    tail -n 20 "$dir/apt.log" >&2
    die "apt-get install slurm-wlm munge failed"
  fi
  p=$(missing) && die "$p is still missing after installing slurm-wlm and munge"
fi
(( EUID == 0 )) || die "the daemons run as root in this setup; run it as root"

node=$(hostname -s 2>/dev/null || uname -n)
node=${node%%.*}

node_idle() {
  [[ $(timeout 5 sinfo -h -n "$node" -o %t 2>/dev/null) == idle ]]
}

if [[ -f $conf ]] && munge -n -S "$socket" 2>/dev/null | unmunge -S "$socket" > /dev/null 2>&1 \
    && node_idle; then
  echo "$prog: the cluster in $dir is already up"
  echo "export SLURM_CONF=$conf"
  exit 0
fi

stop_all
rm -rf "$dir/state" "$dir/spool" "$dir/log"
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge/etc" "$dir/munge/run" \
  "$dir/munge/lib" "$dir/munge/log" || die "cannot create the directories under $dir"
# munged checks these: its key private, its socket's directory open to all.
chmod 755 "$dir" "$dir/munge" "$dir/munge/run"
chmod 700 "$dir/munge/etc" "$dir/munge/lib" "$dir/munge/log"
key=$dir/munge/etc/munge.key
if [[ ! -s $key ]]; then
  head -c 1024 /dev/urandom > "$key" || die "cannot write $key"
fi
chmod 400 "$key"

munged --socket="$socket" --key-file="$key" --pid-file="$dir/munge/run/munged.pid" \
  --log-file="$dir/munge/log/munged.log" --seed-file="$dir/munge/lib/munged.seed" \
  || fail munged "$dir/munge/log/munged.log"
munge -n -S "$socket" | unmunge -S "$socket" > /dev/null || fail munged "$dir/munge/log/munged.log"

cpus=$(nproc)
memory=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
cat > "$conf" << EOF
# One-node test cluster written by tools/ci_slurm_setup.sh
ClusterName=kdasr
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_interval=1
ReturnToService=2
KillWait=5
# sbatch --wait polls every min(MinJobAge / 2, 32) s or so: keep it short here.
MinJobAge=10
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus ${memory:+RealMemory=$memory} State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

started=$SECONDS
slurmctld -f "$conf" || fail slurmctld "$dir/log/slurmctld.log"
slurmd -f "$conf" || fail slurmd "$dir/log/slurmd.log"

# Until the node is idle: a daemon without a running process (its pid file
# is given 5 s to appear) has failed; after 60 s the node has.
until node_idle; do
  for d in slurmctld slurmd; do
    pid=$(cat "$dir/$d.pid" 2>/dev/null)
    if { [[ -n $pid ]] && ! running "$pid"; } || { [[ -z $pid ]] && (( SECONDS - started > 5 )); }; then
      fail "$d" "$dir/log/$d.log"
    fi
  done
  if (( SECONDS - started > 60 )); then
    echo "$prog: node $node is not idle after 60 s: $(timeout 5 sinfo -h -n "$node" -o '%t %E' 2>&1)" >&2
    fail "slurmd (as a node)" "$dir/log/slurmd.log"
  fi
  sleep 1
done
echo "$prog: Slurm is up: node $node with $cpus CPUs, partition debug"
echo "export SLURM_CONF=$conf"
