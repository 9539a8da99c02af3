package unionfs

import (
	"context"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/internal/lockrank"
	"golang.org/x/sys/unix"
)

// fileHandle is an open regular file. A handle opened read-only on a lower
// file switches to the upper copy after a copy-up (kernel >= 4.19), so
// readers see writes made through other handles.
type fileHandle struct {
	n       *node
	pt      bool // opened for passthrough
	ptLower bool // the passthrough backing is a lower layer's file

	mu    lockrank.Mutex[rankHandle]
	fd    int  // guarded by mu
	lower bool // fd is a lower layer's file; guarded by mu
	flags int
}

// getFd returns the handle's descriptor, first swapping a lower file's
// for its upper copy once the node was copied up. The copy is opened
// without h.mu held (lock order: u.linkMu before fileHandle.mu).
func (h *fileHandle) getFd() (int, error) {
	h.mu.Lock()
	fd, lower := h.fd, h.lower
	h.mu.Unlock()
	if fd < 0 {
		return -1, unix.EBADF
	}
	if !lower || !h.n.isUpper() {
		return fd, nil
	}
	l, _, err := h.n.lockTop()
	nfd := -1
	if err == nil {
		nfd, err = unix.Openat(l.dir(), l.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	h.n.unlockTop(l)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd < 0 {
		if err == nil {
			unix.Close(nfd)
		}
		return -1, unix.EBADF
	}
	if err == nil {
		if h.lower {
			unix.Close(h.fd)
			h.fd, h.lower = nfd, false
		} else {
			unix.Close(nfd) // another caller swapped it first
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
	if len(dest) > spliceMin {
		return fuse.ReadResultFd(uintptr(fd), off, len(dest)), 0
	}
	n, err := unix.Pread(fd, dest, off)
	if err != nil {
		return nil, h.n.u.errno("read", "", err)
	}
	// A vector, not ReadResultData: go-fuse writes a vector with one
	// writev, while plain data first goes through its splice path (a
	// pipe from the pool, the header written into it, then discarded):
	// 30% of the daemon's CPU on 4 KiB random reads.
	return fuse.ReadResultVector([][]byte{dest[:n]}), 0
}

// spliceMin is the read size above which splicing the data from the file
// to /dev/fuse beats a pread into the request buffer. A splice takes a pipe
// from a pool, fills it, writes it and drains it: for a 4 KiB random read
// that cost 48 µs of daemon CPU against a few µs for pread and write.
const spliceMin = 128 << 10

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
//
// On an upper whose close(2) never fails (local disk filesystems, tmpfs)
// and on a mount without an upper, it answers ENOSYS: the kernel then stops
// sending FLUSH, which saves a round trip on every close.
func (h *fileHandle) Flush(ctx context.Context) syscall.Errno {
	if !h.n.u.flushMatters {
		return syscall.ENOSYS
	}
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
	h.n.endIO(h)
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

func (n *node) endIO(h *fileHandle) {
	n.ioMu.Lock()
	delete(n.open, h)
	n.ioMu.Unlock()
}

// handle wraps an open fd in the right handle type for its io mode and
// registers it with the node. The kernel refuses to mix cached and
// passthrough opens of one inode (EBUSY), so a node with cached opens (say,
// a lower file opened before its copy-up) stays cached until they are
// closed. Lower files are passthrough only with Options.LowerPassthrough:
// a cached handle follows its file to the upper after a copy-up, a
// passthrough one cannot. With it, ok is false when the node has
// passthrough handles backed by another layer's file (lowerpt.go).
//
// mode is the file's mode, for the setuid/setgid rule below.
func (n *node) handle(fd, flags int, upper bool, mode uint32) (fh fs.FileHandle, fuseFlags uint32, ok bool) {
	n.ioMu.Lock()
	pt := n.u.opts.Passthrough && (upper || n.u.opts.LowerPassthrough)
	for o := range n.open {
		if pt && o.pt && o.ptLower == upper {
			n.ioMu.Unlock()
			return nil, 0, false
		}
		pt = pt && o.pt
	}
	if pt && flags&unix.O_ACCMODE != unix.O_RDONLY && mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		// Its writes must reach the daemon to clear setuid/setgid
		// (killpriv.go), unless a passthrough handle holds the inode.
		pt = false
		for o := range n.open {
			pt = pt || o.pt
		}
	}
	h := &fileHandle{n: n, fd: fd, lower: !upper, flags: flags, pt: pt, ptLower: pt && !upper}
	if n.open == nil {
		n.open = make(map[*fileHandle]struct{})
	}
	n.open[h] = struct{}{}
	n.ioMu.Unlock()
	if pt {
		return &ptHandle{h}, 0, true
	}
	return h, fuse.FOPEN_KEEP_CACHE, true
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
	fh, fuseFlags, top, errno := n.open1(flags)
	if errno != 0 || fh != nil {
		return fh, fuseFlags, errno
	}
	// Passthrough handles backed by another layer hold the inode.
	if top != 0 && n.isUpper() {
		// A copy-up finished after we opened the lower file: the
		// handles are backed by the copy, which a second open reaches
		// (a node never goes back to a lower layer).
		if fh, fuseFlags, _, errno = n.open1(flags); errno != 0 || fh != nil {
			return fh, fuseFlags, errno
		}
	}
	n.u.rekey(n)
	return nil, 0, syscall.ESTALE
}

// open1 is one attempt of Open; a nil handle without an error means the
// node's passthrough handles are backed by another layer than top's.
func (n *node) open1(flags uint32) (fs.FileHandle, uint32, int, syscall.Errno) {
	acc := flags & unix.O_ACCMODE
	writing := acc != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if writing {
		if err := n.u.copyUp(n, flags&unix.O_TRUNC != 0); err != nil {
			return nil, 0, 0, n.u.errno("copy up for open", "", err)
		}
	}
	oflags := int(flags) &^ (unix.O_APPEND | unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | fuse.FMODE_EXEC)
	fd, top, st, err := n.openSelf(oflags &^ unix.O_TRUNC)
	if err == nil && oflags&unix.O_TRUNC != 0 {
		// Truncate only once the file is known to be this node's.
		if err = unix.Ftruncate(fd, 0); err == unix.EINVAL || err == unix.EBADF {
			// O_RDONLY|O_TRUNC: truncates on Linux, through a writable open.
			var wfd int
			if wfd, err = unix.Open(fdPath(fd), unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(wfd)
			}
		}
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return nil, 0, top, n.u.errno("open", "", err)
	}
	fh, fuseFlags, ok := n.handle(fd, oflags, n.u.hasUpper && top == 0, st.Mode)
	if !ok {
		unix.Close(fd)
		return nil, 0, top, 0
	}
	return fh, fuseFlags, top, 0
}

// openSelf opens the node's topmost file: its name in the parent's held
// directory, with the link held still, so a rename in flight is either
// done or not begun. A file without a name (unlinked while open,
// O_TMPFILE) is reopened through one of its descriptors.
//
// st is the file's fstat (zero if that failed: the caller's I/O on fd
// reports the trouble).
func (n *node) openSelf(flags int) (fd, top int, st unix.Stat_t, err error) {
	if dfd, ok := n.detachedFd(); ok {
		// As open("/proc/self/fd/N") does.
		fd, err = unix.Open(fdPath(dfd), flags|unix.O_CLOEXEC, 0)
		unix.Close(dfd)
		if err == nil {
			unix.Fstat(fd, &st)
		}
		return fd, 0, st, err
	}
	l, top, err := n.lockTop()
	if err == nil {
		fd, err = unix.Openat(l.dir(), l.name, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	n.unlockTop(l)
	if err != nil {
		return -1, top, st, err
	}
	if unix.Fstat(fd, &st) != nil {
		st = unix.Stat_t{}
	}
	return fd, top, st, nil
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

// detachedFd returns a duplicate of an open upper descriptor of the node's
// file once no path names it (its last name unlinked, or an O_TMPFILE not
// yet linked), for the metadata operations that come without a handle
// (fchmod, fchown, futimens, fsetxattr, fstat). The caller closes it.
// ok is false while the file has a name, or when no upper handle is open.
func (n *node) detachedFd() (fd int, ok bool) {
	if !n.unlinked.Load() && n.tmpFd.Load() == 0 {
		return -1, false
	}
	n.ioMu.Lock()
	hs := make([]*fileHandle, 0, len(n.open))
	for h := range n.open {
		hs = append(hs, h)
	}
	n.ioMu.Unlock()
	for _, h := range hs {
		hfd, err := h.getFd()
		if err != nil {
			continue
		}
		h.mu.Lock()
		if h.fd == hfd && !h.lower {
			fd, err = unix.FcntlInt(uintptr(hfd), unix.F_DUPFD_CLOEXEC, 0)
		} else {
			err = unix.EBADF
		}
		h.mu.Unlock()
		if err == nil {
			return fd, true
		}
	}
	return -1, false
}

// fdPath names an open descriptor for the path-taking calls; they must
// follow it (it is a magic link to the file).
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

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
