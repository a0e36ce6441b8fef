#!/usr/bin/env bash
# The CI test run (.ci/run calls it): installs kdasr with its test and export extras,
# starts a one-node Slurm cluster for tests/test_slurm.py (which skips, saying
# why, when Slurm cannot run here), runs pytest, and stops the cluster.
#
# Usage: tools/ci_tests.sh [pytest arguments...]
# Exit status: pytest's; "no tests collected" (5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q -e '.[dev]' || { echo "ci_tests.sh: pip install failed" >&2; exit 1; }

bash tools/ci_slurm_setup.sh \
  || echo "slurm setup failed: the Slurm tests will skip and give the reason" >&2
trap 'bash tools/ci_slurm_setup.sh --stop > /dev/null' EXIT

python3 -m pytest -q "$@"
rc=$?
(( rc == 5 )) && echo "ci_tests.sh: pytest collected no tests" >&2
exit "$rc"
