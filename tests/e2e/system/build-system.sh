#!/usr/bin/env bash
# Build the lab's installed system: a Debian root file system made by
# debootstrap, as an ext4 image, with its kernel and initrd beside it.
#
#   build-system.sh --out DIR --suite SUITE --mirror URL --packages LIST
#
# LIST: comma-separated packages added to debootstrap's minbase variant.
# DIR gets (and only once they are all complete: it is built as DIR.tmp and
# renamed):
#   rootfs.img     the root file system (ext4, label provisiond-lab), what the
#                  test installer copies onto a machine's disk
#   vmlinuz        the kernel of the image's linux-image package
#   initrd.img     its initramfs (initramfs-tools, MODULES=list: virtio and
#                  ext4 only, so it is small and quick to unpack under TCG)
#   system.json    what was built: suite, packages, kernel, sizes, build seconds
#
# The system, as configured here:
#   - network by DHCP on its NIC at boot: systemd-networkd, one .network file
#     matching en* and eth* (provisiond's DHCP serves the lab's segment);
#   - root on /dev/vda (the whole disk is the file system; the lab boots it
#     with QEMU's direct kernel boot, which stands in for a boot loader);
#   - a serial console (console=ttyS0 on the kernel command line gives a getty);
#   - an empty /etc/machine-id: the installer makes one per install, as
#     Anaconda does (systemd-machine-id-setup in the new system);
#   - no documentation, man pages, locales or apt lists, and only the kernel
#     modules a QEMU machine needs (virtio, file systems, netfilter-free
#     networking; no floppy, no GPU), to keep the image small: it is copied at
#     every install.
# Needs root, debootstrap and e2fsprogs (mkfs.ext4 -d).
set -euo pipefail
out="" suite="" mirror="" packages=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --packages) packages=$2; shift 2 ;;
    *) echo "usage: $0 --out DIR --suite SUITE --mirror URL --packages LIST" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] && [ -n "$suite" ] && [ -n "$mirror" ] && [ -n "$packages" ] \
  || { echo "usage: $0 --out DIR --suite SUITE --mirror URL --packages LIST" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap mkfs.ext4 chroot mount; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian packages debootstrap, e2fsprogs)" >&2; exit 1; }
done

# In a mount namespace of its own: the bind mounts below vanish with it,
# whatever happens to this script.
if [ -z "${PROVISIOND_LAB_BUILD_NS:-}" ]; then
  PROVISIOND_LAB_BUILD_NS=1 exec unshare --mount --propagation private bash "$0" --out "$out" --suite "$suite" \
    --mirror "$mirror" --packages "$packages"
fi

started=$(date +%s)
work=$out.tmp
rm -rf "$work"
mkdir -p "$work"
root=$work/root
mounted=()
cleanup() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  # Never delete through a bind mount of the machine's own /dev, /proc or /sys.
  if grep -q " $root/" /proc/self/mounts; then
    echo "build-system: $root still has mounts; leaving $work in place" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
step() { echo "build-system: $* ($(( $(date +%s) - started )) s)"; }

# The kernel package's postinst builds a full initramfs; it is built again
# below, small, once the configuration for it is in place.
step "debootstrap --variant=minbase --include=$packages $suite $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -n 40 "$work/debootstrap.log" >&2; echo "debootstrap failed (log above)" >&2; exit 1; }

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
for fs in proc sys dev; do
  mount --bind "/$fs" "$root/$fs"
  mounted+=("$root/$fs")
done

step "configuring the system"
echo "provisiond-lab" > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tprovisiond-lab\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
printf '# The lab boots the whole disk as the root file system (root=/dev/vda).\n/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' \
  > "$root/etc/fstab"
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/20-provisiond-lab.network" <<'EOF'
# Any wired NIC: an address by DHCP (provisiond's, on the lab's segment).
[Match]
Name=en* eth*

[Network]
DHCP=ipv4

[DHCPv4]
# provisiond's full-mode DHCP answers by the MAC address it knows.
ClientIdentifier=mac
EOF
in_root systemctl enable systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1
# Nothing the lab needs and something to do at every boot: timers, checks.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
            dpkg-db-backup.timer systemd-timesyncd.service; do
  in_root systemctl mask "$unit" >/dev/null 2>&1 || true
done
# Nobody logs in (root's password is locked); the serial console (console=ttyS0
# at boot) shows the boot, the journal and a getty.
in_root passwd -l root >/dev/null
: > "$root/etc/resolv.conf"
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

