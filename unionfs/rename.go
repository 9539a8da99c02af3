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

	spd := u.at(n)
	defer spd.done()
	dpd := u.at(np)
	defer dpd.done()
	sres, found, err := u.resolve(spd, name)
	if err != nil {
		return u.errno("rename", name, err)
	}
	if !found {
		return syscall.ENOENT
	}
	dres, dfound, err := u.resolve(dpd, newName)
	if err != nil {
		return u.errno("rename", newName, err)
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
			cd, done := u.childAt(dpd, newName, &dres)
			entries, err := u.merge(cd)
			done()
			if err != nil {
				return u.errno("rename", newName, err)
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
	sn := sch.Operations().(*node)
	if err := u.copyUp(sn, false); err != nil {
		return u.errno("copy up for rename", name, err)
	}
	var dn *node
	if exchange {
		dch := np.GetChild(newName)
		if dch == nil {
			return syscall.ENOENT
		}
		dn = dch.Operations().(*node)
		if err := u.copyUp(dn, false); err != nil {
			return u.errno("copy up for rename", newName, err)
		}
	} else if dfound {
		if dch := np.GetChild(newName); dch != nil && dch != sch {
			dn, _ = dch.Operations().(*node)
		}
	}
	sd, err := n.upperDirOf()
	if err != nil {
		return u.errno("rename", name, err)
	}
	defer u.fds.release(sd)
	dd := sd
	if np != n {
		if dd, err = np.upperDirOf(); err != nil {
			return u.errno("rename", newName, err)
		}
		defer u.fds.release(dd)
	}
	sfd, dfd := sd.fd, dd.fd

	srcLower, err := u.lowerHas(spd, name)
	if err != nil {
		return u.errno("rename", name, err)
	}
	// ovl_rename: a directory that only the upper has is marked opaque
	// when it moves into a merged directory, whether or not a lower layer
	// shows its new name, so it never merges with what a lower may hold.
	dstMerged := len(u.lowerDirs(dpd.dirs)) > 0
	srcMerged := len(u.lowerDirs(spd.dirs)) > 0

	// From here the upper changes: the names on disk and the nodes' links
	// change in one step for every open and lookup that goes by link.
	u.linkMu.Lock()
	defer u.linkMu.Unlock()
	u.linkGen.Add(1)
	if dn != nil && !exchange && dIsDir {
		dn.pinLocked(dres.top)
	}

	// Directories that need to be opaque at their new place are marked
	// before they move, so a crash never shows one merging with a lower
	// directory of its new name. They are upper-only (anything else is
	// EXDEV above), so the marker changes nothing where they are now.
	if sIsDir && dstMerged {
		if err := u.setOpaque(sfd, name); err != nil {
			return u.errno("rename", name, err)
		}
	}
	if exchange {
		if dIsDir && srcMerged {
			if err := u.setOpaque(dfd, newName); err != nil {
				return u.errno("rename", newName, err)
			}
		}
		if err := unix.Renameat2(sfd, name, dfd, newName, unix.RENAME_EXCHANGE); err != nil {
			return u.errno("rename", name, err)
		}
		sn.moveLinkLocked(n, name, np, newName)
		dn.moveLinkLocked(np, newName, n, name)
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
				return u.errno("rename", name, err)
			}
			if !srcLower {
				if err := unix.Unlinkat(sfd, name, 0); err != nil && u.opts.Debug {
					u.log.Printf("rename: remove the whiteout left at %q: %v", name, err)
				}
			}
			u.dropAUFSWhiteout(dfd, newName) // done: the rename stands either way
			u.movedLocked(sn, n, name, dn, np, newName, dIsDir, &dres)
			return 0
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			// An upper directory that is empty in the merged view may
			// still hold whiteouts: swap in an empty opaque one first
			// (ovl_clear_empty), then rename over that.
			if err := u.clearUpperDir(dfd, newName, &st); err != nil {
				return u.errno("rename", newName, err)
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
		return u.errno("rename", name, err)
	}
	// A ".wh.NAME" marker beside the new entry is hidden by it; remove it
	// only now, so it never uncovers the lower entry.
	u.dropAUFSWhiteout(dfd, newName) // done: the rename stands either way
	u.movedLocked(sn, n, name, dn, np, newName, dIsDir, &dres)
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

// movedLocked moves sn's link from (from, name) to (to, newName) and
// records that dn, the node that was at the new name (nil if none), has
// lost that name.
//
// Preconditions: u.linkMu held for writing.
func (u *unionFS) movedLocked(sn, from *node, name string, dn, to *node, newName string, dIsDir bool, dres *resolution) {
	sn.moveLinkLocked(from, name, to, newName)
	if dn == nil {
		return
	}
	dn.dropLinkLocked(to, newName)
	if dIsDir || !dres.upper(u) || dres.st.Nlink <= 1 {
		dn.unlinked.Store(true)
	}
}
