package lazy

import (
	"context"
	"log"
	"os"
	"syscall"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// A lazy layer as a directory: a read-only FUSE filesystem whose tree is
// the TOC's (names, modes, owners, times, xattrs, hard links, device
// numbers) and whose file contents are read through Layer.ReadFile. The
// union daemon mounts one per lazy lower on a private mountpoint and uses
// it as the lower directory, so the union core reads it as any other
// layer (see docs/design.md). Whiteouts are the tar's .wh. files, which
// the union reads as it reads them in any lower.

// Mount serves l read-only at mnt until the returned server is unmounted.
// logger gets one line per failed read (they are EIO to the reader).
func Mount(mnt string, l *Layer, logger *log.Logger, directMount bool) (*fuse.Server, error) {
	root := newTree(l, logger)
	never := time.Duration(1<<63 - 1)
	return fs.Mount(mnt, root, &fs.Options{
		EntryTimeout:    &never,
		AttrTimeout:     &never,
		NegativeTimeout: &never,
		// Mode 0 is a mode (eStargz's landmark files have it).
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:      "unionmount-lazy",
			Name:        "unionmount",
			Options:     []string{"ro", "default_permissions"},
			MaxWrite:    1 << 20,
			DirectMount: directMount,
			// Only the daemon that serves the mount reads it: no
			// allow_other.
		},
	})
}

// tocNode is one TOC entry (one inode: hard links share it).
type tocNode struct {
	fs.Inode
	t    *tocTree
	e    *estargz.TOCEntry
	root bool
}

type tocTree struct {
	l      *Layer
	logger *log.Logger
	ino    map[*estargz.TOCEntry]uint64
}

var (
	_ = (fs.NodeGetattrer)((*tocNode)(nil))
	_ = (fs.NodeReadlinker)((*tocNode)(nil))
	_ = (fs.NodeOpener)((*tocNode)(nil))
	_ = (fs.NodeReader)((*tocNode)(nil))
	_ = (fs.NodeGetxattrer)((*tocNode)(nil))
	_ = (fs.NodeListxattrer)((*tocNode)(nil))
	_ = (fs.NodeOnAdder)((*tocNode)(nil))
)

func newTree(l *Layer, logger *log.Logger) *tocNode {
	t := &tocTree{l: l, logger: logger, ino: map[*estargz.TOCEntry]uint64{}}
	root, _ := l.toc.Lookup("")
	return &tocNode{t: t, e: root, root: true}
}

// OnAdd builds the whole tree from the TOC at mount time: lookups are then
// answered by go-fuse from memory.
func (n *tocNode) OnAdd(ctx context.Context) {
	if !n.root {
		return // go-fuse calls OnAdd for every node NewPersistentInode makes
	}
	nodes := map[*estargz.TOCEntry]*fs.Inode{n.e: &n.Inode}
	n.t.ino[n.e] = 1
	var add func(parent *fs.Inode, e *estargz.TOCEntry)
	add = func(parent *fs.Inode, e *estargz.TOCEntry) {
		e.ForeachChild(func(name string, c *estargz.TOCEntry) bool {
			child, ok := nodes[c]
			if !ok {
				ino := uint64(len(n.t.ino) + 1)
				n.t.ino[c] = ino
				child = parent.NewPersistentInode(ctx, &tocNode{t: n.t, e: c}, fs.StableAttr{Mode: typeBits(c), Ino: ino})
				nodes[c] = child
				if c.Type == "dir" {
					add(child, c)
				}
			}
			parent.AddChild(name, child, false)
			return true
		})
	}
	add(&n.Inode, n.e)
	if h := n.t.l.tocHdr; h != nil && n.GetChild(h.Name) == nil {
		mt := h.ModTime
		f := &fs.MemRegularFile{Data: n.t.l.tocBody, Attr: fuse.Attr{Mode: syscall.S_IFREG | uint32(h.Mode)&0o7777, Nlink: 1,
			Owner: fuse.Owner{Uid: uint32(h.Uid), Gid: uint32(h.Gid)}}}
		f.Attr.SetTimes(&mt, &mt, &mt)
		n.AddChild(h.Name, n.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG, Ino: uint64(len(n.t.ino) + 1)}), false)
	}
}

func typeBits(e *estargz.TOCEntry) uint32 {
	switch e.Type {
	case "dir":
		return syscall.S_IFDIR
	case "symlink":
		return syscall.S_IFLNK
	case "char":
		return syscall.S_IFCHR
	case "block":
		return syscall.S_IFBLK
	case "fifo":
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

func (n *tocNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e := n.e
	fi := e.Stat()
	out.Mode = typeBits(e) | uint32(fi.Mode().Perm())
	m := fi.Mode()
	if m&os.ModeSetuid != 0 {
		out.Mode |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		out.Mode |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		out.Mode |= syscall.S_ISVTX
	}
	out.Ino = n.t.ino[e]
	out.Uid, out.Gid = uint32(e.UID), uint32(e.GID)
	out.Nlink = uint32(max(e.NumLink, 1))
	switch e.Type {
	case "reg":
		out.Size = uint64(e.Size)
	case "symlink":
		out.Size = uint64(len(e.LinkName))
	case "char", "block":
		out.Rdev = uint32(unixMkdev(uint32(e.DevMajor), uint32(e.DevMinor)))
	}
	out.Blocks = (out.Size + 511) / 512
	mt := e.ModTime()
	if mt.IsZero() {
		// The TOC leaves out a zero mtime (as tar's 0): the epoch.
		mt = time.Unix(0, 0)
	}
	out.SetTimes(&mt, &mt, &mt)
	out.SetTimeout(time.Duration(1<<63 - 1))
	return 0
}

func unixMkdev(major, minor uint32) uint64 {
	return uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

func (n *tocNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.e.Type != "symlink" {
		return nil, syscall.EINVAL
	}
	return []byte(n.e.LinkName), 0
}

func (n *tocNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	// The content never changes: the kernel may keep its page cache.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *tocNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.e.Type != "reg" {
		return nil, syscall.EISDIR
	}
	if off >= n.e.Size {
		return fuse.ReadResultData(nil), 0
	}
	if rest := n.e.Size - off; int64(len(dest)) > rest {
		dest = dest[:rest]
	}
	m, err := n.t.l.ReadFile(ctx, n.e.Name, dest, off)
	if err != nil && m < len(dest) {
		if n.t.logger != nil {
			n.t.logger.Printf("%v", err)
		}
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:m]), 0
}

func (n *tocNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.e.Xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *tocNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for k := range n.e.Xattrs {
		b = append(append(b, k...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}
