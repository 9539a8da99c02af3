package unionfs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/copyup"
	"github.com/unionmount/unionmount/unionfs/rules"
	"golang.org/x/sys/unix"
)

// copyUp makes sure the node has an entry in the upper, copying its
// parents first and then the node itself (ovl_copy_up). trunc skips the
// data copy (O_TRUNC, truncate to 0).
//
// A node with a lower entry does not move while it is copied up: a
// rename copies it up first (and waits on copyMu), and its parent, a
// merged directory, cannot be renamed. So the descriptors and the name
// taken at the start stay right to the end.
func (u *unionFS) copyUp(n *node, trunc bool) error {
	if !u.hasUpper {
		return unix.EROFS
	}
	if n.isUpper() {
		return nil
	}
	n.copyMu.Lock()
	defer n.copyMu.Unlock()
	if n.isUpper() {
		return nil
	}
	u.linkMu.RLock()
	parent, name := n.parent, n.name
	u.linkMu.RUnlock()
	if parent == nil {
		return unix.ENOENT
	}
	if err := u.copyUp(parent, false); err != nil {
		return err
	}
	top, dirs := n.state()
	u.linkMu.RLock()
	src, err := u.locLocked(n, top)
	var dst *fdEntry
	if err == nil {
		dst, err = u.dirFdLocked(parent, 0)
	}
	u.linkMu.RUnlock()
	defer u.fds.release(src.e)
	defer u.fds.release(dst)
	if err != nil {
		return fmt.Errorf("copy up %q: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(src.dir(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy up %q: %w", name, err)
	}
	opts := copyup.Options{
		NoFsync:  u.opts.NoFsync,
		SkipData: trunc,
		UID:      -1,
		GID:      -1,
	}
	alias := isLowerHardlink(&st)
	if !alias {
		// Keep the inode number across copy-up and remount. An alias of a
		// lower hard link gets the copy's own number instead, as the
		// kernel does with index=off: the other names keep the old one.
		opts.Xattrs = map[string][]byte{u.originXattr: originValue(n.StableAttr().Ino)}
	}
	if err := u.upper.CopyUp(copyup.Source{DirFd: src.dir(), Name: name, Stat: st}, dst.fd, opts); err != nil {
		return fmt.Errorf("copy up %q: %w", name, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		dirs = append([]layerDir{{layer: 0}}, dirs...)
	}
	var ust unix.Stat_t
	if unix.Fstatat(dst.fd, name, &ust, unix.AT_SYMLINK_NOFOLLOW) == nil {
		n.upperIno.Store(ust.Ino)
	}
	n.setState(0, dirs)
	if alias {
		// Let the kernel look the name up again to learn the new number.
		go parent.NotifyEntry(name)
	}
	return nil
}

// upperDirOf copies n up and returns its upper directory, held: release
// it with u.fds.release.
func (n *node) upperDirOf() (*fdEntry, error) {
	if err := n.u.copyUp(n, false); err != nil {
		return nil, err
	}
	return n.u.dirFd(n, 0)
}

// prepareCreate readies the upper directory of n for a new entry name: it
// copies n up and finds what the upper holds at the name (rules.SlotOf):
// a whiteout there tells that a lower entry of that name is hidden, which
// the new entry replaces (rules.Upper.Place).
//
// The directory comes back held: release it with u.fds.release, also on
// error (nil is fine).
func (n *node) prepareCreate(name string) (d *fdEntry, s rules.Slot, err error) {
	if err := rules.CheckName(name); err != nil {
		return nil, rules.Free, err
	}
	d, err = n.upperDirOf()
	if err != nil {
		return nil, rules.Free, err
	}
	s, err = rules.SlotOf(d.fd, name)
	return d, s, err
}

// own gives a new upper entry at (atFd, name) to the calling user (the
// daemon creates as root). In a setgid parent (pfd) the entry takes the
// parent's group, and a new directory the setgid bit, as the kernel gives
// an entry made there; an entry made in the workdir must be told. chown
// clears the setuid and setgid bits of a non-directory, so a mode that
// has them is set again after it.
func (u *unionFS) own(ctx context.Context, pfd, atFd int, name string, mode uint32) error {
	var pst unix.Stat_t
	setgidParent := unix.Fstat(pfd, &pst) == nil && pst.Mode&unix.S_ISGID != 0
	uid, gid := -1, -1
	if caller, ok := fuse.FromContext(ctx); ok {
		uid, gid = u.ids.toHost(caller.Uid, caller.Gid)
	}
	if setgidParent {
		gid = int(pst.Gid)
	}
	if uid == 0 && gid == 0 && unix.Geteuid() == 0 && atFd == pfd {
		// As created. (An entry made in the workdir has the workdir's
		// group when that is setgid: chown it all the same.)
	} else if uid != -1 || gid != -1 {
		if err := unix.Fchownat(atFd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	t := mode & unix.S_IFMT
	if t == unix.S_IFDIR && setgidParent && atFd != pfd {
		mode |= unix.S_ISGID
	}
	if mode&(unix.S_ISUID|unix.S_ISGID) != 0 && t != unix.S_IFLNK && (t != unix.S_IFDIR || atFd != pfd) {
		return unix.Fchmodat(atFd, name, mode&07777, 0)
	}
	return nil
}

// owner is own for a new entry of the upper directory pfd, as the rules
// take it.
func (u *unionFS) owner(ctx context.Context, pfd int, mode uint32) rules.Maker {
	return func(at int, name string) error { return u.own(ctx, pfd, at, name, mode) }
}

// newUpperEntry registers an entry just made in the upper directory dfd.
func (n *node) newUpperEntry(ctx context.Context, dfd int, name string, out *fuse.EntryOut) (*fs.Inode, error) {
	res := resolution{top: 0}
	if err := unix.Fstatat(dfd, name, &res.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if res.st.Mode&unix.S_IFMT == unix.S_IFDIR {
		res.dirs = []layerDir{{layer: 0}}
	}
	pd := n.u.at(n)
	defer pd.done()
	return n.u.childInode(ctx, pd, name, &res, out), nil
}

var _ = (fs.NodeCreater)((*node)(nil))

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	d, slot, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, nil, 0, n.u.errno("create", name, err)
	}
	dfd := d.fd
	oflags := int(flags)&^(unix.O_APPEND|unix.O_NOCTTY|fuse.FMODE_EXEC) | unix.O_CREAT | unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd, err := n.u.upper.Create(dfd, name, oflags, mode, slot, n.u.owner(ctx, dfd, unix.S_IFREG|mode))
	if err != nil {
		return nil, nil, 0, n.u.errno("create", name, err)
	}
	ch, err := n.newUpperEntry(ctx, dfd, name, out)
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, n.u.errno("create", name, err)
	}
	cn := ch.Operations().(*node)
	// The kernel asks for security.capability after a create (and before
	// each cached write): answer it from here, one syscall instead of a
	// round trip.
	if _, err := unix.Fgetxattr(fd, capXattr, nil); err == unix.ENODATA {
		cn.caps.Store(1)
	}
	fh, fuseFlags, ok := cn.handle(fd, oflags, true, mode)
	if !ok {
		// A node that has lower passthrough handles: not a new file's.
		unix.Close(fd)
		return nil, nil, 0, syscall.ESTALE
	}
	return ch, fh, fuseFlags, 0
}

var _ = (fs.NodeMkdirer)((*node)(nil))

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d, slot, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("mkdir", name, err)
	}
	dfd := d.fd
	if err := n.u.upper.Mkdir(dfd, name, mode, slot, n.u.owner(ctx, dfd, unix.S_IFDIR|mode)); err != nil {
		return nil, n.u.errno("mkdir", name, err)
	}
	ch, err := n.newUpperEntry(ctx, dfd, name, out)
	if err != nil {
		return nil, n.u.errno("mkdir", name, err)
	}
	return ch, 0
}

