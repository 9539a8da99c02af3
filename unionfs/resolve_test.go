package unionfs

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testenv"
)

// mkLayers builds layers from specs: "path" is a dir when it ends in "/",
// "path=content" a file, "path@" a char 0/0 whiteout, "path!" an opaque dir
// (trusted.overlay.opaque=y), "path~" an AUFS ".wh." whiteout, "path%" an
// AUFS opaque dir, "path->target" a symlink.
func mkLayers(t *testing.T, specs ...[]string) []string {
	t.Helper()
	root := t.TempDir()
	var dirs []string
	for i, spec := range specs {
		d := filepath.Join(root, "l"+string(rune('0'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range spec {
			var err error
			switch {
			case strings.HasSuffix(s, "/"):
				err = os.MkdirAll(filepath.Join(d, s), 0o755)
			case strings.HasSuffix(s, "!"):
				p := filepath.Join(d, strings.TrimSuffix(s, "!"))
				if err = os.MkdirAll(p, 0o755); err == nil {
					err = unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0)
				}
			case strings.HasSuffix(s, "%"):
				p := filepath.Join(d, strings.TrimSuffix(s, "%"))
				if err = os.MkdirAll(p, 0o755); err == nil {
					err = os.WriteFile(filepath.Join(p, ".wh..wh..opq"), nil, 0o644)
				}
			case strings.HasSuffix(s, "@"):
				p := filepath.Join(d, strings.TrimSuffix(s, "@"))
				os.MkdirAll(filepath.Dir(p), 0o755)
				err = unix.Mknod(p, unix.S_IFCHR, 0)
			case strings.HasSuffix(s, "~"):
				p := filepath.Join(d, strings.TrimSuffix(s, "~"))
				os.MkdirAll(filepath.Dir(p), 0o755)
				err = os.WriteFile(filepath.Join(filepath.Dir(p), ".wh."+filepath.Base(p)), nil, 0o644)
			case strings.Contains(s, "->"):
				name, target, _ := strings.Cut(s, "->")
				p := filepath.Join(d, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				err = os.Symlink(target, p)
			default:
				name, content, _ := strings.Cut(s, "=")
				p := filepath.Join(d, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				err = os.WriteFile(p, []byte(content), 0o644)
			}
			if err != nil {
				t.Fatalf("layer %d %q: %v", i, s, err)
			}
		}
		dirs = append(dirs, d)
	}
	return dirs
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root: the fixtures make char 0/0 whiteouts and trusted.* xattrs")
	}
}

// view resolves a slash path through the union and lists it, like a mount
// would, without FUSE.
type view struct {
	t *testing.T
	u *unionFS
}

func newView(t *testing.T, cache int64, lowers []string) *view {
	u, err := newUnion(Options{Lowers: lowers, LookupCacheEntries: cache, SquashUID: -1, SquashGID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.close)
	return &view{t: t, u: u}
}

func (v *view) resolvePath(p string) (resolution, bool) {
	res, _, ok := v.walk(p)
	return res, ok
}

// walk resolves p one name at a time from the root, as lookups through a
// mount would, and returns the last node (not known to FUSE).
func (v *view) walk(p string) (resolution, *node, bool) {
	n := v.u.root
	var res resolution
	if p == "" {
		return res, n, true
	}
	for _, name := range strings.Split(p, "/") {
		pd := v.u.at(n)
		r, found, err := v.u.resolve(pd, name)
		pd.done()
		if err != nil {
			v.t.Fatalf("resolve %q: %v", p, err)
		}
		if !found {
			return r, nil, false
		}
		child := v.u.newNode(r.top, r.dirs)
		child.parent, child.name = n, name
		res, n = r, child
	}
	return res, n, true
}

// dir returns the merged directory p for merge.
func (v *view) dir(p string) *dirAt {
	res, n, ok := v.walk(p)
	if !ok {
		v.t.Fatalf("list %q: not found", p)
	}
	if p == "" {
		return v.u.at(n)
	}
	return v.u.atDirs(n, res.dirs)
}

func (v *view) list(p string) []string {
	pd := v.dir(p)
	defer pd.done()
	entries, err := v.u.merge(pd)
	if err != nil {
		v.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.name)
	}
	sort.Strings(names)
	return names
}

func (v *view) content(p string) string {
	res, ok := v.resolvePath(p)
	if !ok {
		return "<absent>"
	}
	b, err := os.ReadFile(filepath.Join(v.u.layers[res.top].path, p))
	if err != nil {
		v.t.Fatal(err)
	}
	return string(b)
}

// TestUnionRules checks the overlayfs rules on plain directories, with
// the name-table cache on and off (the two code paths must agree).
func TestUnionRules(t *testing.T) {
	requireRoot(t)
	lowers := mkLayers(t,
		// top
		[]string{"a=top", "gone@", "aufsgone~", "d/", "d/new=1", "d/del@", "opq!", "opq/only=o",
			"aopq%", "aopq/only=a", "filedir=now a file", "sym->a", "deep/x/y/", "deep/x/y/z=z"},
		// middle
		[]string{"a=mid", "d/mid=m", "d/del=del", "opq/hidden=h", "aopq/hidden=h", "filedir/", "filedir/child=c",
			"gone/", "gone/x=x", "back=mid"},
		// bottom
		[]string{"a=bottom", "gone=bottom", "aufsgone=bottom", "d/bottom=b", "opq/hidden2=h", "back@", "deep/x/w=w"},
	)
	for _, cache := range []int64{0, 1 << 16} {
		v := newView(t, cache, lowers)
		if got := v.content("a"); got != "top" {
			t.Errorf("cache=%d a = %q, want top (top layer wins)", cache, got)
		}
		if _, ok := v.resolvePath("gone"); ok {
			t.Errorf("cache=%d gone: char 0/0 whiteout does not hide lower dir", cache)
		}
		if _, ok := v.resolvePath("aufsgone"); ok {
			t.Errorf("cache=%d aufsgone: .wh. whiteout does not hide", cache)
		}
		if _, ok := v.resolvePath(".wh.aufsgone"); ok {
			t.Errorf("cache=%d .wh.aufsgone shows", cache)
		}
		if got := v.content("back"); got != "mid" {
			t.Errorf("cache=%d back = %q: a whiteout hides only what is below it", cache, got)
		}
		if got, want := strings.Join(v.list("d"), " "), "bottom mid new"; got != want {
			t.Errorf("cache=%d d = %q, want %q (merge, whiteout removes del)", cache, got, want)
		}
		if got, want := strings.Join(v.list("opq"), " "), "only"; got != want {
			t.Errorf("cache=%d opq = %q, want %q (xattr opaque)", cache, got, want)
		}
		if got, want := strings.Join(v.list("aopq"), " "), "only"; got != want {
			t.Errorf("cache=%d aopq = %q, want %q (.wh..wh..opq)", cache, got, want)
		}
		if got := v.content("filedir"); got != "now a file" {
			t.Errorf("cache=%d filedir = %q: a file hides the dir below", cache, got)
		}
		if _, ok := v.resolvePath("filedir/child"); ok {
			t.Errorf("cache=%d filedir/child visible under a file", cache)
		}
		if got, want := strings.Join(v.list("deep/x"), " "), "w y"; got != want {
			t.Errorf("cache=%d deep/x = %q, want %q", cache, got, want)
		}
		if got, want := strings.Join(v.list(""), " "), "a aopq back d deep filedir opq sym"; got != want {
			t.Errorf("cache=%d root = %q, want %q", cache, got, want)
		}
		res, _ := v.resolvePath("d")
		if len(res.dirs) != 3 {
			t.Errorf("cache=%d d merges %d layers, want 3", cache, len(res.dirs))
		}
	}
}

// TestMergeInodes: a listing's inode numbers are what lookup reports.
func TestMergeInodes(t *testing.T) {
	requireRoot(t)
	lowers := mkLayers(t, []string{"a=1", "d/", "d/x=x"}, []string{"a=2", "b=b", "d/y=y"})
	v := newView(t, 1<<10, lowers)
	for _, dir := range []string{"", "d"} {
		pd := v.dir(dir)
		entries, err := v.u.merge(pd)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			res, ok := v.resolvePath(join(dir, e.name))
			if !ok {
				t.Fatalf("%s listed but not found", e.name)
			}
			if ino := v.u.inoOf(&res, pd, e.name); ino != e.ino {
				t.Errorf("%s: d_ino %d != st_ino %d", join(dir, e.name), e.ino, ino)
			}
		}
		pd.done()
	}
}

func TestInoMapper(t *testing.T) {
	m := newInoMapper(10)
	if got := m.ino(10, 1234); got != 1234 {
		t.Errorf("same fs: %d, want the real number", got)
	}
	a, b := m.ino(11, 1234), m.ino(12, 1234)
	if a == b || a == 1234 || b == 1234 {
		t.Errorf("other filesystems must get distinct numbers: %d %d", a, b)
	}
	if m.ino(11, 1234) != a {
		t.Error("not stable")
	}
	if x, y := m.ino(10, 1), m.ino(10, 1<<60); x == 1 || x == y {
		t.Errorf("reserved/huge numbers must go to the overflow table: %d %d", x, y)
	}
}

// TestLowerPathDetached: podman detaches the lower mounts it hands over
// right after the mount program returns, so layers must be reached through
// their fds, xattrs (opaque markers) included.
func TestLowerPathDetached(t *testing.T) {
	requireRoot(t)
	lowers := mkLayers(t, []string{"d!", "d/top=1"}, []string{"d/", "d/hidden=1"})
	for _, cache := range []int64{0, 1 << 10} {
		bind := filepath.Join(t.TempDir(), "bind")
		if err := os.Mkdir(bind, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(lowers[0], bind, "", unix.MS_BIND, ""); err != nil {
			testenv.Skipf(t, "bind mount: %v", err)
		}
		v := newView(t, cache, []string{bind, lowers[1]})
		if err := unix.Unmount(bind, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(v.list("d"), " "); got != "top" {
			t.Errorf("cache=%d: d lists %q after the lower's path went away, want top (d is opaque)", cache, got)
		}
	}
}
