package layer

import (
	"fmt"
	"os"
	"path"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/whiteout"
)

// ChangeKind is the letter docker diff prints.
type ChangeKind byte

const (
	Added   ChangeKind = 'A'
	Changed ChangeKind = 'C'
	Deleted ChangeKind = 'D'
)

// Change is one line of a container diff.
type Change struct {
	Kind ChangeKind
	Path string // absolute in the container: "/etc/passwd"
}

func (c Change) String() string { return string(c.Kind) + " " + c.Path }

// Changes lists what the upper directory changes in the view of lowers
// (layer directories, top first), as docker diff does: every entry of the
// upper is Added when the lowers have nothing at its path and Changed when
// they do; a whiteout is Deleted; an opaque directory over a lower one also
// lists the lower entries it hides as Deleted. Only the upper is walked;
// the lowers are asked about the paths found there, so the cost follows the
// size of the change, not of the image. The result is sorted by path.
func Changes(upper string, lowers []string) ([]Change, error) {
	v := NewView(lowers)
	var out []Change
	root, err := os.OpenRoot(upper)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	defer root.Close()
	var walk func(rel string) error
	walk = func(rel string) error {
		f, err := root.Open(rel)
		if err != nil {
			return fmt.Errorf("diff: %w", err)
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			return fmt.Errorf("diff: list %q: %w", rel, err)
		}
		dfd := int(f.Fd())
		xwh := whiteout.DirOpacity(dfd) == whiteout.XattrWhiteouts
		sort.Strings(names)
		for _, n := range names {
			p := path.Join(rel, n)
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("diff: stat %q: %w", p, err)
			}
			switch {
			case whiteout.IsMeta(n):
				continue
			case whiteout.Hidden(n):
				if t, ok := whiteout.AUFSTarget(n); ok {
					out = append(out, Change{Deleted, "/" + path.Join(rel, t)})
				}
				continue
			case whiteout.IsCharWhiteout(&st),
				xwh && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 && whiteout.IsXattrWhiteoutPath(fdPath(dfd, n)):
				out = append(out, Change{Deleted, "/" + p})
				continue
			}
			lower, err := v.Lookup(p)
			if err != nil {
				return err
			}
			kind := Added
			if lower.Found {
				kind = Changed
			}
			out = append(out, Change{kind, "/" + p})
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			if lower.Found && lower.Mode&unix.S_IFMT == unix.S_IFDIR && upperOpaque(dfd, n) {
				hidden, err := v.List(p)
				if err != nil {
					return err
				}
				for _, h := range hidden {
					if !exists(dfd, n, h) {
						out = append(out, Change{Deleted, "/" + path.Join(p, h)})
					}
				}
			}
			if err := walk(p); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func upperOpaque(dfd int, name string) bool {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return whiteout.DirOpacity(fd) == whiteout.Opaque || whiteout.HasOpaqueFile(fd)
}

func exists(dfd int, dir, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dfd, dir+"/"+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// View answers questions about the merged view of read-only layer
// directories (top first) with the overlayfs rules, one path at a time: the
// topmost entry wins, a whiteout ends the search, a non-directory hides
// everything below, directories merge until an opaque one. It reads only
// the layers' entries along the asked paths.
type View struct {
	layers []string
	dirs   map[string][]int // merged directory -> its layers, top first
}

// NewView returns the view of layers, top first.
func NewView(layers []string) *View {
	all := make([]int, len(layers))
	for i := range all {
		all[i] = i
	}
	return &View{layers: layers, dirs: map[string][]int{".": all}}
}

// Dir returns the path, in the layer that shows it, of the directory the
// view has at rel ("." for the root), if it has a directory there. It is
// what ApplyOptions.Lower wants.
func (v *View) Dir(rel string) (string, bool) {
	if len(v.layers) == 0 {
		return "", false
	}
	if rel == "." {
		return v.layers[0], true
	}
	e, err := v.Lookup(rel)
	if err != nil || !e.Found || e.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", false
	}
	return v.layers[e.Layer] + "/" + rel, true
}

// Entry is what a View has at a path.
type Entry struct {
	Found bool
	Mode  uint32 // st_mode of the topmost entry
	Layer int    // index of the layer holding it
}

// Lookup resolves the relative path p.
func (v *View) Lookup(p string) (Entry, error) {
	dir, name := path.Split(p)
	dir = path.Clean(dir)
	layers, err := v.dirLayers(dir)
	if err != nil || layers == nil {
		return Entry{}, err
	}
	e, _ := v.resolve(layers, dir, name)
	return e, nil
}

// List returns the names in the merged directory p (whiteouts and AUFS
// names removed), sorted.
func (v *View) List(p string) ([]string, error) {
	layers, err := v.dirLayers(p)
	if err != nil || layers == nil {
		return nil, err
	}
	seen := map[string]bool{}
	var names []string
	for _, l := range layers {
		ents, err := os.ReadDir(v.layers[l] + "/" + p)
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := e.Name()
			if seen[n] || whiteout.Hidden(n) {
				continue
			}
			seen[n] = true
			if e, _ := v.resolve(layers, p, n); e.Found {
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// dirLayers returns the layers merged at directory p, nil if p is not a
// directory of the view.
func (v *View) dirLayers(p string) ([]int, error) {
	if l, ok := v.dirs[p]; ok {
		return l, nil
	}
	parent, name := path.Split(p)
	parent = path.Clean(parent)
	pl, err := v.dirLayers(parent)
	if err != nil || pl == nil {
		v.dirs[p] = nil
		return nil, err
	}
	e, merged := v.resolve(pl, parent, name)
	if !e.Found || e.Mode&unix.S_IFMT != unix.S_IFDIR {
		merged = nil
	}
	v.dirs[p] = merged
	return merged, nil
}

// resolve looks name up in the directory dir merged from layers. For a
// directory it also returns the layers merged there.
func (v *View) resolve(layers []int, dir, name string) (Entry, []int) {
	var e Entry
	var merged []int
	rel := name
	if dir != "." {
		rel = dir + "/" + name
	}
	for _, l := range layers {
		base := v.layers[l]
		var st unix.Stat_t
		if err := unix.Lstat(base+"/"+rel, &st); err != nil {
			if isWhiteoutFile(base, dir, name) {
				break
			}
			continue
		}
		if whiteout.IsCharWhiteout(&st) {
			break
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 && whiteout.IsXattrWhiteoutPath(base+"/"+rel) {
			break
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !e.Found {
			e = Entry{Found: true, Mode: st.Mode, Layer: l}
			if !isDir {
				break
			}
		} else if !isDir {
			break
		}
		merged = append(merged, l)
		if dirOpaque(base, rel) {
			break
		}
	}
	return e, merged
}

func isWhiteoutFile(base, dir, name string) bool {
	var st unix.Stat_t
	p := base + "/" + whiteout.Prefix + name
	if dir != "." {
		p = base + "/" + dir + "/" + whiteout.Prefix + name
	}
	return unix.Lstat(p, &st) == nil
}

func dirOpaque(base, rel string) bool {
	p := base + "/" + rel
	if whiteout.DirOpacityPath(p) == whiteout.Opaque {
		return true
	}
	var st unix.Stat_t
	return unix.Lstat(p+"/"+whiteout.OpaqueFile, &st) == nil
}
