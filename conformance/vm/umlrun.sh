#!/bin/bash
# Run a command inside a throw-away User-Mode Linux kernel (Debian package
# user-mode-linux) whose root is the host's / over hostfs (read-only, tmpfs
# overlay on top). The guest kernel has what this machine's lacks: ipvlan,
# 8021q (vlan), dummy, vrf, bonding. `make test-vm` uses it.
#
# usage: umlrun.sh [-p PROJDIR] [-m MEM] [-t TIMEOUT_S] -- CMD [ARGS...]
#   PROJDIR: host dir shared read-write at the same path (default: none)
# stdout/stderr of CMD stream to stdout; exit status is CMD's (251 = UML died or
# timed out, 250 = setup failed). In the guest MULTIHOME_VM_GUEST=uml is set, and so
# is every variable named in VM_PASS_ENV (space-separated names).
#
# On a CPU with AMX (amx_tile in /proc/cpuinfo) UML cannot boot unaided ("ptrace set
# fp regs failed"): xstate_shim.c is then built with cc into $VM_BUILD (default
# build/vm of this checkout) and preloaded into linux.uml alone.
set -uo pipefail
HERE=$(dirname "$(readlink -f "$0")")
VM_BUILD=${VM_BUILD:-$(readlink -f "$HERE/../..")/build/vm}
# defaults: the apt-installed package (apt-get install user-mode-linux); it ships
# modules.dep, so no depmod is needed. Override for an extracted .deb.
UML=${UML_BIN:-/usr/bin/linux.uml}
MODS=${UML_MODS:-/usr/lib/uml/modules}   # holds KVER/ with modules.dep
PROJ=""; MEM=2G; TMO=3600
while getopts "p:m:t:" o; do case $o in
  p) PROJ=$(readlink -f "$OPTARG");; m) MEM=$OPTARG;; t) TMO=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1)); [ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [opts] -- cmd..." >&2; exit 2; }

[ -x "$UML" ] || { echo "umlrun: $UML is missing (apt-get install user-mode-linux)" >&2; exit 250; }
PRELOAD=""
if grep -qw amx_tile /proc/cpuinfo; then
  SHIM=$VM_BUILD/xstate_shim.so
  if [ ! "$SHIM" -nt "$HERE/xstate_shim.c" ]; then
    mkdir -p "$VM_BUILD" &&
      cc -O2 -Wall -Werror -shared -fPIC -o "$SHIM.tmp" "$HERE/xstate_shim.c" &&
      mv "$SHIM.tmp" "$SHIM" ||
      { echo "umlrun: cannot build $SHIM (cc: apt-get install gcc libc6-dev)" >&2; exit 250; }
  fi
  PRELOAD=$SHIM
fi

CTL=$(mktemp -d "${TMPDIR:-/tmp}/umlctl.XXXXXX")
trap 'rm -rf "$CTL"' EXIT
{
  printf 'export PATH=%q HOME=%q TERM=dumb LANG=C.UTF-8 CI=%q\n' "$PATH" "$HOME" "${CI:-}"
  printf 'export PYTHONDONTWRITEBYTECODE=%q\n' "${PYTHONDONTWRITEBYTECODE:-}"
  printf 'export MULTIHOME_VM_GUEST=uml\n'
  for v in ${VM_PASS_ENV:-}; do printf 'export %s=%q\n' "$v" "${!v:-}"; done
  printf 'VM_CWD=%q\n' "$PWD"
} > "$CTL/env.sh"
printf '%q ' "$@" > "$CTL/cmd.sh"; echo >> "$CTL/cmd.sh"
cat > "$CTL/stage2.sh" <<'EOF'
# guest stage 2 (PID 1 after pivot_root)
. "$vmctl/env.sh"
umount -l /.oldroot 2>/dev/null
echo 1 > /proc/sys/kernel/sysrq
hostname uml 2>/dev/null
ip link set lo up
stty -F /dev/tty1 raw -echo 2>/dev/null
cd "$VM_CWD" 2>/dev/null || cd /
echo "VM-READY $(cat /proc/uptime)"
{ bash "$vmctl/cmd.sh" < /dev/null 2>&1; echo $? > "$vmctl/rc"; } | tee "$vmctl/out.log" > /dev/tty1
echo "VM-DONE $(cat /proc/uptime) rc=$(cat "$vmctl/rc")"
sync
if [ -x /bin/busybox ]; then /bin/busybox poweroff -f; fi
echo o > /proc/sysrq-trigger; sleep 30
EOF

# con0 (kernel console, /dev/console) -> $CTL/console.log; con1 (/dev/tty1) -> our stdout
timeout --kill-after=10 "$TMO" env ${PRELOAD:+LD_PRELOAD="$PRELOAD"} "$UML" mem="$MEM" root=/dev/root rootfstype=hostfs rootflags=/ ro \
  init="$HERE/uml_init.sh" quiet panic=-1 \
  con0=null,fd:4 con1=null,fd:3 con=null ssl=null \
  vmctl="$CTL" vmmods="$MODS" ${PROJ:+vmproj="$PROJ"} \
  3>&1 4>"$CTL/console.log" >>"$CTL/console.log" 2>&1 < /dev/null
urc=$?
if [ -f "$CTL/rc" ]; then rc=$(cat "$CTL/rc"); else
  echo "umlrun: no exit status from guest (uml rc=$urc); console log tail:" >&2
  tail -n 40 "$CTL/console.log" >&2; rc=251; fi
[ -n "${VM_KEEP_CONSOLE:-}" ] && cp "$CTL/console.log" "$VM_KEEP_CONSOLE"
exit "$rc"
