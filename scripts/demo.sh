#!/usr/bin/env bash
# A tour of unionmount: three layers, each using a different way to hide
# what is below, mounted as one tree; then a write and a delete through the
# mount, and what they leave in the upper layer.
#
#   UNIONMOUNT_BIN  binary to use (default: bin/unionmount of this repo)
#   DEMO_WRITE=0    skip the write section (read-only tour only)
#
# Run as root (trusted.* xattrs and /dev/fuse need it on this setup).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${UNIONMOUNT_BIN:-$repo/bin/unionmount}
write=${DEMO_WRITE:-1}

if [[ ! -x $bin ]]; then
	echo "demo: $bin not found; run 'make build' first" >&2
	exit 1
fi
for c in fusermount3 setfattr getfattr; do
	if ! command -v "$c" >/dev/null; then
		echo "demo: $c not found; run 'make deps' as root" >&2
		exit 1
	fi
done

dir=$(mktemp -d -t unionmount-demo.XXXXXX)
mnt=$dir/mnt
cleanup() {
	if mountpoint -q "$mnt" 2>/dev/null; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

section() { printf '\n=== %s ===\n' "$*"; }

# tree DIR: every entry below DIR with its type and mode, sorted by path.
# Whiteouts show as character devices (c---------).
tree() {
	(cd "$1" && find . -mindepth 1 \( -type l -printf '%M  %P -> %l\n' \) -o -printf '%M  %P\n' |
		LC_ALL=C sort -k2)
}

# opaque DIR: mark DIR opaque the kernel's way (trusted.* as root).
opaque() {
	if ! setfattr -n trusted.overlay.opaque -v y "$1" 2>/dev/null; then
		echo "(not root: using user.overlay.opaque instead of trusted.overlay.opaque)"
		setfattr -n user.overlay.opaque -v y "$1"
	fi
}

cd "$dir"
mkdir -p base patch top upper work mnt
echo "working in $dir (removed on exit)"

section "layer base (bottom)"
mkdir -p base/etc base/app/bin base/app/config base/docs
echo demo-host >base/etc/hostname
echo "welcome to the base layer" >base/etc/motd
printf '#!/bin/sh\necho "run v1"\n' >base/app/bin/run.sh
chmod 755 base/app/bin/run.sh
echo "a = 1" >base/app/config/a.conf
echo "b = 2" >base/app/config/b.conf
echo "read me" >base/docs/readme.txt
tree base

section "layer patch (middle): two deletions and a change"
mkdir -p patch/etc patch/app/bin
mknod patch/etc/motd c 0 0 # overlayfs whiteout: hides etc/motd
touch patch/.wh.docs       # AUFS/OCI whiteout: hides docs/
printf '#!/bin/sh\necho "run v2"\n' >patch/app/bin/run.sh
chmod 755 patch/app/bin/run.sh
tree patch
echo "etc/motd is a char 0/0 whiteout; .wh.docs is an AUFS-style whiteout of docs"

section "layer top (highest): app/config replaced by an opaque dir"
mkdir -p top/app/config
echo "new = yes" >top/app/config/new.conf
opaque top/app/config
tree top
getfattr --absolute-names -d -m '\.overlay\.' top/app/config 2>/dev/null | sed '/^$/d'

section "mount"
echo "+ unionmount --lower top:patch:base --upper upper --workdir work mnt"
"$bin" --lower top:patch:base --upper upper --workdir work mnt
grep " $mnt " /proc/mounts || true

section "merged view (find mnt)"
tree mnt
echo
echo "no etc/motd (whiteout), no docs (.wh.docs), app/config holds only new.conf (opaque),"
echo "and no whiteout or marker is visible."

section "cat mnt/app/bin/run.sh (patch's version wins over base's)"
cat mnt/app/bin/run.sh

if [[ $write == 1 ]]; then
	section "write through the mount"
	fail() {
		echo "demo: the write section failed: $*" >&2
		echo "demo: (DEMO_WRITE=0 runs the read-only tour only)" >&2
		exit 1
	}
	echo "+ echo hello >mnt/etc/greeting"
	echo hello >mnt/etc/greeting || fail "creating etc/greeting"
	echo "+ rm mnt/etc/hostname   (a file of the base layer)"
	rm mnt/etc/hostname || fail "removing etc/hostname"
	echo "+ echo '# local' >>mnt/app/config/new.conf   (copy-up of a lower file)"
	echo '# local' >>mnt/app/config/new.conf || fail "appending to app/config/new.conf"
	echo
	echo "merged etc/ now:"
	tree mnt/etc

	section "what landed in the upper layer"
	echo "+ ls -laR upper"
	ls -laR upper
	echo
	echo "etc/hostname is now a char 0/0 whiteout in the upper; the lowers are untouched:"
	echo "+ ls -la base/etc"
	ls -la base/etc
	echo
	echo "+ getfattr -R -d -m - upper"
	getfattr --absolute-names -R -d -m - upper 2>/dev/null | sed '/^$/d' || true
fi

section "unmount"
echo "+ fusermount3 -u mnt"
fusermount3 -u mnt
if mountpoint -q mnt; then
	echo "demo: mnt is still mounted after fusermount3 -u" >&2
	exit 1
fi
echo "unmounted; the layers stay in place for the next mount."
