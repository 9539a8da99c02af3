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

// probe looks name up in one layer's directory of the merged directory pd.
//
// With needStat false only the file type bits of st.Mode need be filled:
// the caller already has the topmost entry and only asks whether this one
// is a directory.
func (u *unionFS) probe(l *layer, d layerDir, pd *dirAt, name string, st *unix.Stat_t, needStat bool) (probe, error) {
	if c := u.cache; c != nil && !l.upper {
		return c.probe(u, l, d, pd, name, st, needStat)
	}
	pfd, err := pd.fd(d.layer)
	if err == nil {
		err = unix.Fstatat(pfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		if !isNotExist(err) {
			return probeAbsent, err
		}
		var wst unix.Stat_t
		if pfd >= 0 && unix.Fstatat(pfd, whiteout.Prefix+name, &wst, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return probeWhiteout, nil
		}
		return probeAbsent, nil
	}
	if whiteout.IsCharWhiteout(st) {
		return probeWhiteout, nil
	}
	if d.xwh && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 &&
		whiteout.IsXattrWhiteoutPath(procAt(pfd, name)) {
		return probeWhiteout, nil
	}
	return probeFound, nil
}

// opacity reports whether the directory name in the merged directory pd,
// in layer l, hides the directories below it: an opaque xattr, a
// ".wh..wh..opq" inside, or (AUFS) a ".wh.NAME" beside it in the same
// layer.
func (u *unionFS) opacity(l *layer, pd *dirAt, name string) whiteout.Opacity {
	if c := u.cache; c != nil && !l.upper {
		return c.opacity(u, l, pd, name)
	}
	pfd, err := pd.fd(l.index)
	if err != nil {
		return whiteout.NotOpaque
	}
	op := xattrOpacity(procAt(pfd, name))
	if op == whiteout.Opaque {
		return op
	}
	var st unix.Stat_t
	if unix.Fstatat(pfd, name+"/"+whiteout.OpaqueFile, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return whiteout.Opaque
	}
	if unix.Fstatat(pfd, whiteout.Prefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
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

// resolve looks name up in the merged directory pd. It applies the overlayfs rules:
// the topmost entry wins; a whiteout ends the search; a non-directory hides
// everything below it; directories merge until an opaque one.
func (u *unionFS) resolve(pd *dirAt, name string) (res resolution, found bool, err error) {
	return u.resolveFrom(pd, name, 0)
}

// resolveFrom is resolve starting at layer from: the caller knows that the
// layers above it have no entry and delete nothing of that name (READDIRPLUS
// of a listing that merge just built).
func (u *unionFS) resolveFrom(pd *dirAt, name string, from int) (res resolution, found bool, err error) {
	parent := pd.dirs
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
			if li := u.cache.lowerIndex(u, pd, parent[lowerStart:]); li != nil {
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
		p, err := u.probe(l, d, pd, name, &st, !found)
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
		op := u.opacity(l, pd, name)
		res.dirs = append(res.dirs, layerDir{layer: d.layer, xwh: op == whiteout.XattrWhiteouts})
		if op == whiteout.Opaque {
			return res, true, nil
		}
	}
	return res, found, nil
}
