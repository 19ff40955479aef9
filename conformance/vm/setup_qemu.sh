#!/bin/bash
# Host set-up for qemurun.sh (the QEMU/TCG guest). Idempotent; qemurun.sh runs it when
# its cache is missing or older than qemu_init.sh. Needs root the first time (apt-get).
#  1. installs what is missing of: qemu-system-x86 busybox-static kmod cpio
#  2. fetches Debian's generic kernel (the linux-image-<kver>-amd64 that
#     linux-image-amd64 depends on) with `apt-get download` and unpacks it into the
#     cache with dpkg-deb -x: nothing is installed on the host
#  3. builds a busybox initramfs: /init is qemu_init.sh, with the modules it needs
#     before it can see the host (virtio_pci, 9pnet_virtio, 9p, overlay)
#  4. writes $CACHE/vm.env (KVER KERNEL INITRD MODS) for qemurun.sh
# The cache lives outside the checkout: $MULTIHOME_VM_CACHE, default
# /var/cache/multihome-vm (${TMPDIR:-/tmp}/multihome-vm where /var/cache is read-only).
# Kernel package override: $MULTIHOME_VM_KPKG.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
if [ -w /var/cache ]; then CACHE=${MULTIHOME_VM_CACHE:-/var/cache/multihome-vm}
else CACHE=${MULTIHOME_VM_CACHE:-${TMPDIR:-/tmp}/multihome-vm}; fi
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$CACHE"

missing=""
for p in qemu-system-x86 busybox-static kmod cpio; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup_qemu: installing$missing" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
KPKG=${MULTIHOME_VM_KPKG:-$(kernel_package)}
[ -n "$KPKG" ] || { apt-get update -qq; KPKG=$(kernel_package); }
[ -n "$KPKG" ] || { echo "setup_qemu: no linux-image-*-amd64 in the apt lists" >&2; exit 1; }
KVER=${KPKG#linux-image-}
KROOT=$CACHE/$KVER
if [ ! -f "$KROOT/lib/modules/$KVER/modules.dep" ]; then
  echo "setup_qemu: fetching $KPKG (apt-get download, unpacked into $CACHE)" >&2
  rm -rf "$KROOT" && mkdir -p "$KROOT"
  (cd "$CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG")
  dpkg-deb -x "$CACHE/${KPKG}"_*.deb "$KROOT"
  rm -f "$CACHE/${KPKG}"_*.deb
  depmod -b "$KROOT" "$KVER"
fi

# the initramfs: busybox, /init and the early modules in load order (mods/order)
T=$(mktemp -d "${TMPDIR:-/tmp}/mh-initrd.XXXXXX")
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/mods" "$T/dev" "$T/lower" "$T/upper" "$T/newroot"
cp /bin/busybox "$T/bin/busybox"
cp "$HERE/qemu_init.sh" "$T/init" && chmod 755 "$T/init"
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$T/mods/" && basename "$ko" >> "$T/mods/order"
done
(cd "$T" && find . | cpio -o -H newc --quiet | gzip -1) > "$KROOT/initrd.gz"

cat > "$CACHE/vm.env.tmp" <<ENV
KVER=$KVER
KERNEL=$KROOT/boot/vmlinuz-$KVER
INITRD=$KROOT/initrd.gz
MODS=$KROOT/lib/modules
ENV
mv "$CACHE/vm.env.tmp" "$CACHE/vm.env"
echo "setup_qemu: kernel $KVER ready in $CACHE ($(wc -l < "$T/mods/order") early modules)" >&2
