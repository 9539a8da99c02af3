package unionfs

import (
	"bytes"
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Overlay xattrs are escaped as the kernel does (6.7+): a user's
// "trusted.overlay.X" is stored as "trusted.overlay.overlay.X", so the
// real "trusted.overlay.*" markers can neither be read nor planted through
// a mount. We do the same for "user.overlay.*", which we also read as
// markers, and hide unionmount's and fuse-overlayfs' own xattrs.
var overlayPrefixes = [...]string{"trusted.overlay.", "user.overlay."}

const capXattr = "security.capability"

// xattrToReal maps a name a user asked for to the name on disk; ok=false
// means the name is private and refused.
func xattrToReal(name string) (string, bool) {
	for _, p := range overlayPrefixes {
		if strings.HasPrefix(name, p) {
			return p + "overlay." + name[len(p):], true
		}
	}
	if isHiddenXattr(name) {
		return "", false
	}
	return name, true
}

// xattrFromReal maps a name on disk to the name users see; ok=false hides it.
func xattrFromReal(name string) (string, bool) {
	for _, p := range overlayPrefixes {
		if strings.HasPrefix(name, p) {
			rest := name[len(p):]
			if strings.HasPrefix(rest, "overlay.") {
				return p + rest[len("overlay."):], true
			}
			return "", false
		}
	}
	if isHiddenXattr(name) {
		return "", false
	}
	return name, true
}

func isHiddenXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.unionmount.") || strings.HasPrefix(name, "user.unionmount.") ||
		strings.HasPrefix(name, "user.fuseoverlayfs.")
}

// xtarget is a file for the xattr calls: a path they must not follow, or
// (follow) a descriptor's /proc path they must.
type xtarget struct {
	path   string
	follow bool
}

func (x xtarget) get(name string, dest []byte) (int, error) {
	if x.follow {
		return unix.Getxattr(x.path, name, dest)
	}
	return unix.Lgetxattr(x.path, name, dest)
}

func (x xtarget) list(dest []byte) (int, error) {
	if x.follow {
		return unix.Listxattr(x.path, dest)
	}
	return unix.Llistxattr(x.path, dest)
}

func (x xtarget) set(name string, data []byte, flags int) error {
	if x.follow {
		return unix.Setxattr(x.path, name, data, flags)
	}
	return unix.Lsetxattr(x.path, name, data, flags)
}

func (x xtarget) remove(name string) error {
	if x.follow {
		return unix.Removexattr(x.path, name)
	}
	return unix.Lremovexattr(x.path, name)
}

// topPath names the node's topmost entry for the xattr calls, which have
// no *at form: its name under the parent's held descriptor
// (/proc/self/fd/N/NAME, which the l* calls do not follow), with the link
// held so that no rename moves the name meanwhile; a file without a name
// through one of its descriptors, whose /proc path is followed. Call done
// when finished, also on error.
func (n *node) topPath() (x xtarget, done func(), err error) {
	if fd, ok := n.detachedFd(); ok {
		return xtarget{path: fdPath(fd), follow: true}, func() { unix.Close(fd) }, nil
	}
	l, _, err := n.lockTop()
	if err != nil {
		return xtarget{}, func() { n.unlockTop(l) }, err
	}
	return xtarget{path: l.path()}, func() { n.unlockTop(l) }, nil
}

var _ = (fs.NodeGetxattrer)((*node)(nil))

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == capXattr && n.caps.Load() == 1 {
		return 0, syscall.ENODATA
	}
	real, ok := xattrToReal(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	p, done, err := n.topPath()
	sz := 0
	if err == nil {
		sz, err = p.get(real, dest)
	}
	done()
	if attr == capXattr {
		if err == unix.ENODATA {
			n.caps.Store(1)
		} else if err == nil {
			n.caps.Store(2)
		}
	}
	if err != nil {
		return uint32(max(sz, 0)), n.u.errno("getxattr", attr, err)
	}
	return uint32(sz), 0
}

var _ = (fs.NodeListxattrer)((*node)(nil))

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p, done, err := n.topPath()
	defer done()
	if err != nil {
		return 0, n.u.errno("listxattr", "", err)
	}
	sz, err := p.list(nil)
	if err != nil {
		return 0, n.u.errno("listxattr", "", err)
	}
	buf := make([]byte, sz+256)
	sz, err = p.list(buf)
	if err != nil {
		return 0, n.u.errno("listxattr", "", err)
	}
	var out []byte
	for _, name := range bytes.Split(buf[:sz], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		if v, ok := xattrFromReal(string(name)); ok {
			out = append(out, v...)
			out = append(out, 0)
		}
	}
	if len(dest) == 0 {
		return uint32(len(out)), 0
	}
	if len(out) > len(dest) {
		return uint32(len(out)), syscall.ERANGE
	}
	return uint32(copy(dest, out)), 0
}

var _ = (fs.NodeSetxattrer)((*node)(nil))

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	real, ok := xattrToReal(attr)
	if !ok {
		return syscall.EPERM
	}
	if err := n.u.copyUp(n, false); err != nil {
		return n.u.errno("copy up for setxattr", attr, err)
	}
	p, done, err := n.topPath()
	if err == nil {
		err = p.set(real, data, int(flags))
	}
	done()
	if err != nil {
		return n.u.errno("setxattr", attr, err)
	}
	if attr == capXattr {
		n.caps.Store(2)
	}
	return 0
}

var _ = (fs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	real, ok := xattrToReal(attr)
	if !ok {
		return syscall.ENODATA
	}
	if attr == capXattr && n.caps.Load() == 1 {
		return syscall.ENODATA
	}
	if !n.isUpper() {
		// ovl_xattr_set: removing what the lower does not have is not a
		// reason to copy up.
		p, done, err := n.topPath()
		if err == nil {
			_, err = p.get(real, nil)
		}
		done()
		if err != nil {
			return n.u.errno("getxattr", attr, err)
		}
	}
	if err := n.u.copyUp(n, false); err != nil {
		return n.u.errno("copy up for removexattr", attr, err)
	}
	p, done, err := n.topPath()
	if err == nil {
		err = p.remove(real)
	}
	done()
	if attr == capXattr && (err == nil || err == unix.ENODATA) {
		n.caps.Store(1)
	}
	if err != nil {
		return n.u.errno("removexattr", attr, err)
	}
	return 0
}
