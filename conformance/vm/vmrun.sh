#!/bin/bash
# Run a command in a throw-away guest whose kernel has ipvlan, 8021q, dummy, vrf and
# bonding, on any x86-64 host. The same interface as umlrun.sh and qemurun.sh:
#
# usage: vmrun.sh [-p PROJDIR] [-m MEM] [-t TIMEOUT_S] -- CMD [ARGS...]
#
# MULTIHOME_VM picks the guest:
#   auto (default)  boot `true` in User-Mode Linux (umlrun.sh; with the xstate shim on a
#                   CPU with AMX); if that fails, use QEMU/TCG (qemurun.sh)
#   uml | qemu      that one, without the probe
# To exercise the fallback, make the probe fail: UML_BIN=/bin/false.
# Exit status: CMD's; 250 = set-up failed, 251 = the guest died or timed out.
set -uo pipefail
HERE=$(dirname "$(readlink -f "$0")")
choice=${MULTIHOME_VM:-auto}
case $choice in
  uml | qemu) ;;
  auto)
    start=$SECONDS
    if probe=$("$HERE/umlrun.sh" -m 256M -t 60 -- true 2>&1); then
      choice=uml
      echo "vmrun: UML boots here ($((SECONDS - start)) s probe)" >&2
    else
      rc=$?
      echo "vmrun: UML cannot boot here (probe rc=$rc); using QEMU/TCG. Probe output:" >&2
      printf '%s\n' "$probe" | tail -n 8 | sed 's/^/  | /' >&2
      choice=qemu
    fi
    ;;
  *) echo "vmrun: MULTIHOME_VM must be auto, uml or qemu, not '$choice'" >&2; exit 250 ;;
esac
echo "vmrun: running in a $choice guest" >&2
exec "$HERE/${choice}run.sh" "$@"
