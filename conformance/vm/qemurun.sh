#!/bin/bash
# Run a command inside a throw-away QEMU guest: TCG software emulation, Debian's
# generic kernel, the host's / over virtio-9p (read-only, tmpfs overlay on top), no
# network device. Never KVM: /dev/kvm on these hosts is a PVM variant that crawls.
# The guest kernel has ipvlan, 8021q (vlan), dummy, vrf and bonding. The same
# interface as umlrun.sh; vmrun.sh uses it where UML cannot boot.
#
# usage: qemurun.sh [-p PROJDIR] [-m MEM] [-t TIMEOUT_S] -- CMD [ARGS...]
#   PROJDIR: host dir shared read-write at the same path (default: none); the guest
#   caches it (9p cache=loose), so the host must not change it while the guest runs
# stdout/stderr of CMD stream to stdout; exit status is CMD's (251 = the guest died
# or timed out, 250 = set-up failed). Runs setup_qemu.sh when its cache is missing.
# In the guest MULTIHOME_VM_GUEST=qemu is set, and so is every variable named in
# VM_PASS_ENV. Env: MULTIHOME_VM_CACHE (see setup_qemu.sh), QEMU_SMP (vCPUs, default
# 2), QEMU_VM_APPEND (more kernel arguments), VM_KEEP_CONSOLE=FILE (keep the console)
set -uo pipefail
HERE=$(dirname "$(readlink -f "$0")")
if [ -w /var/cache ]; then CACHE=${MULTIHOME_VM_CACHE:-/var/cache/multihome-vm}
else CACHE=${MULTIHOME_VM_CACHE:-${TMPDIR:-/tmp}/multihome-vm}; fi
PROJ=""; MEM=2G; TMO=3600
while getopts "p:m:t:" o; do case $o in
  p) PROJ=$(readlink -f "$OPTARG");; m) MEM=$OPTARG;; t) TMO=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1)); [ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [opts] -- cmd..." >&2; exit 2; }

if [ ! "$CACHE/vm.env" -nt "$HERE/qemu_init.sh" ] || [ ! "$CACHE/vm.env" -nt "$HERE/setup_qemu.sh" ]; then
  MULTIHOME_VM_CACHE=$CACHE "$HERE/setup_qemu.sh" >&2 || { echo "qemurun: set-up failed" >&2; exit 250; }
fi
. "$CACHE/vm.env"   # KVER KERNEL INITRD MODS

CTL=$(mktemp -d "${TMPDIR:-/tmp}/qemuctl.XXXXXX")
trap 'rm -rf "$CTL"' EXIT
{
  printf 'export PATH=%q HOME=%q TERM=dumb LANG=C.UTF-8 CI=%q\n' "$PATH" "$HOME" "${CI:-}"
  printf 'export PYTHONDONTWRITEBYTECODE=%q\n' "${PYTHONDONTWRITEBYTECODE:-}"
  printf 'export MULTIHOME_VM_GUEST=qemu\n'
  for v in ${VM_PASS_ENV:-}; do printf 'export %s=%q\n' "$v" "${!v:-}"; done
  printf 'VM_CWD=%q\n' "$PWD"
} > "$CTL/env.sh"
printf '%q ' "$@" > "$CTL/cmd.sh"; echo >> "$CTL/cmd.sh"
cat > "$CTL/stage2.sh" <<'STAGE2'
# guest stage 2 (PID 1 after switch_root); /dev/ttyS1 is the host's stdout
. "$vmctl/env.sh"
echo 1 > /proc/sys/kernel/sysrq
hostname qemu 2>/dev/null
ip link set lo up
stty -F /dev/ttyS1 raw -echo 2>/dev/null
cd "$VM_CWD" 2>/dev/null || cd /
echo "VM-READY $(cat /proc/uptime)"
{ bash "$vmctl/cmd.sh" < /dev/null 2>&1; echo $? > "$vmctl/rc"; } > /dev/ttyS1
echo "VM-DONE $(cat /proc/uptime) rc=$(cat "$vmctl/rc")"
sync
/bin/busybox poweroff -f
echo o > /proc/sysrq-trigger; sleep 30
STAGE2

# ttyS0 (the kernel console) -> $CTL/console.log; ttyS1 -> our stdout
timeout --kill-after=10 "$TMO" qemu-system-x86_64 -nodefaults -no-reboot -display none -nic none \
  -accel tcg,thread=multi -cpu max -smp "${QEMU_SMP:-2}" -m "$MEM" \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 quiet panic=-1 mitigations=off vmctl=$CTL vmmods=$MODS ${PROJ:+vmproj=$PROJ} ${QEMU_VM_APPEND:-}" \
  -serial "file:$CTL/console.log" -chardev stdio,id=out,signal=off -serial chardev:out \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,multidevs=remap,readonly=on" \
  -virtfs "local,path=$CTL,mount_tag=ctl,security_model=none,multidevs=remap" \
  ${PROJ:+-virtfs "local,path=$PROJ,mount_tag=proj,security_model=none,multidevs=remap"} \
  2>"$CTL/qemu.log" < /dev/null
qrc=$?
if [ -f "$CTL/rc" ]; then rc=$(cat "$CTL/rc"); else
  echo "qemurun: no exit status from the guest (qemu rc=$qrc); qemu and console log tails:" >&2
  tail -n 40 "$CTL/qemu.log" "$CTL/console.log" >&2; rc=251; fi
[ -n "${VM_KEEP_CONSOLE:-}" ] && cp "$CTL/console.log" "$VM_KEEP_CONSOLE"
exit "$rc"
