package fstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Applier changes the tree under root. Fixtures are lists of Appliers.
type Applier interface {
	Apply(root string) error
}

// ApplyFunc adapts a function to an Applier.
type ApplyFunc func(root string) error

// Apply calls f(root).
func (f ApplyFunc) Apply(root string) error { return f(root) }

// Apply applies a in order to root and stops at the first error.
func Apply(root string, a ...Applier) error {
	for _, x := range a {
		if err := x.Apply(root); err != nil {
			return err
		}
	}
	return nil
}

// Group makes one Applier of several, applied in order.
func Group(a ...Applier) Applier {
	return ApplyFunc(func(root string) error { return Apply(root, a...) })
}

// UnixMode converts the permission bits of m and its setuid, setgid and
// sticky flags to the st_mode bits the kernel uses (07777). The type bits of
// m are ignored. Octal literals work too: 0o4755 means setuid 0755, as
// os.ModeSetuid|0o755 does.
func UnixMode(m os.FileMode) uint32 {
	mode := uint32(m) & 0o7777
	if m&os.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	return mode
}

// chmod sets the exact mode bits, umask and setgid inheritance aside.
func chmod(p string, mode os.FileMode) error {
	return unix.Fchmodat(unix.AT_FDCWD, p, UnixMode(mode), 0)
}

// CreateDir creates the directory path (its parent must exist) with exactly
// mode. An existing directory only gets its mode set.
func CreateDir(path string, mode os.FileMode) Applier {
	return ApplyFunc(func(root string) error {
		p := filepath.Join(root, path)
		err := os.Mkdir(p, 0o700)
		if err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create dir %q: %w", path, err)
		}
		if err := chmod(p, mode); err != nil {
			return fmt.Errorf("create dir %q: %w", path, err)
		}
		return nil
	})
}

// CreateFile creates or replaces the regular file path with content and
// exactly mode.
func CreateFile(path string, content []byte, mode os.FileMode) Applier {
	return ApplyFunc(func(root string) error {
		p := filepath.Join(root, path)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			return fmt.Errorf("create file %q: %w", path, err)
		}
		if err := chmod(p, mode); err != nil {
			return fmt.Errorf("create file %q: %w", path, err)
		}
		return nil
	})
}

// CreateSparseFile creates the regular file path (mode 0644) of the given
// size that holds dataAt[off] at each offset off and holes elsewhere.
func CreateSparseFile(path string, size int64, dataAt map[int64][]byte) Applier {
	return ApplyFunc(func(root string) error {
		p := filepath.Join(root, path)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("create sparse file %q: %w", path, err)
		}
		err = f.Truncate(size)
		for off, b := range dataAt {
			if err != nil {
				break
			}
			_, err = f.WriteAt(b, off)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = chmod(p, 0o644)
		}
		if err != nil {
			return fmt.Errorf("create sparse file %q: %w", path, err)
		}
		return nil
	})
}

// Symlink creates the symbolic link path pointing to target (kept verbatim).
func Symlink(target, path string) Applier {
	return ApplyFunc(func(root string) error {
		if err := os.Symlink(target, filepath.Join(root, path)); err != nil {
			return fmt.Errorf("symlink %q -> %q: %w", path, target, err)
		}
		return nil
	})
}

// Link creates the hard link newname to oldname, both relative to root.
func Link(oldname, newname string) Applier {
	return ApplyFunc(func(root string) error {
		if err := os.Link(filepath.Join(root, oldname), filepath.Join(root, newname)); err != nil {
			return fmt.Errorf("link %q to %q: %w", newname, oldname, err)
		}
		return nil
	})
}

// Mkfifo creates the named pipe path with exactly mode.
func Mkfifo(path string, mode os.FileMode) Applier {
	return ApplyFunc(func(root string) error {
		p := filepath.Join(root, path)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return fmt.Errorf("mkfifo %q: %w", path, err)
		}
		if err := chmod(p, mode); err != nil {
			return fmt.Errorf("mkfifo %q: %w", path, err)
		}
		return nil
	})
}

// Mknod creates the device node path. mode carries the type
// (os.ModeDevice|os.ModeCharDevice for a character device, os.ModeDevice for
// a block device) and the permission bits.
func Mknod(path string, mode os.FileMode, major, minor uint32) Applier {
	return ApplyFunc(func(root string) error {
		var typ uint32
		switch {
		case mode&os.ModeCharDevice != 0:
			typ = unix.S_IFCHR
		case mode&os.ModeDevice != 0:
			typ = unix.S_IFBLK
		default:
			return fmt.Errorf("mknod %q: mode %v is not a device type", path, mode)
		}
		p := filepath.Join(root, path)
		if err := unix.Mknod(p, typ|0o600, int(unix.Mkdev(major, minor))); err != nil {
			return fmt.Errorf("mknod %q: %w", path, err)
		}
		if err := chmod(p, mode); err != nil {
			return fmt.Errorf("mknod %q: %w", path, err)
		}
		return nil
	})
}

// Chown sets the owner of path without following a final symlink.
func Chown(path string, uid, gid int) Applier {
	return ApplyFunc(func(root string) error {
		if err := os.Lchown(filepath.Join(root, path), uid, gid); err != nil {
			return fmt.Errorf("chown %q: %w", path, err)
		}
		return nil
	})
}

// Chmod sets exactly mode (permissions, setuid, setgid, sticky) on path.
// Chown clears setuid/setgid, so a fixture chowns first and chmods after.
func Chmod(path string, mode os.FileMode) Applier {
	return ApplyFunc(func(root string) error {
		if err := chmod(filepath.Join(root, path), mode); err != nil {
			return fmt.Errorf("chmod %q: %w", path, err)
		}
		return nil
	})
}

// Chtimes sets the access and modification times of path without following
// a final symlink. A directory's times change whenever an entry is added to
// it, so fixtures set them last.
func Chtimes(path string, atime, mtime time.Time) Applier {
	return ApplyFunc(func(root string) error {
		ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, path), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chtimes %q: %w", path, err)
		}
		return nil
	})
}

// SetXattr sets the extended attribute name of path (not following a final
// symlink). user.* xattrs are only allowed on regular files and directories.
func SetXattr(path, name string, value []byte) Applier {
	return ApplyFunc(func(root string) error {
		if err := unix.Lsetxattr(filepath.Join(root, path), name, value, 0); err != nil {
			return fmt.Errorf("set xattr %s on %q: %w", name, path, err)
		}
		return nil
	})
}

// Remove removes path and everything under it; a missing path is no error.
func Remove(path string) Applier {
	return ApplyFunc(func(root string) error {
		if err := os.RemoveAll(filepath.Join(root, path)); err != nil {
			return fmt.Errorf("remove %q: %w", path, err)
		}
		return nil
	})
}
