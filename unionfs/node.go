package unionfs

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/internal/lockrank"
	"golang.org/x/sys/unix"
)

// node is one entry of the merged tree. Its link (parent, name) says
// where it stands; its entry in each layer is that name in the parent's
// directory of the layer, reached by descriptor (link.go, ref.go). mu
// guards what the layers hold there.
//
// Lock order: see doc.go.
type node struct {
	fs.Inode
	u *unionFS

	// parent and name are the node's link: its entry is name in parent's
	// directories. parent is nil for the root and once the node has no
	// name left. more holds further names of an upper hard link that
	// lookups reached (rare; nil otherwise). Guarded by u.linkMu.
	parent *node
	name   string
	more   []link

	// copyMu serialises copy-up of this node; concurrent openers wait.
	copyMu lockrank.Mutex[rankCopy]

	mu lockrank.Mutex[rankNode]
	// top is the layer of the topmost entry (0 = upper when the mount has
	// one). Guarded by mu.
	top int
	// dirs are the layers merged for a directory, top first. Guarded by mu.
	dirs []layerDir
	// last is the latest stat of a directory, FIFO or socket, for fstat
	// after its name is gone (they have no handle); nil for other files,
	// so that a regular file's node does not carry 144 bytes it never
	// uses. Guarded by mu.
	last *unix.Stat_t

	// copiedUp becomes true when the node moves to the upper, so handles
	// opened on a lower file switch to the copy.
	copiedUp atomic.Bool
	// upperIno is st_ino of the node's upper file, once it has one (0:
	// not known). Open checks that the file it reached is this one.
	upperIno atomic.Uint64
	// unlinked: the last name is gone; fstat reports nlink 0.
	unlinked atomic.Bool
	// tmpFd is fd+1 of an O_TMPFILE file not yet linked (0: none).
	tmpFd atomic.Int64

	// ioMu guards open, the node's open file handles.
	ioMu lockrank.Mutex[rankIO]
	open map[*fileHandle]struct{}

	// caps caches whether the file has security.capability (the kernel asks
	// before every write): 0 unknown, 1 absent, 2 present.
	caps atomic.Int32

	// baseGen is the generation the node's identity had before any
	// re-keying (lowerpt.go): the key of u.regen.
	baseGen uint64
}

func (u *unionFS) newNode(top int, dirs []layerDir) *node {
	n := &node{u: u, top: top, dirs: dirs}
	if u.hasUpper && top == 0 {
		n.copiedUp.Store(true)
	}
	return n
}

// state returns a consistent snapshot of the node's layers.
func (n *node) state() (top int, dirs []layerDir) {
	n.mu.Lock()
	top, dirs = n.top, n.dirs
	n.mu.Unlock()
	return
}

func (n *node) isUpper() bool { return n.copiedUp.Load() }

// setState records a new resolution (after lookup, copy-up or a change)
// and reports whether it took it. A node never goes back to a lower layer
// once copied up: a lookup that probed the layers while a copy-up finished
// saw the lower entry, already stale, and taking it would send writes and
// xattr changes to the lower layer.
//
// The check and the change are one step under mu: checked outside it, a
// copy-up finishing in between was undone (EBADF on the next write, an
// xattr set on the lower file).
func (n *node) setState(top int, dirs []layerDir) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.u.hasUpper && top != 0 && n.copiedUp.Load() {
		return false
	}
	n.top, n.dirs = top, dirs
	if n.u.hasUpper && top == 0 {
		n.copiedUp.Store(true)
	}
	return true
}

// lowerDirs returns the lower layers of a merged directory (without the upper).
func (u *unionFS) lowerDirs(dirs []layerDir) []layerDir {
	if u.hasUpper && len(dirs) > 0 && dirs[0].layer == 0 {
		return dirs[1:]
	}
	return dirs
}

// inoOf is the inode number of the entry name of pd: the origin's number
// for an upper entry that was copied up (persisted in an xattr), else the
// number of the topmost entry.
func (u *unionFS) inoOf(res *resolution, pd *dirAt, name string) uint64 {
	if res.upper(u) && (res.st.Mode&unix.S_IFMT != unix.S_IFDIR || len(res.dirs) > 1) {
		if fd, err := pd.fd(0); err == nil {
			if ino, ok := u.readOrigin(procAt(fd, name)); ok {
				return ino
			}
		}
	}
	return u.inos.ino(res.st.Dev, res.st.Ino)
}

// readOrigin reads the origin xattr of the upper entry at path (a /proc
// path through a descriptor), without following a final symlink.
func (u *unionFS) readOrigin(path string) (uint64, bool) {
	return originFrom(func(b []byte) (int, error) { return unix.Lgetxattr(path, u.originXattr, b) })
}

