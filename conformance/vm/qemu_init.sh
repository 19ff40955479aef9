#!/bin/busybox sh
# /init of the initramfs that setup_qemu.sh builds: PID 1 of the QEMU guest.
# Loads virtio_pci, 9p and overlay; mounts the host's / (9p tag hostroot, read-only)
# under a tmpfs overlay; mounts the control dir and the project dir (9p, read-write) at
# their host paths; binds the unpacked kernel's modules at /lib/modules; then
# switch_root and run $vmctl/stage2.sh. From the kernel command line: vmctl, vmproj
# (optional), vmmods, vmprojcache (9p cache mode of the project mount, default loose:
# imports run much faster than with mmap; the host must not write into the project
# directory while the guest runs).
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev
exec < /dev/null > /dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() { echo "VMINIT: FATAL: $*"; sleep 1; poweroff -f; }
for ko in $(cat /mods/order); do insmod "/mods/$ko" || fail "insmod $ko"; done
P9="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower || fail "mount hostroot"
mount -t tmpfs -o mode=755 tmpfs /upper && mkdir -p /upper/u /upper/w || fail "tmpfs upper"
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot ||
  fail overlay
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run   # a fresh /run, so /run/netns works
# /tmp stays the host's (through the overlay: the guest's writes land in RAM)
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mkdir -p "$R$vmctl" && mount -t 9p -o "$P9,cache=none" ctl "$R$vmctl" || fail "mount ctl"
if [ -n "$vmproj" ]; then
  mkdir -p "$R$vmproj" &&
    mount -t 9p -o "$P9,cache=${vmprojcache:-loose}" proj "$R$vmproj" || fail "mount proj"
fi
mkdir -p $R/lib/modules && mount --bind "/lower$vmmods" $R/lib/modules || fail "bind modules"
exec switch_root $R /bin/sh "$vmctl/stage2.sh"
