#!/bin/bash
# `make test-vm`: the needs_kernel tests (ipvlan, vlan, ...) in a guest kernel that has
# those link kinds (vmrun.sh: UML where it boots, QEMU/TCG otherwise).
# usage: test_vm.sh [PYTEST_ARGS...]      env: PY (the venv's python), MULTIHOME_VM,
#        MULTIHOME_VM_TIMEOUT (seconds, default 1800)
# Passes only when the guest loaded ipvlan and 8021q, pytest passed, nothing was
# skipped, and at least as many tests passed as the host collects with -m needs_kernel.
set -uo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../..")
PY=${PY:-$ROOT/.venv/bin/python}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")   # absolute, the venv's own (no readlink)
cd "$ROOT"
OUT=$ROOT/build/vm
mkdir -p "$OUT"
fail() { echo "test-vm: FAILED: $*" >&2; exit 1; }

# 1. what the guest must run: the needs_kernel tests the host collects (the guest gets
#    their ids, so it imports only their modules: collecting everything under QEMU is slow)
#    (PYTEST_ARGS go to the guest's run only: here they could change the listing)
collect=$("$PY" -m pytest --collect-only -q -m needs_kernel -p no:cacheprovider 2>&1)
crc=$?
case $crc in
  0) ;;
  5) fail "the host collects no needs_kernel test (pytest exit 5)" ;;
  *) printf '%s\n' "$collect" | tail -n 20 >&2; fail "collecting on the host (pytest exit $crc)" ;;
esac
IDS=$OUT/needs_kernel.ids
printf '%s\n' "$collect" | grep '::' > "$IDS"
want=$(wc -l < "$IDS")
[ "$want" -gt 0 ] || fail "no test ids in the host's listing (pytest exit 0)"
echo "test-vm: the host collects $want needs_kernel tests"

# 2. run them in the guest
JUNIT=$OUT/junit.xml
rm -f "$JUNIT"
start=$SECONDS
"$HERE/vmrun.sh" -p "$ROOT" -m 2G -t "${MULTIHOME_VM_TIMEOUT:-1800}" -- \
  "$HERE/guest_tests.sh" "$PY" "$JUNIT" "$IDS" "$@"
rc=$?
took=$((SECONDS - start))
case $rc in
  0) ;;
  1) fail "tests failed in the guest ($took s)" ;;
  5) fail "pytest collected no test in the guest (exit 5)" ;;
  248) fail "a kernel module did not load in the guest" ;;
  250) fail "the guest could not be set up (runner exit 250)" ;;
  251) fail "the guest died or timed out after $took s (runner exit 251)" ;;
  *) fail "pytest in the guest exited $rc ($took s)" ;;
esac

# 3. pytest's own count, from its JUnit report: all passed, none skipped
[ -f "$JUNIT" ] || fail "no JUnit report from the guest ($JUNIT)"
read -r tests failures errors skipped < <("$PY" - "$JUNIT" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = [sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")]
print(*total)
PY
)
passed=$((tests - failures - errors - skipped))
echo "test-vm: guest: $passed passed, $skipped skipped, $failures failed, $errors errors in $took s"
[ "$skipped" -eq 0 ] || fail "$skipped tests skipped in the guest (none may)"
[ "$failures" -eq 0 ] && [ "$errors" -eq 0 ] || fail "$failures failures, $errors errors"
[ "$passed" -ge "$want" ] || fail "only $passed passed in the guest; the host collects $want"
echo "test-vm: OK"
