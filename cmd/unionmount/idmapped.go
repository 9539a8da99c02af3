package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/unionmount/unionmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// Lowers on idmapped mounts.
//
// containers/storage as podman 4.3 ships it (Debian 12), asked for a
// container with --uidmap while a mount_program is configured, does two
// things at once: it reaches every lower layer through an idmapped mount
// of the storage directory (.../mapped/0/l/...), which already shows the
// layer's owners shifted by the container's mapping, and it passes the
// same mapping to the mount program as uidmapping=/gidmapping=. Applied a
// second time, the mapping sends every owner out of range (the overflow id
// 65534), and the container does not start: fuse-overlayfs fails there
// with "permission denied" on /etc/hostname. The upper it passes is not
// idmapped, so the ids must be shifted exactly once.
//
// So when a mapping is given, a lower on an idmapped mount is replaced by
// the same directory reached through a mount of the same filesystem that
// is not idmapped (the storage directory itself), checked to be the same
// inode. containers/storage detaches its idmapped mounts as soon as the
// mount program returns; the daemon has its layers open by then.

// errNoPlainMount means a lower on an idmapped mount has no other way in.
var errNoPlainMount = errors.New("no mount of its filesystem without an id mapping reaches it")

// bypassIDMapped returns lower unchanged unless it lies on an idmapped
// mount; then the same directory through a mount of the same filesystem
// that is not idmapped. mntID gives the mount a path is reached through,
// sameFile whether two paths are one inode.
func bypassIDMapped(lower string, mounts []mountinfo.Mount, mntID func(string) (uint64, error), sameFile func(a, b string) bool) (string, error) {
	id, err := mntID(lower)
	if err != nil {
		return "", err
	}
	var on *mountinfo.Mount
	for i := range mounts {
		if mounts[i].ID == id {
			on = &mounts[i]
		}
	}
	if on == nil || !on.HasOption("idmapped") {
		return lower, nil
	}
	rel, err := filepath.Rel(on.Mountpoint, lower)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not below its mount point %s", lower, on.Mountpoint)
	}
	inFS := filepath.Join(on.Root, rel)
	for _, m := range mounts {
		if m.Dev != on.Dev || m.HasOption("idmapped") || !within(inFS, m.Root) {
			continue
		}
		cand := filepath.Join(m.Mountpoint, strings.TrimPrefix(inFS, m.Root))
		if cid, err := mntID(cand); err != nil || cid != m.ID || !sameFile(lower, cand) {
			continue
		}
		return cand, nil
	}
	return "", errNoPlainMount
}

// mountIDOf returns the id of the mount path is reached through.
func mountIDOf(path string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_SYNC_AS_STAT, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, fmt.Errorf("statx %s: %w", path, err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: the kernel does not report mount ids", path)
	}
	return stx.Mnt_id, nil
}

// sameInode reports whether a and b are one inode of one filesystem.
func sameInode(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// bypassIDMappedLowers applies bypassIDMapped to every lower of cfg when
// ids are mapped or squashed: containers-storage sends squash_to_uid= for
// a mapping of one id, and idmaps the lowers then too.
func bypassIDMappedLowers(cfg *config) error {
	o := &cfg.opts
	if len(o.UIDMap) == 0 && len(o.GIDMap) == 0 && o.SquashUID < 0 && o.SquashGID < 0 {
		return nil
	}
	mounts, err := mountinfo.Self()
	if errors.Is(err, os.ErrNotExist) {
		return nil // no /proc: nothing to learn, nothing to bypass
	}
	if err != nil {
		return fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	for i, l := range o.Lowers {
		p, err := bypassIDMapped(l, mounts, mountIDOf, sameInode)
		if errors.Is(err, errNoPlainMount) {
			return usagef("%s %q: on an idmapped mount, and the id options (uidmapping=, gidmapping=, squash_to_*) would shift "+
				"its owners a second time, but %v; pass the layer through a mount without an id mapping, or drop the id options", cfg.lowerSrc, l, err)
		}
		if err != nil {
			return usagef("%s %q: %v", cfg.lowerSrc, l, err)
		}
		o.Lowers[i] = p
	}
	return nil
}
