package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var _ = (fs.NodeSetattrer)((*node)(nil))

// Setattr copies up, then changes owner, mode, size and times in that
// order: chown clears setuid, so an explicit mode must come after it, and
// truncation must come before explicit times.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	u := n.u
	size, hasSize := in.GetSize()
	if err := u.copyUp(n, hasSize && size == 0); err != nil {
		return u.errno("copy up for setattr", "", err)
	}
	// dfd and name address the file for the *at calls; nofollow is their
	// AT_SYMLINK_NOFOLLOW. A file without a name (unlinked while open, an
	// O_TMPFILE) is reached through an open descriptor instead. The link
	// stays held, so no rename moves the name meanwhile.
	// A writable handle truncates through its own descriptor, taken
	// before the link is held (getFd may take it itself).
	hfd := -1
	if h := asFileHandle(f); h != nil && hasSize && h.flags&unix.O_ACCMODE != unix.O_RDONLY {
		var err error
		if hfd, err = h.getFd(); err != nil {
			return u.errno("truncate", "", err)
		}
	}
	if fd, detached := n.detachedFd(); detached {
		errno := n.setattrAt(hfd, in, unix.AT_FDCWD, fdPath(fd), 0, true)
		unix.Close(fd)
		if errno != 0 {
			return errno
		}
	} else {
		l, _, err := n.lockTop()
		var errno syscall.Errno
		if err != nil {
			errno = u.errno("setattr", "", err)
		} else {
			errno = n.setattrAt(hfd, in, l.dir(), l.name, unix.AT_SYMLINK_NOFOLLOW, false)
		}
		n.unlockTop(l)
		if errno != 0 {
			return errno
		}
	}
	return n.Getattr(ctx, f, out)
}

// setattrAt does Setattr's changes on the entry (dfd, name); detached:
// name is a descriptor's /proc path, to follow. hfd, when not -1, is a
// writable handle's descriptor for the truncation.
func (n *node) setattrAt(hfd int, in *fuse.SetAttrIn, dfd int, name string, nofollow int, detached bool) syscall.Errno {
	u := n.u
	rel := name
	size, hasSize := in.GetSize()
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		huid, hgid := u.ids.toHost(uid, gid)
		if !uok {
			huid = -1
		}
		if !gok {
			hgid = -1
		}
		if err := unix.Fchownat(dfd, name, huid, hgid, nofollow); err != nil {
			return u.errno("chown", rel, err)
		}
	}
	if mode, ok := in.GetMode(); ok {
		if err := unix.Fchmodat(dfd, name, mode&07777, 0); err != nil {
			return u.errno("chmod", rel, err)
		}
	}
	if hasSize {
		var err error
		if hfd >= 0 {
			err = unix.Ftruncate(hfd, int64(size))
		} else {
			var fd int
			if detached {
				fd, err = unix.Open(name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
			} else {
				fd, err = unix.Openat(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
			if err == nil {
				err = unix.Ftruncate(fd, int64(size))
				unix.Close(fd)
			}
		}
		if err != nil {
			return u.errno("truncate", rel, err)
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME != 0 {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
			if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
				ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if in.Valid&fuse.FATTR_MTIME != 0 {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
			if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
				ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if err := unix.UtimesNanoAt(dfd, name, ts, nofollow); err != nil {
			return u.errno("utimens", rel, err)
		}
	}
	if uok || gok {
		n.caps.Store(0) // chown drops security.capability
	}
	return 0
}
