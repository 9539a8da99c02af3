package unionfs

import (
	"errors"
	"strings"

	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// layerDir is one layer's directory taking part in a merged directory.
type layerDir struct {
	layer int  // index into unionFS.layers
	xwh   bool // marked opaque=x: empty regular files may be xattr whiteouts
}

// probe is what one layer says about one name.
type probe int

const (
	// probeAbsent: the layer has no entry; ask the next layer.
	probeAbsent probe = iota
	// probeWhiteout: the layer deletes the name; the name is absent below too.
	probeWhiteout
	// probeFound: the layer has an entry; its lstat is filled in.
	probeFound
)

// resolution is the outcome of resolving a name across the layers of a
// merged directory (ovl_lookup in the kernel).
type resolution struct {
	st   unix.Stat_t // lstat of the topmost entry
	top  int         // layer index of the topmost entry
	dirs []layerDir  // for a directory: the layers merged, top first, up to an opaque one
}

// upper reports whether the topmost entry is in the upper layer.
func (r *resolution) upper(u *unionFS) bool { return u.hasUpper && r.top == 0 }

func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

// probe looks name up in one layer's directory rel.
//
// With needStat false only the file type bits of st.Mode need be filled:
// the caller already has the topmost entry and only asks whether this one
// is a directory.
func (u *unionFS) probe(l *layer, d layerDir, rel, name string, st *unix.Stat_t, needStat bool) (probe, error) {
	if c := u.cache; c != nil && !l.upper {
		return c.probe(u, l, d, rel, name, st, needStat)
	}
	ds := dirStat{l: l, rel: rel, fd: -1}
	defer ds.close()
	err := ds.lstat(name, st)
	if err != nil {
		if !isNotExist(err) {
			return probeAbsent, err
		}
		var wst unix.Stat_t
		if ds.lstat(whiteout.Prefix+name, &wst) == nil {
			return probeWhiteout, nil
		}
		return probeAbsent, nil
	}
	if whiteout.IsCharWhiteout(st) {
		return probeWhiteout, nil
	}
	if d.xwh && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 &&
		l.isXattrWhiteout(join(rel, name)) {
		return probeWhiteout, nil
	}
	return probeFound, nil
}

// dirStat stats names in one directory of a layer. In the upper, which
// users change concurrently, the directory is opened once with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS and the names are looked up in it;
// lowers are immutable and take the plain path.
type dirStat struct {
	l   *layer
	rel string
	fd  int // -1 until opened
	err error
}

func (s *dirStat) lstat(name string, st *unix.Stat_t) error {
	if !s.l.upper || s.rel == "" {
		return unix.Fstatat(s.l.fd, join(s.rel, name), st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if s.fd < 0 && s.err == nil {
		s.fd, s.err = s.l.openDir(s.rel, unix.O_PATH)
	}
	if s.err != nil {
		return s.err
	}
	return unix.Fstatat(s.fd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

func (s *dirStat) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// opacity reports whether the directory rel/name of a layer hides the
// directories below it: an opaque xattr, a ".wh..wh..opq" inside, or (AUFS)
// a ".wh.NAME" beside it in the same layer.
func (u *unionFS) opacity(l *layer, rel, name string) whiteout.Opacity {
	if c := u.cache; c != nil && !l.upper {
		return c.opacity(u, l, join(rel, name))
	}
	return u.opacityDirect(l, rel, name)
}

func (u *unionFS) opacityDirect(l *layer, rel, name string) whiteout.Opacity {
	p := join(rel, name)
	op := l.xattrOpacity(p)
	if op == whiteout.Opaque {
		return op
	}
	var st unix.Stat_t
	if l.lstat(join(p, whiteout.OpaqueFile), &st) == nil {
		return whiteout.Opaque
	}
	if name != "" && l.lstat(join(rel, whiteout.Prefix+name), &st) == nil {
		return whiteout.Opaque
	}
	return op
}

// xattrOpacity reads the opaque xattrs of a directory path, listing the
// names first so that the common case (no xattrs) costs one syscall.
func xattrOpacity(path string) whiteout.Opacity {
	var buf [1024]byte
	n, err := unix.Llistxattr(path, buf[:])
	if err == nil && n == 0 {
		return whiteout.NotOpaque
	}
	if err == nil && !strings.Contains(string(buf[:n]), "opaque") {
		return whiteout.NotOpaque
	}
	return whiteout.DirOpacityPath(path)
}

// resolve looks name up in the merged directory made of parent (the
// directory's layers, top first) at rel. It applies the overlayfs rules:
// the topmost entry wins; a whiteout ends the search; a non-directory hides
// everything below it; directories merge until an opaque one.
func (u *unionFS) resolve(parent []layerDir, rel, name string) (res resolution, found bool, err error) {
	return u.resolveFrom(parent, rel, name, 0)
}

// resolveFrom is resolve starting at layer from: the caller knows that the
// layers above it have no entry and delete nothing of that name (READDIRPLUS
// of a listing that merge just built).
func (u *unionFS) resolveFrom(parent []layerDir, rel, name string, from int) (res resolution, found bool, err error) {
	if whiteout.Hidden(name) {
		// ".wh." names are whiteouts and AUFS metadata: never an entry.
		return res, false, nil
	}
	var st unix.Stat_t
	lowerStart := 0
	if u.hasUpper && len(parent) > 0 && parent[0].layer == 0 {
		lowerStart = 1
	}
	for i, d := range parent {
		if d.layer < from {
			continue
		}
		if i == lowerStart && !found && u.cache != nil && len(parent)-lowerStart >= lowerIndexMin {
			// Deep stack: ask the merged index of the lower part which
			// layer holds the name, and start there.
			if li := u.cache.lowerIndex(u, parent[lowerStart:], rel); li != nil {
				l, ok := li.top[name]
				if !ok {
					return res, false, nil
				}
				if l > d.layer {
					from = l
					continue
				}
			}
		}
		l := u.layers[d.layer]
		p, err := u.probe(l, d, rel, name, &st, !found)
		if err != nil {
			return res, false, err
		}
		switch p {
		case probeAbsent:
			continue
		case probeWhiteout:
			return res, found, nil
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !found {
			res.st, res.top, found = st, d.layer, true
			if !isDir {
				return res, true, nil
			}
		} else if !isDir {
			// A non-directory below a directory is hidden, and so is
			// everything under it.
			return res, true, nil
		}
		if i == len(parent)-1 && u.cache != nil && !l.upper {
			// Nothing below to hide, and the name table knows its own
			// xattr whiteouts: opacity does not matter.
			res.dirs = append(res.dirs, layerDir{layer: d.layer})
			return res, true, nil
		}
		op := u.opacity(l, rel, name)
		res.dirs = append(res.dirs, layerDir{layer: d.layer, xwh: op == whiteout.XattrWhiteouts})
		if op == whiteout.Opaque {
			return res, true, nil
		}
	}
	return res, found, nil
}
