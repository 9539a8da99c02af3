package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	id         uint64
	dev        string // major:minor of the filesystem
	root       string // the mount's root within its filesystem
	mountpoint string
	idmapped   bool
}

// parseMountinfo reads /proc/self/mountinfo.
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint mount-options [optional...] - type source super-options
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		id, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		e := mountEntry{id: id, dev: f[2], root: unescapeMountinfo(f[3]), mountpoint: unescapeMountinfo(f[4])}
		for _, o := range strings.Split(f[5], ",") {
			e.idmapped = e.idmapped || o == "idmapped"
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// errNoPlainMount means a lower on an idmapped mount has no other way in.
var errNoPlainMount = errors.New("no mount of its filesystem without an id mapping reaches it")

// bypassIDMapped returns lower unchanged unless it lies on an idmapped
// mount; then the same directory through a mount of the same filesystem
// that is not idmapped. mntID gives the mount a path is reached through,
// sameFile whether two paths are one inode.
func bypassIDMapped(lower string, mounts []mountEntry, mntID func(string) (uint64, error), sameFile func(a, b string) bool) (string, error) {
	id, err := mntID(lower)
	if err != nil {
		return "", err
	}
	var on *mountEntry
	for i := range mounts {
		if mounts[i].id == id {
			on = &mounts[i]
		}
	}
	if on == nil || !on.idmapped {
		return lower, nil
	}
	rel, err := filepath.Rel(on.mountpoint, lower)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not below its mount point %s", lower, on.mountpoint)
	}
	inFS := filepath.Join(on.root, rel)
	for _, m := range mounts {
		if m.dev != on.dev || m.idmapped || !within(inFS, m.root) {
			continue
		}
		cand := filepath.Join(m.mountpoint, strings.TrimPrefix(inFS, m.root))
		if cid, err := mntID(cand); err != nil || cid != m.id || !sameFile(lower, cand) {
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil // no /proc: nothing to learn, nothing to bypass
	}
	mounts, err := parseMountinfo(f)
	f.Close()
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
