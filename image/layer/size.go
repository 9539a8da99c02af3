package layer

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// Usage is what a directory tree takes.
type Usage struct {
	// Disk is the space allocated (st_blocks * 512, once per inode,
	// directories included): what `du -s -B1` reports.
	Disk int64
	// Content is the apparent size of regular files and symlinks, once per
	// inode: what docker reports as a layer's size.
	Content int64
}

// DiskUsage measures the tree at dir without following symlinks.
func DiskUsage(dir string) (Usage, error) {
	var u Usage
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		key := [2]uint64{st.Dev, st.Ino}
		if st.Nlink > 1 && !d.IsDir() {
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		u.Disk += st.Blocks * 512
		if t := fi.Mode().Type(); t == 0 || t == fs.ModeSymlink {
			u.Content += st.Size
		}
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("measure %s: %w", dir, err)
	}
	return u, nil
}

// SpaceLimit is the default ApplyOptions.MaxSize for a layer unpacked in
// dir: the space free on dir's filesystem to unprivileged users (statfs
// f_bavail, df's "Avail") less a reserve of 1% of the filesystem, at most
// 1 GiB. A layer that fits on the disk loads, as it would with docker or
// containerd, which set no limit of their own; a decompression bomb stops
// with ErrTooLarge before it fills the filesystem for everyone else. The
// result is at least 1 (0 would mean no limit).
func SpaceLimit(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	bsize := st.Bsize
	if st.Frsize > 0 {
		bsize = st.Frsize
	}
	free := int64(st.Bavail) * bsize
	reserve := min(int64(st.Blocks)*bsize/100, 1<<30)
	return max(free-reserve, 1), nil
}