var _ = (fs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if err := rules.CheckNode(mode, int(dev)); err != nil {
		return nil, n.u.errno("mknod", name, err)
	}
	d, slot, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("mknod", name, err)
	}
	dfd := d.fd
	if err := n.u.upper.Mknod(dfd, name, mode, int(dev), slot, n.u.owner(ctx, dfd, mode)); err != nil {
		return nil, n.u.errno("mknod", name, err)
	}
	ch, err := n.newUpperEntry(ctx, dfd, name, out)
	if err != nil {
		return nil, n.u.errno("mknod", name, err)
	}
	return ch, 0
}

var _ = (fs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d, slot, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("symlink", name, err)
	}
	dfd := d.fd
	if err := n.u.upper.Symlink(dfd, target, name, slot, n.u.owner(ctx, dfd, unix.S_IFLNK)); err != nil {
		return nil, n.u.errno("symlink", name, err)
	}
	ch, err := n.newUpperEntry(ctx, dfd, name, out)
	if err != nil {
		return nil, n.u.errno("symlink", name, err)
	}
	return ch, 0
}

var _ = (fs.NodeLinker)((*node)(nil))

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if err := n.u.copyUp(tn, false); err != nil {
		return nil, n.u.errno("copy up for link", name, err)
	}
	d, slot, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("link", name, err)
	}
	dfd := d.fd
	err = n.u.upper.Place(dfd, name, slot, func(at int, atName string) error {
		if tmp, err := tn.linkTmpfile(at, atName); tmp {
			return err
		}
		// The kernel holds the target's inode lock: no rename moves it.
		l, _, err := tn.lockTop()
		if err == nil {
			err = unix.Linkat(l.dir(), l.name, at, atName, 0)
		}
		tn.unlockTop(l)
		return err
	})
	if err != nil {
		return nil, n.u.errno("link", name, err)
	}
	ch, err := n.newUpperEntry(ctx, dfd, name, out)
	if err != nil {
		return nil, n.u.errno("link", name, err)
	}
	return ch, 0
}

