package unionfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// fileHandle is an open regular file. A handle opened read-only on a lower
// file switches to the upper copy after a copy-up (kernel >= 4.19), so
// readers see writes made through other handles.
type fileHandle struct {
	n  *node
	pt bool // opened for passthrough (counted in n.ptOpens)

	mu    sync.Mutex
	fd    int  // guarded by mu
	lower bool // fd is a lower layer's file; guarded by mu
	flags int
}

func (h *fileHandle) getFd() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd < 0 {
		return -1, unix.EBADF
	}
	if h.lower && h.n.isUpper() {
		_, _, rel := h.n.state()
		fd, err := h.n.u.layers[0].openAt(rel, unix.O_RDONLY, 0)
		if err == nil {
			unix.Close(h.fd)
			h.fd, h.lower = fd, false
		}
	}
	return h.fd, nil
}

func (h *fileHandle) fstat(st *unix.Stat_t) error {
	fd, err := h.getFd()
	if err != nil {
		return err
	}
	return unix.Fstat(fd, st)
}

var _ = (fs.FileReader)((*fileHandle)(nil))

func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fd, err := h.getFd()
	if err != nil {
		return nil, h.n.u.errno("read", "", err)
	}
	return fuse.ReadResultFd(uintptr(fd), off, len(dest)), 0
}

var _ = (fs.FileWriter)((*fileHandle)(nil))

func (h *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	fd, err := h.getFd()
	if err != nil {
		return 0, h.n.u.errno("write", "", err)
	}
	n, err := unix.Pwrite(fd, data, off)
	if err != nil {
		return 0, h.n.u.errno("write", "", err)
	}
	return uint32(n), 0
}

var _ = (fs.FileFsyncer)((*fileHandle)(nil))

func (h *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	fd, err := h.getFd()
	if err == nil {
		if flags&1 != 0 {
			err = unix.Fdatasync(fd)
		} else {
			err = unix.Fsync(fd)
		}
	}
	if err != nil {
		return h.n.u.errno("fsync", "", err)
	}
	return 0
}

var _ = (fs.FileFlusher)((*fileHandle)(nil))

// Flush reports deferred write errors of the underlying file, as close(2)
// would: it closes a dup of the fd.
func (h *fileHandle) Flush(ctx context.Context) syscall.Errno {
	fd, err := h.getFd()
	if err != nil {
		return 0
	}
	nfd, err := unix.Dup(fd)
	if err != nil {
		return 0
	}
	if err := unix.Close(nfd); err != nil {
		return h.n.u.errno("flush", "", err)
	}
	return 0
}

var _ = (fs.FileReleaser)((*fileHandle)(nil))

func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
	h.mu.Unlock()
	h.n.endIO(h.pt)
	return 0
}

// ptHandle is an upper file whose reads and writes the kernel does on the
// file itself (FOPEN_PASSTHROUGH); go-fuse registers the fd as backing file.
type ptHandle struct {
	*fileHandle
}

var _ = (fs.FilePassthroughFder)((*ptHandle)(nil))

func (h *ptHandle) PassthroughFd() (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fd, h.fd >= 0
}

// beginIO picks the io mode of a new open of the node. The kernel refuses
// to mix cached and passthrough opens of one inode (EBUSY), so a node with
// cached opens (say, a lower file opened before its copy-up) stays cached
// until they are closed. Lower files are never passthrough: a handle must
// follow its file to the upper after a copy-up.
func (n *node) beginIO(upper bool) (pt bool) {
	n.ioMu.Lock()
	defer n.ioMu.Unlock()
	if upper && n.u.opts.Passthrough && n.cachedOpens == 0 {
		n.ptOpens++
		return true
	}
	n.cachedOpens++
	return false
}

func (n *node) endIO(pt bool) {
	n.ioMu.Lock()
	defer n.ioMu.Unlock()
	if pt {
		n.ptOpens--
	} else {
		n.cachedOpens--
	}
}

// handle wraps an open fd in the right handle type for its io mode.
func (n *node) handle(fd, flags int, upper bool) (fs.FileHandle, uint32) {
	pt := n.beginIO(upper)
	h := &fileHandle{n: n, fd: fd, lower: !upper, flags: flags, pt: pt}
	if pt {
		return &ptHandle{h}, 0
	}
	return h, fuse.FOPEN_KEEP_CACHE
}

var _ = (fs.FileGetattrer)((*fileHandle)(nil))

func (h *fileHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.n.Getattr(ctx, h, out)
}

var _ = (fs.FileLseeker)((*fileHandle)(nil))

func (h *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	fd, err := h.getFd()
	if err != nil {
		return 0, h.n.u.errno("lseek", "", err)
	}
	n, err := unix.Seek(fd, int64(off), int(whence))
	if err != nil {
		return 0, h.n.u.errno("lseek", "", err)
	}
	return uint64(n), 0
}

var _ = (fs.FileAllocater)((*fileHandle)(nil))

func (h *fileHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	fd, err := h.getFd()
	if err == nil {
		err = unix.Fallocate(fd, mode, int64(off), int64(size))
	}
	if err != nil {
		return h.n.u.errno("fallocate", "", err)
	}
	return 0
}

var _ = (fs.NodeOpener)((*node)(nil))

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	acc := flags & unix.O_ACCMODE
	writing := acc != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if writing {
		if err := n.u.copyUp(n, flags&unix.O_TRUNC != 0); err != nil {
			return nil, 0, n.u.errno("copy up for open", n.rel(), err)
		}
	}
	top, _, rel := n.state()
	oflags := int(flags) &^ (unix.O_APPEND | unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | fuse.FMODE_EXEC)
	fd, err := n.u.layers[top].openAt(rel, oflags, 0)
	if err != nil {
		return nil, 0, n.u.errno("open", rel, err)
	}
	fh, fuseFlags := n.handle(fd, oflags, n.u.hasUpper && top == 0)
	return fh, fuseFlags, 0
}

var _ = (fs.NodeCopyFileRanger)((*node)(nil))

func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	hin, hout := asFileHandle(fhIn), asFileHandle(fhOut)
	if hin == nil || hout == nil {
		return 0, syscall.EXDEV
	}
	in, err := hin.getFd()
	if err != nil {
		return 0, n.u.errno("copy_file_range", "", err)
	}
	o, err := hout.getFd()
	if err != nil {
		return 0, n.u.errno("copy_file_range", "", err)
	}
	i1, i2 := int64(offIn), int64(offOut)
	c, err := unix.CopyFileRange(in, &i1, o, &i2, int(length), int(flags))
	if err != nil {
		return 0, n.u.errno("copy_file_range", "", err)
	}
	return uint32(c), 0
}

// asFileHandle unwraps either handle type.
func asFileHandle(f fs.FileHandle) *fileHandle {
	switch h := f.(type) {
	case *fileHandle:
		return h
	case *ptHandle:
		return h.fileHandle
	}
	return nil
}
