package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

var _ = (fs.NodeRenamer)((*node)(nil))

// Rename follows ovl_rename with redirect_dir=off: a directory that has a
// lower part cannot move (EXDEV, so mv falls back to copy+delete); other
// entries are copied up and renamed in the upper, leaving a whiteout where
// a lower entry of the old name would show again; a directory moved over a
// name that a lower layer holds becomes opaque.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	u := n.u
	if !u.hasUpper {
		return syscall.EROFS
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^uint32(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	if whiteout.Hidden(newName) {
		return syscall.EPERM
	}
	if len(newName) > 255 {
		return syscall.ENAMETOOLONG
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0

	_, sdirs, srel := n.state()
	_, ddirs, drel := np.state()
	sres, found, err := u.resolve(sdirs, srel, name)
	if err != nil {
		return u.errno("rename", join(srel, name), err)
	}
	if !found {
		return syscall.ENOENT
	}
	dres, dfound, err := u.resolve(ddirs, drel, newName)
	if err != nil {
		return u.errno("rename", join(drel, newName), err)
	}
	if exchange && !dfound {
		return syscall.ENOENT
	}
	if flags&unix.RENAME_NOREPLACE != 0 && dfound {
		return syscall.EEXIST
	}
	sIsDir := sres.st.Mode&unix.S_IFMT == unix.S_IFDIR
	dIsDir := dfound && dres.st.Mode&unix.S_IFMT == unix.S_IFDIR
	if sIsDir && !(sres.upper(u) && len(sres.dirs) == 1) {
		return syscall.EXDEV
	}
	if exchange && dIsDir && !(dres.upper(u) && len(dres.dirs) == 1) {
		return syscall.EXDEV
	}
	if dfound && !exchange {
		if sIsDir && !dIsDir {
			return syscall.ENOTDIR
		}
		if !sIsDir && dIsDir {
			return syscall.EISDIR
		}
		if dIsDir {
			entries, err := u.merge(dres.dirs, join(drel, newName))
			if err != nil {
				return u.errno("rename", join(drel, newName), err)
			}
			if len(entries) > 0 {
				return syscall.ENOTEMPTY
			}
		}
	}
	if sres.upper(u) && dfound && dres.upper(u) && sres.st.Ino == dres.st.Ino && sres.st.Dev == dres.st.Dev {
		return 0 // same file: rename(2) does nothing
	}

	// Copy up what moves.
	sch := n.GetChild(name)
	if sch == nil {
		return syscall.ENOENT
	}
	if err := u.copyUp(sch.Operations().(*node), false); err != nil {
		return u.errno("copy up for rename", join(srel, name), err)
	}
	var dch *fs.Inode
	if exchange {
		if dch = np.GetChild(newName); dch == nil {
			return syscall.ENOENT
		}
		if err := u.copyUp(dch.Operations().(*node), false); err != nil {
			return u.errno("copy up for rename", join(drel, newName), err)
		}
	}
	sfd, _, err := n.upperDirOf()
	if err != nil {
		return u.errno("rename", srel, err)
	}
	defer unix.Close(sfd)
	dfd := sfd // most renames stay in their directory: one open
	if np != n {
		if dfd, _, err = np.upperDirOf(); err != nil {
			return u.errno("rename", drel, err)
		}
		defer unix.Close(dfd)
	}

	srcLower, err := u.lowerHas(sdirs, srel, name)
	if err != nil {
		return u.errno("rename", join(srel, name), err)
	}
	// ovl_rename: a directory that only the upper has is marked opaque
	// when it moves into a merged directory, whether or not a lower layer
	// shows its new name, so it never merges with what a lower may hold.
	dstMerged := len(u.lowerDirs(ddirs)) > 0
	srcMerged := len(u.lowerDirs(sdirs)) > 0

	// Directories that need to be opaque at their new place are marked
	// before they move, so a crash never shows one merging with a lower
	// directory of its new name. They are upper-only (anything else is
	// EXDEV above), so the marker changes nothing where they are now.
	if sIsDir && dstMerged {
		if err := u.setOpaque(sfd, name); err != nil {
			return u.errno("rename", join(srel, name), err)
		}
	}
	if exchange {
		if dIsDir && srcMerged {
			if err := u.setOpaque(dfd, newName); err != nil {
				return u.errno("rename", join(drel, newName), err)
			}
		}
		if err := unix.Renameat2(sfd, name, dfd, newName, unix.RENAME_EXCHANGE); err != nil {
			return u.errno("rename", join(srel, name), err)
		}
		return 0
	}

	// What the upper holds at the target, replaced in one step each time,
	// so that a crash shows the state before or after (ovl_rename):
	var st unix.Stat_t
	if unix.Fstatat(dfd, newName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		switch {
		case whiteout.IsCharWhiteout(&st) && sIsDir:
			// rename(2) will not put a directory over a device:
			// exchange them, then the whiteout sits at the old name,
			// where it stays if a lower entry must stay hidden.
			if err := unix.Renameat2(sfd, name, dfd, newName, unix.RENAME_EXCHANGE); err != nil {
				return u.errno("rename", join(srel, name), err)
			}
			if !srcLower {
				if err := unix.Unlinkat(sfd, name, 0); err != nil && u.opts.Debug {
					u.log.Printf("rename: remove the whiteout left at %q: %v", join(srel, name), err)
				}
			}
			u.dropAUFSWhiteout(dfd, newName) // done: the rename stands either way
			np.markReplaced(newName, sch, dfound, dIsDir, &dres)
			return 0
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			// An upper directory that is empty in the merged view may
			// still hold whiteouts: swap in an empty opaque one first
			// (ovl_clear_empty), then rename over that.
			if err := u.clearUpperDir(dfd, newName, &st); err != nil {
				return u.errno("rename", join(drel, newName), err)
			}
		}
	}

	rflags := uint(0)
	if srcLower {
		rflags = unix.RENAME_WHITEOUT
	}
	err = unix.Renameat2(sfd, name, dfd, newName, rflags)
	if err != nil && srcLower && (err == unix.EINVAL || err == unix.EPERM) {
		if err = unix.Renameat2(sfd, name, dfd, newName, 0); err == nil {
			err = u.format.MakeWhiteout(sfd, name)
		}
	}
	if err != nil {
		return u.errno("rename", join(srel, name), err)
	}
	// A ".wh.NAME" marker beside the new entry is hidden by it; remove it
	// only now, so it never uncovers the lower entry.
	u.dropAUFSWhiteout(dfd, newName) // done: the rename stands either way
	np.markReplaced(newName, sch, dfound, dIsDir, &dres)
	return 0
}

// clearUpperDir replaces the upper directory dfd/name, empty in the merged
// view but maybe holding whiteouts, by an empty opaque directory with its
// mode and owner (swapIn). A directory already empty on disk is left as
// it is.
func (u *unionFS) clearUpperDir(dfd int, name string, st *unix.Stat_t) error {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	entries, err := readLayerDir(&layer{fd: fd}, "")
	unix.Close(fd)
	if err != nil || len(entries) == 0 {
		return err
	}
	return u.swapIn(dfd, name, func(at int, atName string) error {
		if err := unix.Mkdirat(at, atName, st.Mode&07777); err != nil {
			return err
		}
		if err := unix.Fchownat(at, atName, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if err := unix.Fchmodat(at, atName, st.Mode&07777, 0); err != nil {
			return err
		}
		return u.setOpaque(at, atName)
	})
}

// markReplaced records that the rename put another entry over newName:
// the node that was there has lost that name.
func (np *node) markReplaced(newName string, sch *fs.Inode, dfound, dIsDir bool, dres *resolution) {
	if !dfound {
		return
	}
	if ch := np.GetChild(newName); ch != nil && ch != sch {
		if cn, ok := ch.Operations().(*node); ok && (dIsDir || !dres.upper(np.u) || dres.st.Nlink <= 1) {
			cn.unlinked.Store(true)
		}
	}
}