step "a small initramfs (virtio, ext4)"
mkdir -p "$root/etc/initramfs-tools/conf.d"
echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/provisiond-lab.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 >> "$root/etc/initramfs-tools/modules"
version=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -n 1)")
step "kernel $version: keeping the modules a QEMU machine uses"
# Whole folders a virtual machine may load from (virtio, the file systems,
# the crypto and library helpers they need, networking) and whatever they
# depend on, then modules.dep again; everything else (hardware drivers,
# sound, GPUs) goes.
modules=$root/lib/modules/$version/kernel
keep=(fs lib crypto arch net/packet net/unix net/ipv6 net/core drivers/virtio drivers/block/virtio_blk.ko
      drivers/block/loop.ko drivers/net/virtio_net.ko drivers/net/net_failover.ko drivers/char drivers/input
      drivers/tty drivers/md drivers/scsi/virtio_scsi.ko drivers/acpi drivers/firmware drivers/platform
      drivers/hid/hid.ko drivers/hid/hid-generic.ko)
kept=$work/modules-kept
mkdir -p "$kept"
for path in "${keep[@]}"; do
  [ -e "$modules/$path" ] || continue
  mkdir -p "$kept/$(dirname "$path")"
  cp -a "$modules/$path" "$kept/$path"
done
rm -rf "$kept/arch/x86/kvm"  # a hypervisor in the guest: not wanted
# And every module those depend on (modules.dep lists them all, recursively).
(cd "$kept" && find . -name '*.ko' | sed 's|^\./\(.*\)$|kernel/\1:|') > "$work/modules-wanted.txt"
grep -F -f "$work/modules-wanted.txt" "$modules/../modules.dep" | cut -d: -f2 | tr ' ' '\n' | grep . | sort -u \
  | while read -r path; do
    [ -e "$kept/${path#kernel/}" ] && continue
    mkdir -p "$kept/$(dirname "${path#kernel/}")"
    cp -a "$modules/../$path" "$kept/${path#kernel/}"
  done
rm -rf "$modules"
mv "$kept" "$modules"
# Every module kept must load: none may depend on one that went.
find "$modules" -name '*.ko' -printf '%f\n' | sed 's/\.ko$//; s/-/_/g' | sort -u > "$work/modules-kept.txt"
unresolved=$(in_root sh -c "find /lib/modules/$version/kernel -name '*.ko' | while read -r ko; do
    echo \"\$ko \$(modinfo -F depends \"\$ko\" | tr ',' ' ')\"
  done" | while read -r ko deps; do
  for dep in $deps; do
    grep -qx "${dep//-/_}" "$work/modules-kept.txt" || echo "$ko needs $dep"
  done
done)
[ -z "$unresolved" ] || { echo "$unresolved" >&2; echo "kept modules need modules that were removed" >&2; exit 1; }
in_root depmod -a "$version"
in_root update-initramfs -u -k "$version" > "$work/initramfs.log" 2>&1 \
  || { cat "$work/initramfs.log" >&2; echo "update-initramfs failed" >&2; exit 1; }

step "removing what the lab does not read (docs, man pages, locales, apt's cache and lists)"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
rm -f "$root"/boot/*.old "$root"/vmlinuz.old "$root"/initrd.img.old

cp "$root/boot/vmlinuz-$version" "$work/vmlinuz"
cp "$root/boot/initrd.img-$version" "$work/initrd.img"
for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount "${mounted[$i]}"; done
mounted=()

# The image: what the tree holds, plus room for what the hand-off and the
# journal write: an eighth more and 64 MiB (ext4's own journal and tables
# take part of it), in 4 KiB blocks (mke2fs's "small" type would take 1 KiB).
used=$(du -s --block-size=1M "$root" | cut -f1)
size=$(( used + used / 8 + 64 ))
step "rootfs.img: $used MiB of files in a $size MiB ext4 image"
mkfs.ext4 -q -F -b 4096 -T default -L provisiond-lab -d "$root" -E root_owner=0:0 "$work/rootfs.img" "${size}M"
e2fsck -fn "$work/rootfs.img" > "$work/e2fsck.log" 2>&1 || { cat "$work/e2fsck.log" >&2; exit 1; }
rm -rf "$root"

seconds=$(( $(date +%s) - started ))
cat > "$work/system.json" <<EOF
{"suite": "$suite", "packages": "$packages", "kernel": "$version", "image_mib": $size, "files_mib": $used,
 "build_seconds": $seconds}
EOF
rm -f "$work"/*.log "$work"/modules-*.txt
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
step "built $out"
