package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/internal/lockrank"
	"golang.org/x/sys/unix"
)

// dirHandle is an open merged directory: one merged listing per opendir,
// rebuilt on a seek to 0. Offsets are positions in the listing, so they
// stay valid for the life of the handle.
type dirHandle struct {
	n *node

	mu      lockrank.Mutex[rankDirHandle]
	entries []mergedEntry // guarded by mu
	dirs    []layerDir    // the layers listed; guarded by mu
	loaded  bool          // guarded by mu
	pos     int           // next entry; 0 and 1 are "." and ".."; guarded by mu
	// last is the entry Readdirent returned last, which READDIRPLUS looks
	// up next; -1 for none. Guarded by mu.
	last int
	// gen is u.linkGen when the listing was built: while it holds, no
	// name of the listing was removed or renamed away. Guarded by mu.
	gen uint64
}

var _ = (fs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle lists nothing yet: with FOPEN_CACHE_DIR the kernel serves
// a listing it holds from its cache and never asks, so the merge happens
// at the first READDIR.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n, last: -1}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// load builds the merged listing. Preconditions: h.mu held or h not shared.
func (h *dirHandle) load() syscall.Errno {
	n := h.n
	pd := n.u.at(n)
	defer pd.done()
	entries, err := n.u.merge(pd)
	if err != nil {
		return n.u.errno("readdir", "", err)
	}
	ufd := -1
	if n.u.hasUpper && len(pd.dirs) > 0 && pd.dirs[0].layer == 0 {
		if ufd, err = pd.fd(0); err != nil {
			return n.u.errno("readdir", "", err)
		}
	}
	for i := range entries {
		e := &entries[i]
		if e.shadowed || (n.u.hasUpper && e.layer == 0 && e.mode != unix.S_IFDIR) {
			// A copied-up entry reports its origin's number
			// (ovl_cache_update_ino); a non-directory may have been
			// copied up and renamed to a name no lower layer has.
			if ino, ok := n.u.readOrigin(procAt(ufd, e.name)); ok {
				e.ino = ino
			}
		}
	}
	// h.pos stays: the kernel may seek (Seekdir) before the first read,
	// to go on from where its cached listing of the directory ends.
	h.entries, h.dirs, h.loaded, h.last, h.gen = entries, pd.dirs, true, -1, pd.gen
	return 0
}

var _ = (fs.FileReaddirenter)((*dirHandle)(nil))

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.loaded {
		if errno := h.load(); errno != 0 {
			return nil, errno
		}
	}
	pos := h.pos
	h.last = -1
	switch {
	case pos == 0:
		h.pos++
		return &fuse.DirEntry{Name: ".", Mode: unix.S_IFDIR, Ino: h.n.StableAttr().Ino, Off: 1}, 0
	case pos == 1:
		h.pos++
		ino := uint64(1)
		if _, p := h.n.Parent(); p != nil {
			ino = p.StableAttr().Ino
		}
		return &fuse.DirEntry{Name: "..", Mode: unix.S_IFDIR, Ino: ino, Off: 2}, 0
	case pos-2 < len(h.entries):
		e := &h.entries[pos-2]
		h.last = pos - 2
		h.pos++
		return &fuse.DirEntry{Name: e.name, Mode: e.mode, Ino: e.ino, Off: uint64(pos + 1)}, 0
	}
	return nil, 0
}

var _ = (fs.FileSeekdirer)((*dirHandle)(nil))

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 {
		h.loaded = false // rewinddir sees changes, as getdents on a fresh open would
		h.pos = 0
		return 0
	}
	h.pos = int(off)
	return 0
}

var _ = (fs.FileLookuper)((*dirHandle)(nil))

// Lookup serves READDIRPLUS: the name is the one this handle just listed.
// The merge that listed it knows its topmost layer, so the layers above are
// not asked again (for a lower file in a merged directory, that saves the
// upper's stat and whiteout probe: one fstatat instead of three or four).
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	h.mu.Lock()
	if h.last < 0 || h.entries[h.last].name != name || h.gen != h.n.u.linkGen.Load() {
		// Not the entry just listed, or a name may have gone since the
		// listing (an unlink between two READDIRPLUS calls leaves a
		// whiteout above the layer the listing found the name in).
		h.mu.Unlock()
		return h.n.Lookup(ctx, name, out)
	}
	e, dirs := h.entries[h.last], h.dirs
	h.mu.Unlock()
	n := h.n
	pd := n.u.atDirs(n, dirs)
	defer pd.done()
	res, found, err := n.u.resolveFrom(pd, name, e.layer)
	if err != nil || !found || res.top != e.layer {
		// Gone or changed since the listing: ask every layer.
		return n.Lookup(ctx, name, out)
	}
	return n.u.childInode(ctx, pd, name, &res, out), 0
}

var _ = (fs.FileReleasedirer)((*dirHandle)(nil))

func (h *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}

var _ = (fs.FileFsyncdirer)((*dirHandle)(nil))

func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	n := h.n
	if !n.isUpper() {
		return 0
	}
	d, err := n.u.dirFd(n, 0)
	if err != nil {
		return n.u.errno("fsyncdir", "", err)
	}
	defer n.u.fds.release(d)
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return n.u.errno("fsyncdir", "", err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return n.u.errno("fsyncdir", "", err)
	}
	return 0
}
