package unionfs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/internal/lockrank"
)

// noOpendir serves directories without OPENDIR and RELEASEDIR requests.
//
// When OPENDIR answers ENOSYS the kernel (5.1+, FUSE_NO_OPENDIR_SUPPORT in
// INIT) stops sending it and RELEASEDIR for the rest of the mount, and
// opens every directory with FOPEN_KEEP_CACHE|FOPEN_CACHE_DIR, which is
// what our handles asked for anyway. A walk then costs one round trip per
// directory fewer on each side of its READDIRPLUS, and a directory the
// kernel has cached costs none.
//
// READDIR, READDIRPLUS and FSYNCDIR then arrive without a handle (Fh 0;
// go-fuse never gives a handle that number).
// go-fuse's bridge wants one, so this wrapper opens one through the bridge
// per directory node the first time the kernel reads it, reuses it for the
// reads that follow (the kernel fills its cache from offset 0 up; a read
// at 0 starts a fresh listing), and releases it when the kernel forgets
// the node, or another one when more than maxDirHandles are held.
type noOpendir struct {
	fuse.RawFileSystem

	mu      lockrank.Mutex[rankOpendirTable]
	on      bool // the kernel supports it; set by Init
	handles map[uint64]*dirSlot
}

// dirSlot is the handle held for one directory node. mu serialises the
// requests that use it, so a release never races a read.
type dirSlot struct {
	mu lockrank.Mutex[rankDirSlot]
	fh uint64 // 0: none open
}

// maxDirHandles bounds the listings held (each is one directory's merged
// names): a walk of a million entries keeps the latest ones only.
const maxDirHandles = 1024

func newNoOpendir(inner fuse.RawFileSystem) *noOpendir {
	return &noOpendir{RawFileSystem: inner, handles: map[uint64]*dirSlot{}}
}

func (w *noOpendir) Init(s *fuse.Server) {
	w.RawFileSystem.Init(s)
	w.mu.Lock()
	w.on = s.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0
	w.mu.Unlock()
}

func (w *noOpendir) enabled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.on
}

func (w *noOpendir) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if w.enabled() {
		return fuse.ENOSYS
	}
	return w.RawFileSystem.OpenDir(cancel, in, out)
}

// slot returns the locked slot of a directory node, creating it.
func (w *noOpendir) slot(node uint64) *dirSlot {
	w.mu.Lock()
	s := w.handles[node]
	evict := uint64(0)
	if s == nil {
		s = &dirSlot{}
		w.handles[node] = s
		if len(w.handles) > maxDirHandles {
			// Any other one: the kernel reads a directory from
			// offset 0 when it needs it again.
			for id := range w.handles {
				if id != node {
					evict = id
					break
				}
			}
		}
	}
	w.mu.Unlock()
	if evict != 0 {
		w.drop(evict)
	}
	s.mu.Lock()
	return s
}

// drop releases the handle held for node, if any.
func (w *noOpendir) drop(node uint64) {
	w.mu.Lock()
	s := w.handles[node]
	delete(w.handles, node)
	w.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.fh != 0 {
		w.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: node}, Fh: s.fh})
		s.fh = 0
	}
	s.mu.Unlock()
}

// open makes sure s holds a handle on node, a fresh one when restart.
func (w *noOpendir) open(cancel <-chan struct{}, s *dirSlot, hdr fuse.InHeader, restart bool) fuse.Status {
	if s.fh != 0 && !restart {
		return fuse.OK
	}
	if s.fh != 0 {
		w.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr, Fh: s.fh})
		s.fh = 0
	}
	var out fuse.OpenOut
	in := fuse.OpenIn{InHeader: hdr, Flags: syscall.O_RDONLY | syscall.O_DIRECTORY}
	if st := w.RawFileSystem.OpenDir(cancel, &in, &out); !st.Ok() {
		return st
	}
	s.fh = out.Fh
	return fuse.OK
}

func (w *noOpendir) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	if in.Fh != 0 {
		if plus {
			return w.RawFileSystem.ReadDirPlus(cancel, in, out)
		}
		return w.RawFileSystem.ReadDir(cancel, in, out)
	}
	s := w.slot(in.NodeId)
	defer s.mu.Unlock()
	if st := w.open(cancel, s, in.InHeader, in.Offset == 0); !st.Ok() {
		return st
	}
	req := *in
	req.Fh = s.fh
	if plus {
		return w.RawFileSystem.ReadDirPlus(cancel, &req, out)
	}
	return w.RawFileSystem.ReadDir(cancel, &req, out)
}

func (w *noOpendir) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return w.readDir(cancel, in, out, false)
}

func (w *noOpendir) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return w.readDir(cancel, in, out, true)
}

func (w *noOpendir) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if in.Fh != 0 {
		return w.RawFileSystem.FsyncDir(cancel, in)
	}
	var s dirSlot
	if st := w.open(cancel, &s, in.InHeader, true); !st.Ok() {
		return st
	}
	req := *in
	req.Fh = s.fh
	st := w.RawFileSystem.FsyncDir(cancel, &req)
	w.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: s.fh})
	return st
}

func (w *noOpendir) Forget(node, nlookup uint64) {
	w.drop(node)
	w.RawFileSystem.Forget(node, nlookup)
}
