package unionfs

import (
	"github.com/unionmount/unionmount/internal/dirent"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// mergedEntry is one name of a merged directory listing.
type mergedEntry struct {
	name  string
	mode  uint32 // file type bits (S_IFMT)
	ino   uint64 // inode number as lookup reports it
	layer int    // layer of the topmost entry
	// shadowed: the upper entry hides an entry of the same name in a lower
	// layer, so it may be a copy-up whose inode number is the origin's.
	shadowed bool
}

// rawDirent is one entry of one layer's directory.
type rawDirent struct {
	name string
	typ  uint8 // DT_*
	ino  uint64
}

// readLayerDir lists the directory rel of a layer (without "." and "..").
func readLayerDir(l *layer, rel string) ([]rawDirent, error) {
	fd, err := l.openDir(rel, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []rawDirent
	err = dirent.Read(fd, func(e dirent.Entry) {
		out = append(out, rawDirent{name: e.Name, typ: e.Type, ino: e.Ino})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return 0
}

// listLayer returns one layer's part of a merged directory: the visible
// entries and the names the layer deletes. Whiteouts in every dialect are
// turned into deletions; AUFS metadata disappears.
func (u *unionFS) listLayer(d layerDir, pd *dirAt) (entries []rawDirent, deleted []string, err error) {
	l := u.layers[d.layer]
	if c := u.cache; c != nil && !l.upper {
		t, err := c.table(u, l, pd)
		if err != nil {
			return nil, nil, err
		}
		return t.entries, t.deleted, nil
	}
	fd, err := pd.fd(d.layer)
	if err != nil {
		return nil, nil, err
	}
	return classifyLayerDir(d, fd)
}

// classifyLayerDir reads a layer directory (the descriptor dir) and splits
// it into visible entries and deleted names.
func classifyLayerDir(d layerDir, dir int) (entries []rawDirent, deleted []string, err error) {
	raw, err := readLayerDir(&layer{fd: dir}, "")
	if err != nil {
		return nil, nil, err
	}
	entries = raw[:0]
	for _, e := range raw {
		if whiteout.IsMeta(e.name) {
			continue
		}
		if t, ok := whiteout.AUFSTarget(e.name); ok {
			deleted = append(deleted, t)
			continue
		}
		if e.typ == unix.DT_UNKNOWN || e.typ == unix.DT_CHR || (d.xwh && e.typ == unix.DT_REG) {
			var st unix.Stat_t
			if err := unix.Fstatat(dir, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if isNotExist(err) {
					continue
				}
				return nil, nil, err
			}
			e.typ = modeToDT(st.Mode)
			if whiteout.IsCharWhiteout(&st) {
				deleted = append(deleted, e.name)
				continue
			}
			if d.xwh && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 &&
				whiteout.IsXattrWhiteoutPath(procAt(dir, e.name)) {
				deleted = append(deleted, e.name)
				continue
			}
		}
		entries = append(entries, e)
	}
	return entries, deleted, nil
}

func modeToDT(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFLNK:
		return unix.DT_LNK
	case unix.S_IFCHR:
		return unix.DT_CHR
	case unix.S_IFBLK:
		return unix.DT_BLK
	case unix.S_IFIFO:
		return unix.DT_FIFO
	case unix.S_IFSOCK:
		return unix.DT_SOCK
	}
	return unix.DT_UNKNOWN
}

// merge builds the listing of the merged directory pd from its layers (top
// first): upper names, then each lower's names not yet seen; a name
// deleted by a layer hides it in every layer below; the first layer that
// has a name decides its type and inode number (ovl_dir_read_merged).
func (u *unionFS) merge(pd *dirAt) ([]mergedEntry, error) {
	var out []mergedEntry
	index := map[string]int{} // name -> position in out, or -1 when deleted
	for _, d := range pd.dirs {
		entries, deleted, err := u.listLayer(d, pd)
		if err != nil {
			return nil, err
		}
		l := u.layers[d.layer]
		for _, e := range entries {
			if i, seen := index[e.name]; seen {
				if i >= 0 && u.hasUpper && out[i].layer == 0 {
					out[i].shadowed = true
				}
				continue
			}
			index[e.name] = len(out)
			out = append(out, mergedEntry{
				name:  e.name,
				mode:  dtToMode(e.typ),
				ino:   u.inos.ino(l.dev, e.ino),
				layer: d.layer,
			})
		}
		for _, name := range deleted {
			if _, seen := index[name]; !seen {
				index[name] = -1
			}
		}
	}
	return out, nil
}
