#!/usr/bin/env bash
# Build the test installer's initramfs (a gzipped newc cpio archive).
#
#   build-initramfs.sh --out FILE [--module PATH.ko]...
#
# Contents: busybox from Debian's busybox-static (sh, awk, ip, udhcpc, dd...
# as symlinks), curl and the shared libraries it links (the kickstart
# fragments call curl, as they do under Anaconda), the kernel modules given
# (loaded by /init in the order given), this folder's init, ks-run and
# udhcpc.script, and the boot sector ks-run writes to the disk (made by
# bootsector.py). Needs busybox-static, cpio, curl, gzip and python3; no root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="" modules=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --module) modules+=("$2"); shift 2 ;;
    *) echo "usage: $0 --out FILE [--module PATH.ko]..." >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "usage: $0 --out FILE [--module PATH.ko]..." >&2; exit 2; }

busybox=/bin/busybox
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "needs a static busybox at $busybox (Debian package busybox-static)" >&2
  exit 1
fi
curl=$(command -v curl) || { echo "needs curl" >&2; exit 1; }
command -v cpio >/dev/null || { echo "needs cpio" >&2; exit 1; }
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "needs python3 (or PYTHON=...)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,run,root,usr/bin,usr/share/udhcpc,usr/share/provisiond,lib/modules}
ln -s bin "$root/sbin"
ln -s bin "$root/usr/sbin"

cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# curl, and every library ldd says it loads, at the same paths.
install -m 0755 "$curl" "$root/usr/bin/curl"
ldd "$curl" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
chroot_check=$("$root/lib64/ld-linux-x86-64.so.2" --library-path "$root/lib/x86_64-linux-gnu" \
  "$root/usr/bin/curl" --version 2>&1 | head -n 1) || { echo "curl does not run from the archive: $chroot_check" >&2; exit 1; }

: > "$root/lib/modules/load-order"
for module in "${modules[@]}"; do
  name=$(basename "$module" .ko)
  cp "$module" "$root/lib/modules/$name.ko"
  echo "$name" >> "$root/lib/modules/load-order"
done

install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/ks-run" "$root/usr/bin/ks-run"
install -m 0755 "$here/udhcpc.script" "$root/usr/share/udhcpc/default.script"
"$python" "$here/bootsector.py" "$root/usr/share/provisiond/bootsector.bin"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

mkdir -p "$(dirname "$out")"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out: $(stat -c %s "$out") bytes ($chroot_check)"
