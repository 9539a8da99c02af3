package unionfs

import (
	"context"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var _ = (fs.NodeTmpfiler)((*node)(nil))

// Tmpfile serves open(dir, O_TMPFILE): an unnamed file in the upper
// directory. linkat(fd, "", AT_EMPTY_PATH) later gives it a name (Link
// finds it by its fd).
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	d, err := n.upperDirOf()
	if err != nil {
		return nil, nil, 0, n.u.errno("tmpfile", "", err)
	}
	defer n.u.fds.release(d)
	dfd, rel := d.fd, ""
	oflags := int(flags)&^(unix.O_APPEND|unix.O_NOCTTY|unix.O_CREAT|unix.O_EXCL|fuse.FMODE_EXEC) | unix.O_TMPFILE | unix.O_CLOEXEC
	fd, err := unix.Openat(dfd, ".", oflags, mode&07777)
	if err != nil {
		return nil, nil, 0, n.u.errno("tmpfile", rel, err)
	}
	if caller, ok := fuse.FromContext(ctx); ok {
		uid, gid := n.u.ids.toHost(caller.Uid, caller.Gid)
		unix.Fchown(fd, uid, gid)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, n.u.errno("tmpfile", rel, err)
	}
	ino := n.u.inos.ino(st.Dev, st.Ino)
	child := n.u.newNode(0, nil)
	child.tmpFd.Store(int64(fd) + 1)
	ch := n.NewInode(ctx, child, fs.StableAttr{Mode: unix.S_IFREG, Ino: ino})
	n.u.fillAttr(&st, ino, false, &out.Attr)
	fh, fuseFlags, ok := ch.Operations().(*node).handle(fd, oflags&^unix.O_TMPFILE, true, st.Mode)
	if !ok {
		unix.Close(fd)
		return nil, nil, 0, syscall.ESTALE
	}
	return ch, fh, fuseFlags, 0
}

// linkTmpfile names an O_TMPFILE file in the upper directory dfd.
func (n *node) linkTmpfile(dfd int, name string) (bool, error) {
	v := n.tmpFd.Load()
	if v == 0 {
		return false, nil
	}
	fd := int(v - 1)
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dfd, name, unix.AT_SYMLINK_FOLLOW)
	if err == nil {
		n.tmpFd.Store(0)
	}
	return true, err
}
