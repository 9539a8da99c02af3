#!/usr/bin/env bash
# Install the Debian 12 packages unionmount's build, tests and demo use.
#
# Idempotent: each package is checked by a command it provides, and nothing
# is done (not even `apt-get update`) when everything is present. Installing
# needs root; as another user the script lists what is missing and exits 0,
# so `make test` can still run (tests that need a missing tool skip).
#
# Package            checked by         used by
# fuse3              fusermount3        every FUSE mount and unmount
# fuse-overlayfs     fuse-overlayfs     benchmarks and comparisons
# attr               setfattr getfattr  demo, whiteout/opaque fixtures
# busybox-static     static busybox     rootfs for image/container tests
# gcc libc6-dev      gcc, stdio.h       `go test -race` needs cgo
# uidmap             newuidmap          rootless tests
# podman runc        podman runc        mount_program end-to-end tests
# umoci skopeo       umoci skopeo       building OCI test images offline
# tar zstd           tar zstd           layer archives
# e2fsprogs          mke2fs             scratch filesystems in tests
# xfsprogs           mkfs.xfs           reflink (FICLONE) copy-up test
# strace             strace             exact syscall kill points (internal/crash)
# docker-registry    docker-registry    a real registry for pull/push tests
# apache2-utils      htpasswd           the registry's basic-auth password file
# openssl            openssl            the registry tests' CA and certificate
set -euo pipefail

# Non-root shells often lack the sbin directories (mke2fs, modprobe).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PACKAGES=(fuse3 fuse-overlayfs attr busybox-static gcc libc6-dev uidmap podman runc umoci skopeo tar zstd e2fsprogs xfsprogs strace docker-registry apache2-utils openssl)

say() { printf 'deps: %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# present PKG: does this machine already have what PKG gives us?
present() {
	case $1 in
	fuse3) have fusermount3 ;;
	attr) have setfattr && have getfattr ;;
	# The dynamic `busybox` package cannot run inside a container rootfs.
	busybox-static) have busybox && ! ldd "$(command -v busybox)" >/dev/null 2>&1 ;;
	libc6-dev) [[ -e /usr/include/stdio.h ]] ;;
	uidmap) have newuidmap && have newgidmap ;;
	e2fsprogs) have mke2fs ;;
	apache2-utils) have htpasswd ;;
	xfsprogs) have mkfs.xfs ;;
	*) have "$1" ;;
	esac
}

# available PKG: does apt know a candidate version for PKG?
available() {
	local cand
	cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
	[[ -n "$cand" && "$cand" != "(none)" ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
	present "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
	say "all present: ${PACKAGES[*]}"
elif ((EUID != 0)); then
	say "missing: ${missing[*]}"
	say "not root: skipping install (run 'sudo make deps'); tests that need these will skip"
elif ! have apt-get; then
	say "missing: ${missing[*]}"
	say "no apt-get on this machine: install the equivalents by hand"
else
	say "missing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	say "running apt-get update"
	apt-get update -qq
	install=()
	for p in "${missing[@]}"; do
		if available "$p"; then
			install+=("$p")
		else
			say "skipping $p: no such package in this distribution's apt sources"
		fi
	done
	if ((${#install[@]} > 0)); then
		# No recommends: podman would pull buildah, slirp4netns and more we do
		# not use. runc is in the same transaction, so podman's `crun | runc`
		# is satisfied by runc (crun fails on hybrid cgroups).
		say "installing: ${install[*]}"
		apt-get install -y -qq --no-install-recommends "${install[@]}" >/dev/null
		for p in "${install[@]}"; do
			present "$p" || say "warning: $p installed but its command is still missing"
		done
		say "installed: ${install[*]}"
	fi
fi

# Kernel modules: best effort (built in, or already loaded, is fine).
for m in fuse overlay; do
	if grep -qw "$m" /proc/filesystems 2>/dev/null; then
		continue
	fi
	if ((EUID == 0)) && have modprobe && modprobe "$m" 2>/dev/null; then
		say "loaded kernel module $m"
	else
		say "warning: kernel filesystem $m not available (modprobe $m as root)"
	fi
done

if [[ ! -c /dev/fuse ]]; then
	say "warning: /dev/fuse is missing; FUSE tests will skip"
fi

if ! have go && [[ ! -x /usr/local/go/bin/go ]]; then
	say "warning: no Go toolchain on PATH or at /usr/local/go; install Go (see go.mod for the version)"
fi
