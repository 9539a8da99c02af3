package unionfs

import (
	"strconv"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// lookupCache holds immutable facts of lower-layer directories: each
// directory's name table (visible entries, deleted names, opacity). Lower
// layers do not change while mounted, so an entry never goes stale; it is
// a hint all the same: ristretto may drop or refuse any Set, and a miss
// reads the directory again.
type lookupCache struct {
	c *ristretto.Cache[string, *dirTable]
}

// dirTable is one lower directory, classified.
type dirTable struct {
	entries []rawDirent
	deleted []string
	index   map[string]int      // name -> position in entries
	gone    map[string]struct{} // names this directory deletes
	opacity whiteout.Opacity    // from its xattrs and a ".wh..wh..opq" inside
	lower   *lowerIndex         // set in the entries of lowerIndex only
}

func newLookupCache(maxEntries int64) (*lookupCache, error) {
	if maxEntries <= 0 {
		return nil, nil
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, *dirTable]{
		NumCounters:        max(maxEntries, 1<<12),
		MaxCost:            maxEntries,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	return &lookupCache{c: c}, nil
}

func cacheKey(l *layer, rel string) string {
	return strconv.Itoa(l.index) + "\x00" + rel
}

// opacityKey holds just a directory's opacity, for directories whose
// table was not read.
func opacityKey(l *layer, rel string) string {
	return "o" + strconv.Itoa(l.index) + "\x00" + rel
}

// table returns the classified directory of lower layer l in the merged
// directory pd.
func (c *lookupCache) table(u *unionFS, l *layer, pd *dirAt) (*dirTable, error) {
	key := cacheKey(l, pd.path())
	if t, ok := c.c.Get(key); ok {
		return t, nil
	}
	fd, err := pd.fd(l.index)
	if err != nil {
		return nil, err
	}
	t := &dirTable{opacity: xattrOpacity(procAt(fd, "."))}
	t.entries, t.deleted, err = classifyLayerDir(layerDir{layer: l.index, xwh: t.opacity == whiteout.XattrWhiteouts}, fd)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if t.opacity != whiteout.Opaque && unix.Fstatat(fd, whiteout.OpaqueFile, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		t.opacity = whiteout.Opaque
	}
	t.index = make(map[string]int, len(t.entries))
	for i, e := range t.entries {
		t.index[e.name] = i
	}
	t.gone = make(map[string]struct{}, len(t.deleted))
	for _, name := range t.deleted {
		t.gone[name] = struct{}{}
	}
	c.set(key, t, int64(len(t.entries)+len(t.deleted)+1))
	return t, nil
}

// set stores a table and waits until a Get sees it. Ristretto applies
// Sets from a buffer; without the wait, the lookups that follow the
// listing of a directory (READDIRPLUS) missed and read it again.
func (c *lookupCache) set(key string, t *dirTable, cost int64) {
	if c.c.Set(key, t, cost) {
		c.c.Wait()
	}
}

// probe is unionFS.probe served from the name table.
func (c *lookupCache) probe(u *unionFS, l *layer, d layerDir, pd *dirAt, name string, st *unix.Stat_t, needStat bool) (probe, error) {
	t, err := c.table(u, l, pd)
	if err != nil {
		if isNotExist(err) {
			return probeAbsent, nil
		}
		return probeAbsent, err
	}
	if i, ok := t.index[name]; ok {
		if !needStat && t.entries[i].typ != unix.DT_UNKNOWN {
			st.Mode = dtToMode(t.entries[i].typ)
			return probeFound, nil
		}
		fd, err := pd.fd(l.index)
		if err == nil {
			err = unix.Fstatat(fd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return probeAbsent, err
		}
		return probeFound, nil
	}
	if _, ok := t.gone[name]; ok {
		return probeWhiteout, nil
	}
	return probeAbsent, nil
}

// opacity is unionFS.opacity served from the name tables.
//
// It does not list the directory: a READDIRPLUS of a parent asks for the
// opacity of every child directory, and most of them are never opened.
func (c *lookupCache) opacity(u *unionFS, l *layer, pd *dirAt, name string) whiteout.Opacity {
	var op whiteout.Opacity
	rel := join(pd.path(), name)
	if t, ok := c.c.Get(cacheKey(l, rel)); ok {
		op = t.opacity
	} else if t, ok := c.c.Get(opacityKey(l, rel)); ok {
		op = t.opacity
	} else {
		pfd, err := pd.fd(l.index)
		if err != nil {
			return whiteout.NotOpaque
		}
		op = xattrOpacity(procAt(pfd, name))
		var st unix.Stat_t
		if op != whiteout.Opaque && unix.Fstatat(pfd, name+"/"+whiteout.OpaqueFile, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			op = whiteout.Opaque
		}
		c.set(opacityKey(l, rel), &dirTable{opacity: op}, 1)
	}
	if op == whiteout.Opaque {
		return op
	}
	// AUFS: ".wh.NAME" beside a directory NAME of the same layer hides
	// the layers below.
	if pt, err := c.table(u, l, pd); err == nil {
		if _, ok := pt.gone[name]; ok {
			return whiteout.Opaque
		}
	}
	return op
}

// lowerIndexMin is the number of lower layers from which a lookup asks
// the merged index of a directory's lower part instead of each layer's
// name table in turn. Two, so that the differential tests (stacks of two
// and three lowers) check the index against the kernel.
const lowerIndexMin = 2

// lowerIndex is the lower part of a merged directory, merged: for each
// name it shows, the layer of the topmost entry. The lowers never change
// while mounted, so neither does it. With it, a name at the bottom of a
// deep stack costs one probe, not one per layer.
type lowerIndex struct {
	top map[string]int
}

// lowerIndex returns the merged index of the lower directories dirs of
// pd (top first, ending where the merge ends), or nil when a layer's table
// cannot be read (the caller then probes layer by layer).
func (c *lookupCache) lowerIndex(u *unionFS, pd *dirAt, dirs []layerDir) *lowerIndex {
	key := "L" + strconv.Itoa(dirs[0].layer) + "\x00" + strconv.Itoa(len(dirs)) + "\x00" + pd.path()
	if t, ok := c.c.Get(key); ok && t.lower != nil {
		return t.lower
	}
	li := &lowerIndex{top: map[string]int{}}
	gone := map[string]struct{}{}
	for _, d := range dirs {
		t, err := c.table(u, u.layers[d.layer], pd)
		if err != nil {
			return nil
		}
		for _, e := range t.entries {
			if _, ok := li.top[e.name]; ok {
				continue
			}
			if _, ok := gone[e.name]; ok {
				continue
			}
			li.top[e.name] = d.layer
		}
		for _, name := range t.deleted {
			if _, ok := li.top[name]; !ok {
				gone[name] = struct{}{}
			}
		}
	}
	c.set(key, &dirTable{lower: li}, int64(len(li.top)+1))
	return li
}

func (c *lookupCache) close() {
	if c != nil {
		c.c.Close()
	}
}
