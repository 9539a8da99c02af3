package fstest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/unionmount/unionmount/internal/dirent"
	"github.com/unionmount/unionmount/internal/xattr"
	"golang.org/x/sys/unix"
)

// Type is the file type of an Entry.
type Type string

const (
	TypeDir     Type = "dir"
	TypeFile    Type = "file"
	TypeSymlink Type = "symlink"
	TypeFIFO    Type = "fifo"
	TypeChar    Type = "char"
	TypeBlock   Type = "block"
	TypeSocket  Type = "socket"
	// TypeVanished is a name that readdir listed but lstat reported ENOENT
	// for. Kernel overlayfs does that for whiteouts in a directory that is
	// not merged (it hands the real directory's listing through).
	TypeVanished Type = "vanished"
)

// Entry is what a user of a tree can observe about one path.
type Entry struct {
	Path string // slash-separated, relative to the root; "." is the root
	Type Type
	Mode uint32 // permission bits with setuid, setgid and sticky (07777)
	UID  uint32
	GID  uint32
	// Size of a regular file or symlink; 0 for other types.
	Size int64
	// SHA256 of a regular file's content, hex.
	SHA256 string
	// Target of a symlink.
	Target string
	// Rdev of a device node.
	Rdev uint64
	// Nlink as lstat reports it (compared for non-directories by default).
	Nlink uint64
	// Xattrs by name, less the names the snapshot's xattr filter drops.
	Xattrs map[string]string
	// InoClass is the smallest path in the tree with the same (st_dev,
	// st_ino): equal classes mean hard links to one inode.
	InoClass string
	// Ino and Dev are the raw numbers; Diff never compares them.
	Ino   uint64
	Dev   uint64
	Mtime time.Time
	Atime time.Time
}

// Tree maps each path of a snapshot (see Entry.Path) to its entry.
type Tree map[string]Entry

