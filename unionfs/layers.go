package unionfs

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// layer is one directory of the stack. Index 0 is the upper when the mount
// has one; lowers follow, topmost first.
type layer struct {
	index int
	path  string
	fd    int    // O_PATH|O_DIRECTORY fd of the layer root, for *at calls
	proc  string // "/proc/self/fd/<fd>": the root by fd, for calls that need a path
	dev   uint64
	upper bool
}

func openLayer(index int, path string, upper bool) (*layer, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open layer %q: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat layer %q: %w", path, err)
	}
	return &layer{index: index, path: path, fd: fd, proc: "/proc/self/fd/" + strconv.Itoa(fd), dev: st.Dev, upper: upper}, nil
}

// xpath names rel inside the layer for the l*xattr calls, which have no
// *at form. It goes through the layer's fd, not its path: podman detaches
// the (idmapped) lower mounts it hands over right after the mount is up.
// It is only right for a short rel (the root): others take xattrPath.
func (l *layer) xpath(rel string) string {
	if rel == "" {
		return l.proc + "/."
	}
	return l.proc + "/" + rel
}

// xattrPath is xpath for any rel that fits PATH_MAX. Near PATH_MAX (a path
// that long below the mount is valid) "/proc/self/fd/N/" + rel does not
// fit, so rel's parent is opened and the path goes through its fd. Call
// done when finished with the path.
func (l *layer) xattrPath(rel string) (p string, done func(), err error) {
	if len(l.proc)+1+len(rel) < unix.PathMax {
		return l.xpath(rel), func() {}, nil
	}
	dir, name := split(rel)
	fd, err := l.openDir(dir, unix.O_PATH)
	if err != nil {
		return "", nil, err
	}
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + name, func() { unix.Close(fd) }, nil
}

// xattrOpacity is the opacity the xattrs of directory rel give it.
func (l *layer) xattrOpacity(rel string) whiteout.Opacity {
	p, done, err := l.xattrPath(rel)
	if err != nil {
		return whiteout.NotOpaque
	}
	defer done()
	return xattrOpacity(p)
}

// isXattrWhiteout reports whether rel carries an overlay.whiteout xattr.
func (l *layer) isXattrWhiteout(rel string) bool {
	p, done, err := l.xattrPath(rel)
	if err != nil {
		return false
	}
	defer done()
	return whiteout.IsXattrWhiteoutPath(p)
}

// rel2at turns a layer-relative path into an argument for *at calls on the
// layer root fd.
func rel2at(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// join appends name to a layer-relative directory path.
func join(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// split returns the parent and the last component of a relative path.
func split(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// lstat stats rel in the layer without following a final symlink. Lowers
// are immutable and trusted, so a plain fstatat is enough; in the upper,
// which users change through us concurrently, the parent is opened with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS first.
func (l *layer) lstat(rel string, st *unix.Stat_t) error {
	if !l.upper || !strings.Contains(rel, "/") {
		return unix.Fstatat(l.fd, rel2at(rel), st, unix.AT_SYMLINK_NOFOLLOW)
	}
	dir, name := split(rel)
	dfd, err := l.openDir(dir, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// openAt opens rel inside the layer, never leaving it and never following
// a symlink in any component.
func (l *layer) openAt(rel string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(mode)
	}
	for {
		fd, err := unix.Openat2(l.fd, rel2at(rel), &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err == unix.ELOOP && flags&unix.O_PATH == 0 {
			// O_NOFOLLOW on a final symlink: report what open(2) would.
			return -1, unix.ELOOP
		}
		return fd, err
	}
}

// openDir opens the directory rel of the layer (flags adds O_PATH or O_RDONLY).
func (l *layer) openDir(rel string, flags int) (int, error) {
	return l.openAt(rel, flags|unix.O_DIRECTORY, 0)
}

// inoMapper turns (device, inode) pairs of the layers into inode numbers
// unique across the mount. When every layer lives on one filesystem the
// real number is used unchanged, as kernel overlayfs does; entries of other
// filesystems get the device's tag in the top byte, and numbers that do not
// fit get one from a collision table.
type inoMapper struct {
	mainDev uint64

	mu       sync.Mutex
	tags     map[uint64]uint64    // dev -> tag (1..254); guarded by mu
	overflow map[[2]uint64]uint64 // (dev, ino) -> number; guarded by mu
	next     uint64               // next overflow number; guarded by mu
}

const (
	tagShift    = 56
	overflowTag = 0xff << tagShift
)

func newInoMapper(mainDev uint64) *inoMapper {
	return &inoMapper{mainDev: mainDev, tags: map[uint64]uint64{}, overflow: map[[2]uint64]uint64{}, next: overflowTag + 2}
}

// ino maps a real (dev, ino) pair to the mount's inode number.
func (m *inoMapper) ino(dev, ino uint64) uint64 {
	if dev == m.mainDev && ino > 1 && ino < 1<<tagShift {
		return ino
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ino > 1 && ino < 1<<tagShift {
		tag, ok := m.tags[dev]
		if !ok && len(m.tags) < 254 {
			tag = uint64(len(m.tags) + 1)
			m.tags[dev] = tag
			ok = true
		}
		if ok {
			return tag<<tagShift | ino
		}
	}
	k := [2]uint64{dev, ino}
	if n, ok := m.overflow[k]; ok {
		return n
	}
	n := m.next
	m.next++
	m.overflow[k] = n
	return n
}
