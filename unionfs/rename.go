package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/unionmount/unionmount/unionfs/rules"
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
	if err := rules.CheckRenameArgs(flags, newName); err != nil {
		return u.errno("rename", newName, err)
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
	src := rules.Entry{Dir: sres.st.Mode&unix.S_IFMT == unix.S_IFDIR, Upper: sres.upper(u), Merged: len(sres.dirs) > 1}
	var dst *rules.Entry
	if dfound {
		dst = &rules.Entry{Dir: dres.st.Mode&unix.S_IFMT == unix.S_IFDIR, Upper: dres.upper(u), Merged: len(dres.dirs) > 1}
	}
	err = rules.CheckRename(src, dst, flags, func() (bool, error) {
		cd, done := u.childAt(dpd, newName, &dres)
		entries, err := u.merge(cd)
		done()
		return len(entries) == 0, err
	})
	if err != nil {
		return u.errno("rename", newName, err)
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

	if src.Lower, err = u.lowerHas(spd, name); err != nil {
		return u.errno("rename", name, err)
	}
	m := rules.Move{
		Exchange: exchange,
		Src:      src,
		// ovl_rename: a directory that only the upper has is marked
		// opaque when it moves into a merged directory, whether or not
		// a lower layer shows its new name, so it never merges with
		// what a lower may hold.
		SrcParentMerged: len(u.lowerDirs(spd.dirs)) > 0,
		DstParentMerged: len(u.lowerDirs(dpd.dirs)) > 0,
	}
	if dst != nil {
		m.Dst = *dst
	}

	// From here the upper changes: the names on disk and the nodes' links
	// change in one step for every open and lookup that goes by link.
	u.linkMu.Lock()
	defer u.linkMu.Unlock()
	u.linkGen.Add(1)
	if dn != nil && !exchange && m.Dst.Dir {
		dn.pinLocked(dres.top)
	}
	if err := u.upper.Rename(sfd, name, dfd, newName, m); err != nil {
		return u.errno("rename", name, err)
	}
	if exchange {
		sn.moveLinkLocked(n, name, np, newName)
		dn.moveLinkLocked(np, newName, n, name)
		return 0
	}
	u.movedLocked(sn, n, name, dn, np, newName, m.Dst.Dir, &dres)
	return 0
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