// lowerHas reports whether a lower layer of the merged directory pd
// still shows name, so removing it from the upper needs a whiteout.
func (u *unionFS) lowerHas(pd *dirAt, name string) (bool, error) {
	lower := u.lowerDirs(pd.dirs)
	if len(lower) == 0 {
		return false, nil
	}
	lpd := u.atDirs(pd.n, lower)
	defer lpd.done()
	_, found, err := u.resolve(lpd, name)
	return found, err
}

var _ = (fs.NodeUnlinker)((*node)(nil))

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, false)
}

var _ = (fs.NodeRmdirer)((*node)(nil))

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, true)
}

// remove is unlink and rmdir (ovl_do_remove).
func (n *node) remove(name string, dir bool) syscall.Errno {
	u := n.u
	if !u.hasUpper {
		return syscall.EROFS
	}
	pd := u.at(n)
	defer pd.done()
	res, found, err := u.resolve(pd, name)
	if err != nil {
		return u.errno("remove", name, err)
	}
	if !found {
		return syscall.ENOENT
	}
	e := rules.Entry{Dir: res.st.Mode&unix.S_IFMT == unix.S_IFDIR, Upper: res.upper(u), Merged: len(res.dirs) > 1}
	err = rules.CheckRemove(e, dir, func() (bool, error) {
		cd, done := u.childAt(pd, name, &res)
		entries, err := u.merge(cd)
		done()
		return len(entries) == 0, err
	})
	if err != nil {
		return u.errno("remove", name, err)
	}
	if e.Upper {
		// A lower top entry needs a whiteout anyway; an upper one only
		// when a lower layer still shows the name below it.
		if e.Lower, err = u.lowerHas(pd, name); err != nil {
			return u.errno("remove", name, err)
		}
	}
	d, err := n.upperDirOf()
	if err != nil {
		return u.errno("remove", name, err)
	}
	defer u.fds.release(d)
	var victim *node
	if ch := n.GetChild(name); ch != nil {
		victim, _ = ch.Operations().(*node)
	}
	// The name and the links change in one step for every open and
	// lookup that goes by link.
	u.linkMu.Lock()
	defer u.linkMu.Unlock()
	u.linkGen.Add(1)
	if victim != nil && e.Dir {
		victim.pinLocked(res.top)
	}
	if err := u.upper.Remove(d.fd, name, e); err != nil {
		return u.errno("remove", name, err)
	}
	if victim != nil {
		victim.dropLinkLocked(n, name)
		if !e.Upper || res.st.Nlink <= 1 || e.Dir {
			victim.unlinked.Store(true)
		}
	}
	return 0
}

// pinLocked keeps the node's directory descriptor in layer for as long as
// the node lives: once its name is gone it cannot be reopened, and the
// kernel still asks about it through open descriptors (fstat, fchmod).
//
// Preconditions: u.linkMu held for writing.
func (n *node) pinLocked(layer int) {
	e, err := n.u.dirFdLocked(n, layer)
	if err != nil {
		return
	}
	n.u.fds.pin(e)
	n.u.fds.release(e)
}
