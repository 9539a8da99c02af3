package unionfs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/copyup"
	"github.com/unionmount/unionmount/internal/rmtree"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

var tmpCounter atomic.Uint64

// tmpName is a unique name in the workdir for whiteout swaps and removals.
func tmpName() string {
	return "#unionmount-tmp-" + strconv.Itoa(unix.Getpid()) + "-" + strconv.FormatUint(tmpCounter.Add(1), 10)
}

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
	err = copyup.Entry(copyup.Source{DirFd: src.dir(), Name: name, Stat: st}, dst.fd, name, u.work, opts)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("copy up %q: %w", name, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		dirs = append([]layerDir{{layer: 0}}, dirs...)
	}
	var ust unix.Stat_t
	if serr := unix.Fstatat(dst.fd, name, &ust, unix.AT_SYMLINK_NOFOLLOW); serr == nil {
		if err != nil && (whiteout.IsCharWhiteout(&ust) || ust.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT) {
			// The name was removed (or replaced) while the copy ran:
			// what holds it now is not this node's copy.
			return fmt.Errorf("copy up %q: %w", name, unix.ENOENT)
		}
		n.upperIno.Store(ust.Ino)
	} else if err != nil {
		return fmt.Errorf("copy up %q: %w", name, serr)
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

// woKind is what the upper holds at a name a new entry is made over.
type woKind int

const (
	woNone woKind = iota
	woChar        // a char 0/0 whiteout at the name
	woAUFS        // a ".wh.NAME" beside it (the fallback format)
)

// prepareCreate readies the upper directory of n for a new entry name: it
// copies n up and finds a whiteout of that name (ovl_create_over_whiteout),
// which placeNew replaces. A whiteout tells the caller that a lower entry
// of that name is hidden, so a new directory must be opaque.
//
// The directory comes back held: release it with u.fds.release, also on
// error (nil is fine).
func (n *node) prepareCreate(name string) (d *fdEntry, wo woKind, err error) {
	if whiteout.Hidden(name) {
		// A ".wh." name would read back as a whiteout.
		return nil, woNone, unix.EPERM
	}
	if len(name) > 255 {
		return nil, woNone, unix.ENAMETOOLONG
	}
	d, err = n.upperDirOf()
	if err != nil {
		return nil, woNone, err
	}
	var st unix.Stat_t
	if unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		if !whiteout.IsCharWhiteout(&st) {
			return d, woNone, unix.EEXIST
		}
		return d, woChar, nil
	}
	if unix.Fstatat(d.fd, whiteout.Prefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return d, woAUFS, nil
	}
	return d, woNone, nil
}

// placeNew makes a new entry name in the upper directory dfd: make creates
// it, complete with owner and markers, at (atFd, atName). Over a char
// whiteout it is made in the workdir and swapped with the whiteout in one
// RENAME_EXCHANGE, as overlayfs does, so a crash shows the whiteout or the
// new entry and never the lower entry in between. Over a ".wh.NAME" it is
// made in place first (a real entry hides the marker beside it), and the
// marker is removed after.
func (u *unionFS) placeNew(dfd int, name string, wo woKind, make func(atFd int, atName string) error) error {
	switch wo {
	case woChar:
		return u.swapIn(dfd, name, make)
	case woAUFS:
		if err := make(dfd, name); err != nil {
			return err
		}
		return u.dropAUFSWhiteout(dfd, name)
	}
	return make(dfd, name)
}

// swapIn replaces the entry dfd/name in one RENAME_EXCHANGE with one that
// make builds, complete, at (u.work, a temp name), then removes what it
// replaced from the workdir (ovl_create_over_whiteout, ovl_clear_empty):
// a crash shows the old entry or the new one, never neither.
func (u *unionFS) swapIn(dfd int, name string, make func(atFd int, atName string) error) error {
	tmp := tmpName()
	err := make(u.work, tmp)
	if err == nil {
		err = unix.Renameat2(u.work, tmp, dfd, name, unix.RENAME_EXCHANGE)
	}
	// tmp is what was at name now, or the unused new entry.
	if rerr := rmtree.RemoveAt(u.work, tmp); rerr != nil && u.opts.Debug {
		u.log.Printf("remove %q from the workdir: %v", tmp, rerr)
	}
	return err
}

