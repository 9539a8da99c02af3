package layer

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/unionmount/unionmount/internal/xattr"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// WriteTar writes the directory dir (a container's upper, or a stored
// layer: both are in the on-disk format the union reads) as an OCI layer
// tar:
//
//   - a char 0/0 whiteout, an AUFS ".wh.NAME" file, or an xattr whiteout
//     in an opaque=x directory becomes the entry ".wh.NAME";
//   - an opaque directory (trusted/user.overlay.opaque=y,
//     user.fuseoverlayfs.opaque, or a ".wh..wh..opq" file) gets a
//     ".wh..wh..opq" entry right after its own, before its contents;
//   - hard links within dir become link entries to the first path;
//   - xattrs are kept as SCHILY.xattr PAX records, except the union's own
//     (*.overlay.*, *.unionmount.*, user.fuseoverlayfs.*);
//   - sockets are skipped (tar has no type for them), as docker does.
//
// Entries come in a stable order (names sorted bytewise, a directory before
// its contents), with times truncated to seconds, so one tree always gives
// the same bytes. The root directory itself is not written. Nothing is
// followed: dir is opened through its os.Root, everything below with *at
// calls (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW) on its parent's descriptor.
func WriteTar(w io.Writer, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("write layer tar: %w", err)
	}
	defer root.Close()
	tw := tar.NewWriter(w)
	wr := &tarWriter{root: root, tw: tw, links: map[[2]uint64]string{}}
	if err := wr.dir("."); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write layer tar: %w", err)
	}
	return nil
}

type tarWriter struct {
	root  *os.Root
	tw    *tar.Writer
	links map[[2]uint64]string // (dev, ino) -> first path written
}

// dir writes the entries of the directory rel ("." for the root), sorted.
// Its descriptor stays open while its subdirectories are written, so at
// most one descriptor per level is open.
func (w *tarWriter) dir(rel string) error {
	f, err := w.root.Open(rel)
	if err != nil {
		return fmt.Errorf("write layer tar: %w", err)
	}
	defer f.Close()
	return w.dirFd(rel, int(f.Fd()), f)
}

func (w *tarWriter) dirFd(rel string, dfd int, f *os.File) error {
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("write layer tar: list %q: %w", rel, err)
	}
	sort.Strings(names)
	xwhDir := whiteout.DirOpacity(dfd) == whiteout.XattrWhiteouts
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("write layer tar: stat %q: %w", path.Join(rel, n), err)
		}
		p := path.Join(rel, n)
		switch {
		case n == whiteout.OpaqueFile:
			continue // written with its directory
		case whiteout.IsMeta(n):
			continue // AUFS bookkeeping
		case whiteout.Hidden(n):
			if _, ok := whiteout.AUFSTarget(n); ok {
				if err := w.whiteoutEntry(p, &st); err != nil {
					return err
				}
			}
			continue
		case whiteout.IsCharWhiteout(&st),
			xwhDir && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 &&
				whiteout.IsXattrWhiteoutPath(fdPath(dfd, n)):
			if err := w.whiteoutEntry(path.Join(rel, whiteout.Prefix+n), &st); err != nil {
				return err
			}
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := w.entry(dfd, n, p, &st); err != nil {
				return err
			}
			continue
		}
		cfd, err := unix.Openat(dfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("write layer tar: open %q: %w", p, err)
		}
		cf := os.NewFile(uintptr(cfd), p)
		err = w.dirEntry(dfd, cfd, n, p, &st)
		if err == nil {
			err = w.dirFd(p, cfd, cf)
		}
		cf.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// fdPath names the entry name of the directory open at dfd without
// resolving anything but that one component.
func fdPath(dfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + name
}

func (w *tarWriter) whiteoutEntry(name string, st *unix.Stat_t) error {
	return w.writeHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     0o600,
		Uid:      int(st.Uid),
		Gid:      int(st.Gid),
		ModTime:  time.Unix(st.Mtim.Unix()).Truncate(time.Second),
		Format:   tar.FormatPAX,
	})
}

func header(p string, st *unix.Stat_t) *tar.Header {
	return &tar.Header{
		Name:    p,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()).Truncate(time.Second),
		Format:  tar.FormatPAX,
	}
}

// dirEntry writes the directory p (open at cfd, named n in dfd) and, when
// it is opaque, the ".wh..wh..opq" marker right after it.
func (w *tarWriter) dirEntry(dfd, cfd int, n, p string, st *unix.Stat_t) error {
	hdr := header(p+"/", st)
	hdr.Typeflag = tar.TypeDir
	if err := w.xattrs(fdPath(dfd, n), p, hdr); err != nil {
		return err
	}
	if err := w.writeHeader(hdr); err != nil {
		return err
	}
	if whiteout.DirOpacity(cfd) != whiteout.Opaque && !whiteout.HasOpaqueFile(cfd) {
		return nil
	}
	return w.writeHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     p + "/" + whiteout.OpaqueFile,
		Mode:     0o600,
		ModTime:  hdr.ModTime,
		Format:   tar.FormatPAX,
	})
}

// entry writes the non-directory p, named n in the directory dfd.
func (w *tarWriter) entry(dfd int, n, p string, st *unix.Stat_t) error {
	hdr := header(p, st)
	typ := st.Mode & unix.S_IFMT
	if st.Nlink > 1 {
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if first, ok := w.links[key]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			return w.writeHeader(hdr)
		}
		w.links[key] = p
	}
	switch typ {
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		buf := make([]byte, unix.PathMax)
		k, err := unix.Readlinkat(dfd, n, buf)
		if err != nil {
			return fmt.Errorf("write layer tar: readlink %q: %w", p, err)
		}
		hdr.Linkname = string(buf[:k])
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if typ == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
	case unix.S_IFSOCK:
		return nil
	default:
		return fmt.Errorf("write layer tar: %q has unknown type %o", p, typ)
	}
	if err := w.xattrs(fdPath(dfd, n), p, hdr); err != nil {
		return err
	}
	if err := w.writeHeader(hdr); err != nil {
		return err
	}
	if typ == unix.S_IFREG && st.Size > 0 {
		return w.content(dfd, n, p, st.Size)
	}
	return nil
}

func (w *tarWriter) writeHeader(hdr *tar.Header) error {
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write layer tar: %q: %w", hdr.Name, err)
	}
	return nil
}

func (w *tarWriter) content(dfd int, n, p string, size int64) error {
	fd, err := unix.Openat(dfd, n, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("write layer tar: open %q: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	k, err := io.Copy(w.tw, io.LimitReader(f, size))
	if err != nil {
		return fmt.Errorf("write layer tar: %q: %w", p, err)
	}
	if k != size {
		return fmt.Errorf("write layer tar: %q shrank while it was read (%d of %d bytes)", p, k, size)
	}
	return nil
}

// xattrs fills the SCHILY.xattr records of the entry at lp (a
// /proc/self/fd path), less the union's own.
func (w *tarWriter) xattrs(lp, p string, hdr *tar.Header) error {
	names, err := listXattrs(lp)
	if err != nil {
		return fmt.Errorf("write layer tar: list xattrs of %q: %w", p, err)
	}
	for _, n := range names {
		if whiteout.IsPrivateXattr(n) || strings.Contains(n, ".overlay.") {
			continue
		}
		v, err := getXattr(lp, n)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return fmt.Errorf("write layer tar: xattr %s of %q: %w", n, p, err)
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxXattr+n] = string(v)
	}
	return nil
}

// listXattrs lists p's xattr names; a filesystem without xattrs has none.
func listXattrs(p string) ([]string, error) {
	names, err := xattr.List(p)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	return names, err
}

func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
