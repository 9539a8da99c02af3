package unionfs

import (
	"fmt"

	"github.com/unionmount/unionmount/internal/lockrank"
	"golang.org/x/sys/unix"
)

// layer is one directory of the stack. Index 0 is the upper when the mount
// has one; lowers follow, topmost first.
type layer struct {
	index int
	path  string
	fd    int // O_PATH|O_DIRECTORY fd of the layer root, for *at calls
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
	return &layer{index: index, path: path, fd: fd, dev: st.Dev, upper: upper}, nil
}

// join appends name to a layer-relative directory path.
func join(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
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
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(l.fd, rel, &how)
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

	mu       lockrank.Mutex[rankIno]
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
