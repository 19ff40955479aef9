#!/bin/bash
# Inside the guest (test_vm.sh runs it through vmrun.sh): load the link kinds the host
# lacks, then run the needs_kernel tests with a JUnit report for the host to check.
# usage: guest_tests.sh PYTHON JUNIT_XML IDS_FILE [PYTEST_ARGS...]   (IDS_FILE: node ids)
# Exit status: pytest's, or 248 when a module does not load.
set -u
PY=$1 JUNIT=$2 IDS=$3
shift 3
for mod in ipvlan 8021q; do
  if ! modprobe "$mod"; then
    echo "test-vm: FATAL: 'modprobe $mod' failed in the guest (kernel $(uname -r))" >&2
    exit 248
  fi
done
echo "test-vm: guest kernel $(uname -r), ipvlan and 8021q loaded"
mapfile -t ids < "$IDS"
exec "$PY" -m pytest -m needs_kernel -p no:cacheprovider --junitxml="$JUNIT" "$@" "${ids[@]}"