func originFrom(get func([]byte) (int, error)) (uint64, bool) {
	var buf [8]byte
	if n, err := get(buf[:]); err != nil || n != 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(buf[:]), true
}

func originValue(ino uint64) []byte {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], ino)
	return buf[:]
}

// fillAttr converts a layer's stat into what the mount reports.
func (u *unionFS) fillAttr(st *unix.Stat_t, ino uint64, merged bool, out *fuse.Attr) {
	out.FromStat((*syscall.Stat_t)(unsafe.Pointer(st)))
	out.Ino = ino
	if merged && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		// ovl_getattr: counting subdirectories of a merged dir is not
		// worth it; nlink 1 pacifies find.
		out.Nlink = 1
	}
	u.ids.toMount(out)
}

func (n *node) merged() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.dirs) > 1
}

var _ = (fs.NodeLookuper)((*node)(nil))

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > 255 {
		return nil, syscall.ENAMETOOLONG
	}
	pd := n.u.at(n)
	defer pd.done()
	res, found, err := n.u.resolve(pd, name)
	if err != nil {
		return nil, n.u.errno("lookup", name, err)
	}
	if !found {
		return nil, syscall.ENOENT
	}
	return n.u.childInode(ctx, pd, name, &res, out), 0
}

// childInode returns the Inode for the entry name of pd, reusing the
// existing one when go-fuse already knows the (mode, ino) pair and
// refreshing its layer state.
func (u *unionFS) childInode(ctx context.Context, pd *dirAt, name string, res *resolution, out *fuse.EntryOut) *fs.Inode {
	parent := pd.n
	ino := u.inoOf(res, pd, name)
	child := u.newNode(res.top, res.dirs)
	child.parent, child.name = parent, name
	if res.upper(u) {
		child.upperIno.Store(res.st.Ino)
	}
	if u.linkGen.Load() != pd.gen {
		// A rename or remove ran since the lookup resolved the name (see
		// relink): a new node gets the name only if it still stands.
		u.linkMu.RLock()
		ok := u.stillNamesLocked(child, parent, name, res)
		u.linkMu.RUnlock()
		if !ok {
			child.parent, child.name = nil, ""
			child.unlinked.Store(true)
		}
	}
	sa := fs.StableAttr{Mode: res.st.Mode & unix.S_IFMT, Ino: ino}
	if !res.upper(u) && isLowerHardlink(&res.st) {
		// Each name of a lower hard link is its own node with the same
		// st_ino: copying one alias up breaks the link (index=off), so
		// their state must not be shared.
		sa.Gen = aliasGen(join(pd.path(), name))
	}
	child.baseGen = sa.Gen
	sa.Gen = u.currentGen(sa)
	u.fillAttr(&res.st, ino, len(res.dirs) > 1, &out.Attr)
	out.SetEntryTimeout(u.opts.EntryTimeout)
	out.SetAttrTimeout(u.opts.AttrTimeout)
	if ex := parent.GetChild(name); ex != nil && ex.StableAttr() == sa {
		// The kernel still holds this node: refresh what the layers say.
		if en, ok := ex.Operations().(*node); ok {
			var st unix.Stat_t
			if !en.setState(res.top, res.dirs) {
				// Stale: answer with the upper copy's attributes.
				if fd, err := pd.fd(0); err == nil && unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
					u.fillAttr(&st, ino, len(res.dirs) > 1, &out.Attr)
				}
			}
			if res.upper(u) {
				en.upperIno.Store(res.st.Ino)
			}
			if en.relink(pd, name, res) {
				en.unlinked.Store(false)
			}
			return ex
		}
	}
	ch := parent.NewInode(ctx, child, sa)
	if cn, ok := ch.Operations().(*node); ok && cn != child {
		// Another name of an upper hard link the kernel holds.
		if cn.relink(pd, name, res) {
			cn.unlinked.Store(false)
		}
	}
	return ch
}

// relink makes (pd.n, name) one of n's names, as the lookup through pd
// resolved it (res), and reports whether it is one now.
//
// The lookup resolved the name without u.linkMu: a rename or remove may
// have taken the name from n since (the kernel revalidates a cached name
// with a LOOKUP it sends without the directory's lock). Putting the name
// back then would send n's next open to whatever holds the name now: the
// whiteout an unlink left (ENXIO), or another file. So the name is added
// as found only when no rename or remove ran since pd was taken, and
// otherwise only after checking, under the lock, that the upper layer still
// shows the entry the lookup found.
func (n *node) relink(pd *dirAt, name string, res *resolution) bool {
	u, parent := n.u, pd.n
	u.linkMu.RLock()
	ok := n.hasLinkLocked(parent, name)
	u.linkMu.RUnlock()
	if ok {
		return true
	}
	u.linkMu.Lock()
	defer u.linkMu.Unlock()
	if n.hasLinkLocked(parent, name) {
		return true
	}
	if u.linkGen.Load() != pd.gen && !u.stillNamesLocked(n, parent, name, res) {
		return false
	}
	n.addLinkLocked(parent, name)
	return true
}