// Paths returns the tree's paths, sorted.
func (t Tree) Paths() []string {
	ps := make([]string, 0, len(t))
	for p := range t {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Inos returns the raw inode number of every path.
func (t Tree) Inos() map[string]uint64 {
	m := make(map[string]uint64, len(t))
	for p, e := range t {
		m[p] = e.Ino
	}
	return m
}

// Filter returns the entries for which keep returns true. Inode classes are
// not recomputed.
func (t Tree) Filter(keep func(Entry) bool) Tree {
	out := make(Tree, len(t))
	for p, e := range t {
		if keep(e) {
			out[p] = e
		}
	}
	return out
}

// DefaultXattrFilter keeps every xattr except the overlay and unionmount
// bookkeeping (trusted.overlay.*, user.overlay.*, user.unionmount.*) and
// security.selinux, which the machine's policy sets.
func DefaultXattrFilter(name string) bool {
	for _, p := range []string{"trusted.overlay.", "user.overlay.", "user.unionmount."} {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	return name != "security.selinux"
}

// SnapshotOption adjusts Snapshot.
type SnapshotOption func(*snapshotConfig)

type snapshotConfig struct {
	keepXattr func(string) bool
}

// XattrFilter makes Snapshot record only the xattrs for which keep returns
// true (default DefaultXattrFilter). Pass func(string) bool { return true }
// to see every marker, e.g. in an upper directory.
func XattrFilter(keep func(name string) bool) SnapshotOption {
	return func(c *snapshotConfig) { c.keepXattr = keep }
}

// Snapshot walks root without following symlinks and records every path.
func Snapshot(root string, opts ...SnapshotOption) (Tree, error) {
	cfg := snapshotConfig{keepXattr: DefaultXattrFilter}
	for _, o := range opts {
		o(&cfg)
	}
	t := Tree{}
	if err := snapshotPath(t, &cfg, root, "."); err != nil {
		return nil, err
	}
	// Inode classes: the smallest path of each (dev, ino) group.
	type key struct{ dev, ino uint64 }
	class := map[key]string{}
	for _, p := range t.Paths() {
		e := t[p]
		if e.Type == TypeVanished {
			continue
		}
		k := key{e.Dev, e.Ino}
		if _, ok := class[k]; !ok {
			class[k] = p
		}
		e.InoClass = class[k]
		t[p] = e
	}
	return t, nil
}

func snapshotPath(t Tree, cfg *snapshotConfig, root, rel string) error {
	full := root
	if rel != "." {
		full = root + "/" + rel
	}
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		if errors.Is(err, unix.ENOENT) && rel != "." {
			t[rel] = Entry{Path: rel, Type: TypeVanished}
			return nil
		}
		return fmt.Errorf("snapshot %q: %w", rel, err)
	}
	e := Entry{
		Path:  rel,
		Mode:  st.Mode & 0o7777,
		UID:   st.Uid,
		GID:   st.Gid,
		Nlink: uint64(st.Nlink),
		Ino:   st.Ino,
		Dev:   st.Dev,
		Mtime: time.Unix(st.Mtim.Unix()).UTC(),
		Atime: time.Unix(st.Atim.Unix()).UTC(),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = TypeDir
	case unix.S_IFREG:
		e.Type = TypeFile
		e.Size = st.Size
		sum, err := hashFile(full)
		if err != nil {
			return fmt.Errorf("snapshot %q: %w", rel, err)
		}
		e.SHA256 = sum
	case unix.S_IFLNK:
		e.Type = TypeSymlink
		e.Size = st.Size
		target, err := os.Readlink(full)
		if err != nil {
			return fmt.Errorf("snapshot %q: %w", rel, err)
		}
		e.Target = target
	case unix.S_IFIFO:
		e.Type = TypeFIFO
	case unix.S_IFCHR:
		e.Type = TypeChar
		e.Rdev = st.Rdev
	case unix.S_IFBLK:
		e.Type = TypeBlock
		e.Rdev = st.Rdev
	case unix.S_IFSOCK:
		e.Type = TypeSocket
	default:
		return fmt.Errorf("snapshot %q: unknown file type %#o", rel, st.Mode&unix.S_IFMT)
	}
	xs, err := Xattrs(full)
	if err != nil {
		return fmt.Errorf("snapshot %q: %w", rel, err)
	}
	for name, v := range xs {
		if cfg.keepXattr(name) {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[name] = v
		}
	}
	t[rel] = e
	if e.Type != TypeDir {
		return nil
	}
	names, err := readDirNames(full)
	if err != nil {
		return fmt.Errorf("snapshot %q: %w", rel, err)
	}
	for _, name := range names {
		child := name
		if rel != "." {
			child = rel + "/" + name
		}
		if err := snapshotPath(t, cfg, root, child); err != nil {
			return err
		}
	}
	return nil
}

func hashFile(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func readDirNames(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// Xattrs returns every extended attribute of p (not following a final
// symlink) by name, unfiltered.
func Xattrs(p string) (map[string]string, error) {
	names, err := ListXattrs(p)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(names))
	for _, name := range names {
		v, err := getXattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed between list and get
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		m[name] = string(v)
	}
	return m, nil
}

// ListXattrs returns the names llistxattr(2) gives for p, sorted.
func ListXattrs(p string) ([]string, error) {
	names, err := xattr.List(p)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	return names, nil
}

func getXattr(p, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// Ino returns the inode number lstat(2) gives for p.
func Ino(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return 0, fmt.Errorf("lstat %q: %w", p, err)
	}
	return st.Ino, nil
}

// Inos walks root like Snapshot and returns the inode number of every path
// it can lstat, without hashing contents.
func Inos(root string) (map[string]uint64, error) {
	m := map[string]uint64{}
	var walk func(rel string) error
	walk = func(rel string) error {
		full := root
		if rel != "." {
			full = root + "/" + rel
		}
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			if errors.Is(err, unix.ENOENT) && rel != "." {
				return nil
			}
			return fmt.Errorf("lstat %q: %w", rel, err)
		}
		m[rel] = st.Ino
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil
		}
		names, err := readDirNames(full)
		if err != nil {
			return fmt.Errorf("read dir %q: %w", rel, err)
		}
		for _, n := range names {
			if err := walk(path.Join(rel, n)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return nil, err
	}
	return m, nil
}

// Dirent is one raw directory entry as getdents64(2) returns it.
type Dirent = dirent.Entry

// ReadDirents returns the raw entries of dir, "." and ".." excluded, in the
// order the filesystem returned them.
func ReadDirents(dir string) ([]Dirent, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open dir %q: %w", dir, err)
	}
	defer unix.Close(fd)
	out, err := dirent.ReadAll(fd)
	if err != nil {
		return nil, fmt.Errorf("getdents %q: %w", dir, err)
	}
	return out, nil
}

// Extent is a range of a file that holds data, as SEEK_DATA and SEEK_HOLE
// report it: [Off, Off+Len).
type Extent struct{ Off, Len int64 }

// DataExtents returns the data ranges of the regular file p in order, so
// that tests can check that holes survive (a filesystem without hole
// support reports one extent covering the whole file).
func DataExtents(p string) ([]Extent, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("data extents: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("data extents: %w", err)
	}
	var out []Extent
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return nil, fmt.Errorf("data extents %q: seek data at %d: %w", p, off, err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("data extents %q: seek hole at %d: %w", p, data, err)
		}
		out = append(out, Extent{Off: data, Len: hole - data})
		off = hole
	}
	return out, nil
}
