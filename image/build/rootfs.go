package build

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// rootFS writes into a directory tree (a container's merged union) as
// into a root: every path resolves with openat2(RESOLVE_IN_ROOT), so
// ".." and symlinks, absolute ones too, stay inside it, as they would for
// a process chrooted there. Nothing is written outside.
type rootFS struct {
	fd int
}

func openRoot(dir string) (*rootFS, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open container root: %w", err)
	}
	return &rootFS{fd: fd}, nil
}

func (r *rootFS) close() { unix.Close(r.fd) }

func rel(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// open resolves p in the root, following symlinks (in the root), with
// flags added to O_CLOEXEC.
func (r *rootFS) open(p string, flags int) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(r.fd, rel(p), how)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return fd, nil
}

// stat stats p, following symlinks in the root; ok is false when p does
// not exist.
func (r *rootFS) stat(p string) (st unix.Stat_t, ok bool, err error) {
	fd, err := r.open(p, unix.O_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return st, false, err
	}
	return st, true, nil
}

// parent opens the directory that holds p, and returns p's last name.
func (r *rootFS) parent(p string) (int, string, error) {
	p = rel(p)
	if p == "." {
		return -1, "", fmt.Errorf("cannot replace the root directory")
	}
	fd, err := r.open(path.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY)
	return fd, path.Base(p), err
}

// mkdirAll makes directory p and its missing parents, owned by uid:gid
// with mode perm. Directories that exist keep their attributes.
func (r *rootFS) mkdirAll(p string, uid, gid int, perm uint32) error {
	p = rel(p)
	if p == "." {
		return nil
	}
	cur := ""
	for _, name := range strings.Split(p, "/") {
		cur = path.Join(cur, name)
		st, ok, err := r.stat(cur)
		if err != nil {
			return err
		}
		if ok {
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return fmt.Errorf("/%s exists and is not a directory", cur)
			}
			continue
		}
		if r.isSymlink(cur) {
			return fmt.Errorf("/%s is a symlink to a directory that does not exist", cur)
		}
		if err := r.mkdir(cur, uid, gid, perm, time.Time{}); err != nil {
			return err
		}
	}
	return nil
}

// mkdir makes directory p, or sets the attributes of the one there.
func (r *rootFS) mkdir(p string, uid, gid int, perm uint32, mtime time.Time) error {
	dfd, base, err := r.parent(p)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(dfd, base, 0); err != nil {
			return fmt.Errorf("replace /%s: %w", rel(p), err)
		}
	}
	if err := unix.Mkdirat(dfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mkdir /%s: %w", rel(p), err)
	}
	return setAttrs(dfd, base, uid, gid, perm, mtime, false)
}

// setAttrs sets owner, mode and (when not zero) mtime of dfd/base.
func setAttrs(dfd int, base string, uid, gid int, perm uint32, mtime time.Time, symlink bool) error {
	if err := unix.Fchownat(dfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", base, err)
	}
	if !symlink {
		fd, err := unix.Openat(dfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), perm)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("chmod %s: %w", base, err)
		}
	}
	if !mtime.IsZero() {
		ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		if err := unix.UtimesNanoAt(dfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %s: %w", base, err)
		}
	}
	return nil
}

// removeEntry removes what is at dfd/base unless it is a directory.
func removeEntry(dfd int, base string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%s is a directory", base)
	}
	return unix.Unlinkat(dfd, base, 0)
}

// writeFile writes a regular file at p from src, replacing a file or
// symlink there.
func (r *rootFS) writeFile(p string, src io.Reader, uid, gid int, perm uint32, mtime time.Time) error {
	dfd, base, err := r.parent(p)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := removeEntry(dfd, base); err != nil {
		return fmt.Errorf("write /%s: %w", rel(p), err)
	}
	fd, err := unix.Openat(dfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write /%s: %w", rel(p), err)
	}
	f := os.NewFile(uintptr(fd), p)
	_, err = io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write /%s: %w", rel(p), err)
	}
	return setAttrs(dfd, base, uid, gid, perm, mtime, false)
}

// symlink makes a symlink at p, replacing a file or symlink there.
func (r *rootFS) symlink(p, target string, uid, gid int, mtime time.Time) error {
	dfd, base, err := r.parent(p)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := removeEntry(dfd, base); err != nil {
		return fmt.Errorf("symlink /%s: %w", rel(p), err)
	}
	if err := unix.Symlinkat(target, dfd, base); err != nil {
		return fmt.Errorf("symlink /%s: %w", rel(p), err)
	}
	return setAttrs(dfd, base, uid, gid, 0, mtime, true)
}

// fdPath names an open descriptor as a path (for reading /etc/passwd of
// the root).
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// link makes a hard link at newp to oldp, both in the root.
func (r *rootFS) link(oldp, newp string) error {
	ofd, err := r.open(oldp, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	dfd, base, err := r.parent(newp)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := removeEntry(dfd, base); err != nil {
		return err
	}
	// Through the descriptor's /proc path: linkat(AT_EMPTY_PATH) needs
	// CAP_DAC_READ_SEARCH, which a rootless build lacks.
	return unix.Linkat(unix.AT_FDCWD, fdPath(ofd), dfd, base, unix.AT_SYMLINK_FOLLOW)
}

// isSymlink reports whether p itself (not followed) is a symlink.
func (r *rootFS) isSymlink(p string) bool {
	dfd, base, err := r.parent(p)
	if err != nil {
		return false
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	return unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}