// stillNamesLocked reports whether name in parent still stands for the
// entry a lookup resolved as res for n: the same upper inode, or, for a
// lower entry, nothing in the upper above it but n's own copy. (Lower
// layers do not change under the mount.)
//
// Preconditions: u.linkMu held (for reading at least).
func (u *unionFS) stillNamesLocked(n, parent *node, name string, res *resolution) bool {
	if !u.hasUpper {
		return true
	}
	var st unix.Stat_t
	var err error = unix.ENOENT
	if e, derr := u.dirFdLocked(parent, 0); derr == nil {
		err = unix.Fstatat(e.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		u.fds.release(e)
	}
	if res.upper(u) {
		return err == nil && st.Ino == res.st.Ino
	}
	if err != nil {
		return isNotExist(err)
	}
	up := n.upperIno.Load()
	return up != 0 && st.Ino == up
}

var _ = (fs.NodeOnForgetter)((*node)(nil))

// OnForget closes the directory descriptors held for the node.
func (n *node) OnForget() {
	n.u.fds.drop(n, len(n.u.layers))
}

// topStat lstats the node's topmost entry: one fstatat from the parent's
// held descriptor.
func (n *node) topStat(st *unix.Stat_t) error {
	l, _, err := n.lockTop()
	if err == nil {
		err = unix.Fstatat(l.dir(), l.name, st, unix.AT_SYMLINK_NOFOLLOW)
	}
	n.unlockTop(l)
	return err
}

var _ = (fs.NodeGetattrer)((*node)(nil))

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Stat_t
	if h := asFileHandle(f); h != nil {
		if err := h.fstat(&st); err != nil {
			return n.u.errno("fstat", "", err)
		}
	} else if fd, ok := n.detachedFd(); ok {
		err := unix.Fstat(fd, &st)
		unix.Close(fd)
		if err != nil {
			return n.u.errno("fstat", "", err)
		}
	} else if err := n.topStat(&st); err != nil {
		if !n.unlinked.Load() || !isNotExist(err) {
			return n.u.errno("stat", "", err)
		}
		// An open FIFO or directory has no handle to fstat once its name
		// is gone: report what it was last.
		n.mu.Lock()
		var st unix.Stat_t
		ok := n.last != nil
		if ok {
			st = *n.last
		}
		n.mu.Unlock()
		if !ok {
			return n.u.errno("stat", "", err)
		}
		n.u.fillAttr(&st, n.StableAttr().Ino, false, &out.Attr)
		out.Nlink = 0
		out.SetTimeout(n.u.opts.AttrTimeout)
		return 0
	}
	if t := st.Mode & unix.S_IFMT; t == unix.S_IFDIR || t == unix.S_IFIFO || t == unix.S_IFSOCK {
		n.mu.Lock()
		if n.last == nil {
			n.last = new(unix.Stat_t)
		}
		*n.last = st
		n.mu.Unlock()
	}
	n.u.fillAttr(&st, n.StableAttr().Ino, n.merged(), &out.Attr)
	if n.unlinked.Load() && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		out.Nlink = 0
	}
	out.SetTimeout(n.u.opts.AttrTimeout)
	return 0
}

var _ = (fs.NodeReadlinker)((*node)(nil))

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	l, _, err := n.lockTop()
	defer n.unlockTop(l)
	if err != nil {
		return nil, n.u.errno("readlink", "", err)
	}
	buf := make([]byte, 4096)
	for {
		sz, err := unix.Readlinkat(l.dir(), l.name, buf)
		if err != nil {
			return nil, n.u.errno("readlink", l.name, err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
		buf = make([]byte, 2*len(buf))
	}
}

var _ = (fs.NodeStatfser)((*node)(nil))

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st unix.Statfs_t
	if err := unix.Fstatfs(n.u.layers[0].fd, &st); err != nil {
		return n.u.errno("statfs", "", err)
	}
	out.FromStatfsT((*syscall.Statfs_t)(unsafe.Pointer(&st)))
	return 0
}

var _ = (fs.NodeAccesser)((*node)(nil))

// Access is only asked for when default_permissions is off; the kernel
// checks the attributes we report. Refuse writes on a read-only mount.
func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	if mask&unix.W_OK != 0 && !n.u.hasUpper {
		return syscall.EROFS
	}
	return 0
}

func isLowerHardlink(st *unix.Stat_t) bool {
	return st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR
}

// aliasGen is a generation number that tells the names of one lower hard
// link apart (FNV-1a of the path, never 0).
func aliasGen(rel string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(rel); i++ {
		h ^= uint64(rel[i])
		h *= 1099511628211
	}
	return h | 1
}