// dropAUFSWhiteout removes a ".wh.NAME" beside NAME in the upper directory
// dfd, if there is one.
func (u *unionFS) dropAUFSWhiteout(dfd int, name string) error {
	if err := unix.Unlinkat(dfd, whiteout.Prefix+name, 0); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
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
	d, wo, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, nil, 0, n.u.errno("create", name, err)
	}
	dfd := d.fd
	oflags := int(flags)&^(unix.O_APPEND|unix.O_NOCTTY|fuse.FMODE_EXEC) | unix.O_CREAT | unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd := -1
	err = n.u.placeNew(dfd, name, wo, func(at int, atName string) error {
		var err error
		if fd, err = unix.Openat(at, atName, oflags, mode&07777); err != nil {
			return err
		}
		return n.u.own(ctx, dfd, at, atName, unix.S_IFREG|mode)
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
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
	d, wo, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("mkdir", name, err)
	}
	dfd := d.fd
	err = n.u.placeNew(dfd, name, wo, func(at int, atName string) error {
		if err := unix.Mkdirat(at, atName, mode&07777); err != nil {
			return err
		}
		if wo != woNone {
			// rmdir then mkdir of a merged dir: the new one must not show
			// the old contents (ovl_create_over_whiteout sets opaque).
			if err := n.u.setOpaque(at, atName); err != nil {
				return err
			}
		}
		return n.u.own(ctx, dfd, at, atName, unix.S_IFDIR|mode)
	})
	if err != nil {
		return nil, n.u.errno("mkdir", name, err)
	}
	ch, err := n.newUpperEntry(ctx, dfd, name, out)
	if err != nil {
		return nil, n.u.errno("mkdir", name, err)
	}
	return ch, 0
}

func (u *unionFS) setOpaque(dfd int, name string) error {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return u.format.SetOpaque(fd)
}

var _ = (fs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&unix.S_IFMT == unix.S_IFCHR && dev == 0 {
		// A 0/0 device would read back as a whiteout (the kernel refuses too).
		return nil, syscall.EPERM
	}
	d, wo, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("mknod", name, err)
	}
	dfd := d.fd
	err = n.u.placeNew(dfd, name, wo, func(at int, atName string) error {
		if err := unix.Mknodat(at, atName, mode, int(dev)); err != nil {
			return err
		}
		return n.u.own(ctx, dfd, at, atName, mode)
	})
	if err != nil {
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
	d, wo, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("symlink", name, err)
	}
	dfd := d.fd
	err = n.u.placeNew(dfd, name, wo, func(at int, atName string) error {
		if err := unix.Symlinkat(target, at, atName); err != nil {
			return err
		}
		return n.u.own(ctx, dfd, at, atName, unix.S_IFLNK)
	})
	if err != nil {
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
	d, wo, err := n.prepareCreate(name)
	defer n.u.fds.release(d)
	if err != nil {
		return nil, n.u.errno("link", name, err)
	}
	dfd := d.fd
	err = n.u.placeNew(dfd, name, wo, func(at int, atName string) error {
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

// removeUpper takes name out of the upper directory dfd. With whiteout it
// leaves a whiteout in its place, atomically where the filesystem can
// (RENAME_WHITEOUT). Directories go through the workdir so their
// whiteouts are cleared before they disappear.
func (u *unionFS) removeUpper(dfd int, name string, isDir, wo bool) error {
	if !isDir && !wo {
		return unix.Unlinkat(dfd, name, 0)
	}
	tmp := tmpName()
	flags := uint(0)
	if wo {
		flags = unix.RENAME_WHITEOUT
	}
	err := unix.Renameat2(dfd, name, u.work, tmp, flags)
	if err != nil && wo && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) {
		if err = unix.Renameat2(dfd, name, u.work, tmp, 0); err == nil {
			err = u.format.MakeWhiteout(dfd, name)
		}
	}
	if err != nil {
		return err
	}
	return rmtree.RemoveAt(u.work, tmp)
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
	isDir := res.st.Mode&unix.S_IFMT == unix.S_IFDIR
	if dir && !isDir {
		return syscall.ENOTDIR
	}
	if !dir && isDir {
		return syscall.EISDIR
	}
	if isDir {
		cd, done := u.childAt(pd, name, &res)
		entries, err := u.merge(cd)
		done()
		if err != nil {
			return u.errno("rmdir", name, err)
		}
		if len(entries) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	// A lower top entry needs a whiteout; an upper one only when a lower
	// layer still shows the name below it.
	wo := !res.upper(u)
	if !wo {
		if wo, err = u.lowerHas(pd, name); err != nil {
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
	if victim != nil && isDir {
		victim.pinLocked(res.top)
	}
	if res.upper(u) {
		err = u.removeUpper(d.fd, name, isDir, wo)
	} else {
		err = u.format.MakeWhiteout(d.fd, name)
	}
	if err != nil {
		return u.errno("remove", name, err)
	}
	if victim != nil {
		victim.dropLinkLocked(n, name)
		if !res.upper(u) || res.st.Nlink <= 1 || isDir {
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
