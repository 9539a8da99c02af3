package oracle

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
)

var subject = flag.String("oracle.subject", "unionmount",
	"the union under test: unionmount (the binary from ./cmd/unionmount or $UNIONMOUNT_BIN) or fuse-overlayfs")

// plainLayerNames keeps ':', ',' and '\' out of layer dir names, for
// fuse-overlayfs, which has no escapes in lowerdir.
var plainLayerNames bool

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		switch *subject {
		case "unionmount":
		case "fuse-overlayfs":
			dir, err := os.MkdirTemp("", "oracle-shim-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			shim, err := fstest.WriteFuseOverlayfsShim(dir)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			os.Setenv("UNIONMOUNT_BIN", shim)
			plainLayerNames = true
		default:
			fmt.Fprintf(os.Stderr, "-oracle.subject=%q: want unionmount or fuse-overlayfs\n", *subject)
			return 2
		}
		defer fstest.RemoveBinary()
		return m.Run()
	}()
	os.Exit(code)
}

// knownDifference is a deliberate difference between unionmount and kernel
// overlayfs; docs/semantics.md lists the same ones. drop removes, from the
// kernel's snapshot, the entries that differ for that reason.
type knownDifference struct {
	name   string
	reason string
	drop   func(kernel fstest.Entry) bool
}

var knownDifferences = []knownDifference{
	{
		name: "whiteouts listed by readdir",
		reason: "kernel overlayfs passes the listing of a directory that comes from a single layer " +
			"straight through, and when it merges a listing it does not look for xattr whiteouts in " +
			"the layer that is last in the parent's lower stack (it never reads the opaque=x marker " +
			"there), so such whiteouts show in readdir and then fail lstat with ENOENT; " +
			"unionmount never lists a whiteout",
		drop: func(e fstest.Entry) bool { return e.Type == fstest.TypeVanished },
	},
	{
		name: "user.overlay.* xattrs hidden on a trusted.* mount",
		reason: "kernel overlayfs hides only the namespace it uses (trusted.overlay.* as root, " +
			"user.overlay.* with userxattr); unionmount reads markers of both namespaces in every " +
			"mount and so hides both (escaped *.overlay.overlay.* names show as the kernel shows them). " +
			"The snapshots never record *.overlay.* names; checkOverlayXattrs checks them",
		drop: func(fstest.Entry) bool { return false },
	},
	{
		name: "user.fuseoverlayfs.* xattrs hidden",
		reason: "the kernel does not read fuse-overlayfs' opaque marker and would show it as a plain " +
			"user xattr; unionmount reads it as a marker and hides it, as fuse-overlayfs does. The " +
			"dialect tests compare with the kernel's own dialect, where the marker does not exist, " +
			"so the union must not show it",
		drop: func(fstest.Entry) bool { return false },
	},
}

// mountOpts are the optional parts of a comparison.
type mountOpts struct {
	// kernelUpper and unionUpper are separate copies of one upper dir.
	kernelUpper, unionUpper string
	// kernelOpts are extra overlayfs options (userxattr).
	kernelOpts []string
	// unionArgs are extra unionmount flags.
	unionArgs []string
}

// compareStack mounts the kernel over kernelStack and the subject over
// unionStack (the same model, possibly in another dialect) and reports
// every difference.
func compareStack(t *testing.T, kernelStack, unionStack *stack, o mountOpts) {
	t.Helper()
	kernelUpper, unionUpper, kernelOpts := o.kernelUpper, o.unionUpper, o.kernelOpts
	fstest.RequireOverlay(t)
	fstest.RequireFUSE(t)
	kmnt, umnt := t.TempDir(), t.TempDir()
	var kwork, uwork string
	if kernelUpper != "" {
		kwork, uwork = t.TempDir(), t.TempDir()
	}
	fstest.MountKernelOverlay(t, kernelStack.dirs, kernelUpper, kwork, kmnt, kernelOpts...)
	var upperBefore fstest.Tree
	if unionUpper != "" {
		var err error
		if upperBefore, err = fstest.Snapshot(unionUpper); err != nil {
			t.Fatal(err)
		}
	}
	fstest.MountUnion(t, unionStack.dirs, unionUpper, uwork, umnt, o.unionArgs...)

	ktree, err := fstest.Snapshot(kmnt)
	if err != nil {
		t.Fatalf("kernel: %v", err)
	}
	utree, err := fstest.Snapshot(umnt)
	if err != nil {
		t.Fatalf("%s: %v", *subject, err)
	}
	for _, k := range knownDifferences {
		ktree = ktree.Filter(func(e fstest.Entry) bool { return !k.drop(e) })
	}
	if len(ktree) < 2 {
		t.Fatalf("kernel mount shows %d entries: the stack is empty or the mount broken", len(ktree))
	}
	reportDiff(t, fstest.Diff(ktree, utree))
	checkNoVanished(t, utree)
	checkExtents(t, kmnt, umnt, ktree)
	checkInodes(t, umnt, utree)
	checkOverlayXattrs(t, kmnt, umnt, ktree, utree, slices.Contains(kernelOpts, "userxattr"))
	if unionUpper != "" {
		after, err := fstest.Snapshot(unionUpper)
		if err != nil {
			t.Fatal(err)
		}
		if d := fstest.Diff(upperBefore, after, fstest.CompareFields(fstest.FieldDirNlink)); len(d) > 0 {
			t.Errorf("reading through the mount changed the upper:\n%s", strings.Join(d, "\n"))
		}
	}
	t.Logf("compared %d paths", len(ktree))
}

// reportDiff fails the test with the first lines of d (kernel first).
func reportDiff(t *testing.T, d []string) {
	t.Helper()
	if len(d) == 0 {
		return
	}
	const max = 60
	more := ""
	if len(d) > max {
		more = fmt.Sprintf("\n... and %d more", len(d)-max)
		d = d[:max]
	}
	t.Errorf("%s differs from kernel overlayfs (kernel value first):\n%s%s", *subject, strings.Join(d, "\n"), more)
}

func checkNoVanished(t *testing.T, tree fstest.Tree) {
	t.Helper()
	for _, p := range tree.Paths() {
		if tree[p].Type == fstest.TypeVanished {
			t.Errorf("%q: listed by readdir but lstat says ENOENT", p)
		}
	}
}

// checkExtents compares the data and holes (lseek SEEK_DATA/SEEK_HOLE) of
// every regular file.
func checkExtents(t *testing.T, kmnt, umnt string, tree fstest.Tree) {
	t.Helper()
	var d []string
	for _, p := range tree.Paths() {
		if e := tree[p]; e.Type != fstest.TypeFile || e.Size == 0 {
			continue
		}
		k, err := fstest.DataExtents(filepath.Join(kmnt, p))
		if err != nil {
			t.Errorf("kernel: %v", err)
			continue
		}
		u, err := fstest.DataExtents(filepath.Join(umnt, p))
		if err != nil {
			d = append(d, fmt.Sprintf("%q: %v", p, err))
			continue
		}
		if !slices.Equal(k, u) {
			d = append(d, fmt.Sprintf("%q: data extents %v != %v", p, k, u))
		}
	}
	reportDiff(t, d)
}

// checkInodes walks the mount a second time, by raw getdents, and checks
// that every entry's d_ino equals its st_ino now and its st_ino in tree (the
// first walk).
func checkInodes(t *testing.T, mnt string, tree fstest.Tree) {
	t.Helper()
	bad := 0
	fail := func(format string, args ...any) {
		if bad++; bad <= 20 {
			t.Errorf(format, args...)
		}
	}
	for _, dir := range tree.Paths() {
		if tree[dir].Type != fstest.TypeDir {
			continue
		}
		ents, err := fstest.ReadDirents(filepath.Join(mnt, dir))
		if err != nil {
			fail("%v", err)
			continue
		}
		for _, de := range ents {
			p := de.Name
			if dir != "." {
				p = dir + "/" + de.Name
			}
			if e, ok := tree[p]; !ok || e.Type == fstest.TypeVanished {
				continue // filtered out, or reported by checkNoVanished
			}
			ino, err := fstest.Ino(filepath.Join(mnt, p))
			switch {
			case err != nil:
				fail("%q: listed by getdents: %v", p, err)
			case de.Ino != ino:
				fail("%q: d_ino %d != st_ino %d", p, de.Ino, ino)
			case tree[p].Ino != ino:
				fail("%q: st_ino %d, then %d on a second walk", p, tree[p].Ino, ino)
			}
		}
	}
	if bad > 20 {
		t.Errorf("... %d inode errors in all", bad)
	}
}

// checkOverlayXattrs compares the *.overlay.* names listxattr gives on the
// two mounts. The union may show only what the kernel shows (escaped names:
// trusted.overlay.overlay.X on disk is trusted.overlay.X on the mount), and
// must show the kernel's trusted.overlay.* names with the same values. A
// kernel without userxattr shows user.overlay.* names raw; unionmount hides
// them (see knownDifferences), and with userxattr the kernel shows
// trusted.overlay.* raw, which unionmount hides too.
func checkOverlayXattrs(t *testing.T, kmnt, umnt string, ktree, utree fstest.Tree, userxattr bool) {
	t.Helper()
	overlayNames := func(mnt, p string) map[string]string {
		xs, err := fstest.Xattrs(filepath.Join(mnt, p))
		if err != nil {
			t.Errorf("%q: %v", p, err)
		}
		out := map[string]string{}
		for n, v := range xs {
			if strings.Contains(n, ".overlay.") {
				out[n] = v
			}
		}
		return out
	}
	for _, p := range utree.Paths() {
		if _, ok := ktree[p]; !ok || utree[p].Type == fstest.TypeVanished {
			continue // reported by the diff or checkNoVanished
		}
		k, u := overlayNames(kmnt, p), overlayNames(umnt, p)
		for n := range u {
			if _, ok := k[n]; !ok {
				t.Errorf("%q: listxattr shows %s, which the kernel hides", p, n)
			}
		}
		for n, kv := range k {
			uv, ok := u[n]
			switch {
			case !ok && !userxattr && strings.HasPrefix(n, "trusted.overlay."):
				t.Errorf("%q: listxattr does not show %s (an escaped name the kernel shows)", p, n)
			case ok && uv != kv:
				t.Errorf("%q: xattr %s is %q, the kernel's %q", p, n, uv, kv)
			}
		}
	}
}

// newStack generates a stack and writes it in dialect d (the same for all
// layers).
func newStack(t *testing.T, seed uint64, cfg genConfig, d dialect) *stack {
	t.Helper()
	fstest.RequireRoot(t) // chown, mknod, trusted.* xattrs
	s, err := writeStack(t.TempDir(), "layers", generate(seed, cfg), func(int) dialect { return d })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantCoverage is what every generated stack of 8 layers or more must hold.
var wantCoverage = []string{
	"visible dir", "visible file", "visible symlink", "visible link", "visible fifo", "visible char",
	"visible block", "visible sparse", "opaque dir at depth 1", "opaque dir at depth 2",
	"opaque dir at depth 3", "opaque dir at depth 4", "re-created above a whiteout",
	"non-dir replaced by a dir", "dir replaced by a non-dir", "dir deleted", "non-dir deleted",
}

// TestKernelMatchesModel checks the harness without the binary: the kernel's
// merge of generated stacks must equal the merge the generator predicts,
// written out as a plain tree. If this fails, the generator, fstest or the
// kernel changed, and the other tests cannot be trusted.
func TestKernelMatchesModel(t *testing.T) {
	for _, n := range []int{1, 2, 8, 64} {
		for _, d := range []dialect{dialectChar, dialectXattr, dialectUser, dialectUserXattr} {
			t.Run(fmt.Sprintf("%dlayers/%s", n, d.name), func(t *testing.T) {
				t.Parallel()
				fstest.RequireOverlay(t)
				s := newStack(t, uint64(1000+n), configFor(n), d)
				want := t.TempDir()
				nlink, err := renderMerged(want, s.model, s.merged)
				if err != nil {
					t.Fatal(err)
				}
				wtree, err := fstest.Snapshot(want)
				if err != nil {
					t.Fatal(err)
				}
				for p, n := range nlink {
					e := wtree[p]
					e.Nlink = n
					wtree[p] = e
				}
				mnt := t.TempDir()
				fstest.MountKernelOverlay(t, s.dirs, "", "", mnt, d.kernelOpts...)
				ktree, err := fstest.Snapshot(mnt)
				if err != nil {
					t.Fatal(err)
				}
				vanished := 0
				for p, e := range ktree {
					if e.Type != fstest.TypeVanished {
						continue
					}
					vanished++
					if !mayVanish(s, p, d) {
						t.Errorf("%q: vanished, but it is not a whiteout the kernel lists", p)
					}
				}
				ktree = ktree.Filter(func(e fstest.Entry) bool { return e.Type != fstest.TypeVanished })
				if d := fstest.Diff(wtree, ktree); len(d) > 0 {
					t.Errorf("kernel overlayfs differs from the model (model first):\n%s", strings.Join(d, "\n"))
				}
				checkInodes(t, mnt, ktree)
				cov := coverage(s.model, s.merged)
				t.Logf("%d layers, %d merged paths, %d vanished whiteouts; %v", n, len(ktree), vanished, cov)
				if n >= 8 {
					for _, what := range wantCoverage {
						if cov[what] == 0 {
							t.Errorf("the generated stack has no %s", what)
						}
					}
				}
			})
		}
	}
}

// mayVanish tells whether the kernel may list p in readdir and then deny it
// in lstat: p is a whiteout in a directory D that comes from one layer (the
// kernel passes that listing through), or an xattr whiteout in the layer
// that is last in the lower stack of D's parent. The kernel does not read
// the opaque=x marker in that layer, so unless a lookup elsewhere taught it
// that the layer has xattr whiteouts, readdir does not look for them, while
// lookup still honours them.
func mayVanish(s *stack, p string, d dialect) bool {
	dir := filepath.Dir(p)
	m := s.merged[dir]
	if m == nil || m.item.kind != kDir {
		return false
	}
	parentStack := s.merged["."].contributors
	if dir != "." {
		parentStack = s.merged[filepath.Dir(dir)].contributors
	}
	for _, li := range m.contributors {
		it := s.model[li].byPath[p]
		if it == nil {
			continue
		}
		if it.kind != kWhiteout {
			return false
		}
		xattrWhiteout := d.name == dialectXattr.name || d.name == dialectUserXattr.name
		return len(m.contributors) == 1 || xattrWhiteout && li == parentStack[len(parentStack)-1]
	}
	return false
}

// TestStacks compares generated stacks of 1, 2, 8 and 64 layers in the
// kernel's own dialect (char 0/0 whiteouts, trusted.overlay.opaque=y).
func TestStacks(t *testing.T) {
	for _, n := range []int{1, 2, 8, 64} {
		t.Run(fmt.Sprintf("%dlayers", n), func(t *testing.T) {
			t.Parallel()
			s := newStack(t, uint64(n), configFor(n), dialectChar)
			compareStack(t, s, s, mountOpts{})
		})
	}
}

// TestConfigurations compares one stack under the flags that change how
// unionmount caches: no lookup cache, and long kernel cache timeouts (the
// default for users; the other tests use --timeout 0).
func TestConfigurations(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"no-lookup-cache", []string{"--cache-entries", "0"}},
		{"kernel-cache", []string{"--timeout", "1h"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, 8, configFor(8), dialectChar)
			compareStack(t, s, s, mountOpts{unionArgs: c.args})
		})
	}
}

// TestDialects writes one stack per dialect. The kernel reads its own
// dialects directly; for the ones it cannot read (AUFS, fuse-overlayfs, and
// a stack mixing all of them layer by layer) the kernel gets the same stack
// in its own dialect.
func TestDialects(t *testing.T) {
	cases := []struct {
		union  dialect
		mixed  bool
		kernel dialect
	}{
		{union: dialectXattr, kernel: dialectXattr},
		{union: dialectUser, kernel: dialectUser},
		{union: dialectUserXattr, kernel: dialectUserXattr},
		{union: dialectAUFS, kernel: dialectChar},
		{union: dialectFuseOverlayfs, kernel: dialectChar},
		{union: dialect{name: "mixed"}, mixed: true, kernel: dialectChar},
	}
	for i, c := range cases {
		t.Run(c.union.name, func(t *testing.T) {
			t.Parallel()
			fstest.RequireRoot(t)
			model := generate(uint64(100+i), configFor(8))
			base := t.TempDir()
			ks, err := writeStack(base, "kernel", model, func(int) dialect { return c.kernel })
			if err != nil {
				t.Fatal(err)
			}
			us := ks
			if c.union.name != c.kernel.name {
				mix := []dialect{dialectChar, dialectXattr, dialectUser, dialectUserXattr, dialectAUFS, dialectFuseOverlayfs}
				us, err = writeStack(base, "union", model, func(i int) dialect {
					if c.mixed {
						return mix[i%len(mix)]
					}
					return c.union
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			compareStack(t, ks, us, mountOpts{kernelOpts: c.kernel.kernelOpts})
		})
	}
}

// TestAUFSMetaHidden checks the AUFS metadata dirs directly: they are in
// every layer root of the AUFS stack and must not show.
func TestAUFSMetaHidden(t *testing.T) {
	fstest.RequireFUSE(t)
	l1, l2, mnt := t.TempDir(), t.TempDir(), t.TempDir()
	for _, l := range []string{l1, l2} {
		if err := fstest.Apply(l, dialectAUFS.root...); err != nil {
			t.Fatal(err)
		}
	}
	if err := fstest.Apply(l1, fstest.CreateDir("d", 0o755), fstest.AUFSMeta("d", fstest.AUFSPlink),
		fstest.CreateFile(".wh.x", nil, 0o644), fstest.CreateFile("f", nil, 0o644)); err != nil {
		t.Fatal(err)
	}
	if err := fstest.Apply(l2, fstest.CreateFile("x", nil, 0o644)); err != nil {
		t.Fatal(err)
	}
	fstest.MountUnion(t, []string{l1, l2}, "", "", mnt)
	tree, err := fstest.Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range tree.Paths() {
		if p != "." && p != "d" && p != "f" {
			got = append(got, p)
		}
	}
	if len(got) > 0 {
		t.Errorf("shown through the mount: %q", got)
	}
	for _, name := range []string{fstest.AUFSPlink, fstest.AUFSAufs, fstest.AUFSOrph, ".wh.x", "x"} {
		if _, err := os.Lstat(filepath.Join(mnt, name)); !os.IsNotExist(err) {
			t.Errorf("lstat %s: %v, want ENOENT", name, err)
		}
	}
}

// TestSpecialFiles is a hand-written stack of everything a layer can hold,
// with layer dirs whose names need escaping.
func TestSpecialFiles(t *testing.T) {
	fstest.RequireRoot(t)
	base := t.TempDir()
	dirs := []string{filepath.Join(base, "top:most"), filepath.Join(base, `mid\dle,x`), filepath.Join(base, "bottom layer")}
	if plainLayerNames {
		dirs = []string{filepath.Join(base, "top"), filepath.Join(base, "middle"), filepath.Join(base, "bottom layer")}
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(root string, a ...fstest.Applier) {
		t.Helper()
		if err := fstest.Apply(root, a...); err != nil {
			t.Fatal(err)
		}
	}
	dev := os.ModeDevice
	chr := os.ModeDevice | os.ModeCharDevice
	must(dirs[2],
		fstest.CreateDir("bin", 0o755),
		fstest.CreateFile("bin/su", []byte("su"), 0o4755),
		fstest.CreateFile("bin/wall", []byte("wall"), 0o2755),
		fstest.CreateFile("bin/both", []byte("both"), 0o6711),
		fstest.Chown("bin/wall", 0, 5), fstest.Chmod("bin/wall", 0o2755),
		fstest.CreateDir("tmp", 0o1777),
		fstest.CreateFile("hard1", []byte("linked\n"), 0o644),
		fstest.Link("hard1", "hard2"),
		fstest.Link("hard1", "bin/hard3"),
		fstest.CreateFile("lonely", []byte("lonely\n"), 0o644),
		fstest.Link("lonely", "lonely-alias"),
		fstest.CreateDir("dev", 0o755),
		fstest.Mknod("dev/null", chr|0o666, 1, 3),
		fstest.Mknod("dev/sda", dev|0o660, 8, 0),
		fstest.Mkfifo("dev/fifo", 0o620),
		fstest.CreateSparseFile("sparse", 64<<20, map[int64][]byte{4096: []byte("a"), 32 << 20: []byte("b")}),
		fstest.CreateFile("with space", []byte(" "), 0o644),
		fstest.CreateFile("new\nline", []byte("\n"), 0o644),
		fstest.CreateFile("co:lon", []byte(":"), 0o644),
		fstest.CreateFile(`back\slash`, []byte(`\`), 0o644),
		fstest.CreateFile("xattrs", nil, 0o644),
		fstest.SetXattr("xattrs", "user.plain", []byte("p")),
		fstest.SetXattr("xattrs", "trusted.secret", []byte("s")),
		fstest.SetXattr("xattrs", "user.empty", nil),
		fstest.SetXattr("xattrs", "user.big", []byte(strings.Repeat("x", 3000))),
		fstest.SetXattr("xattrs", "trusted.overlay.fake", []byte("hidden")),
		fstest.SetXattr("xattrs", "trusted.overlay.overlay.escaped", []byte("e")),
		fstest.SetXattr("xattrs", "user.overlay.shown-by-kernel", []byte("k")),
		fstest.SetXattr("tmp", "user.dir", []byte("d")),
	)
	must(dirs[1],
		fstest.CreateDir("links", 0o755),
		fstest.Symlink("../bin/su", "links/rel"),
		fstest.Symlink("/bin/su", "links/abs"),
		fstest.Symlink("missing/target", "links/dangling"),
		fstest.Symlink("links", "links/self"),
		fstest.Symlink(strings.Repeat("long/", 200), "links/long"),
		fstest.SetXattr("links/abs", "trusted.on-link", []byte("l")),
		fstest.Whiteout("lonely"),            // hides one alias: the other keeps nlink 2
		fstest.Mknod("dev", chr|0o600, 5, 1), // a device replaces the dev dir
		fstest.CreateDir("tmp", 0o1777),
		fstest.Chown("tmp", 1000, 1000), fstest.Chmod("tmp", 0o1777),
	)
	must(dirs[0],
		fstest.CreateFile("hard2", []byte("replaced\n"), 0o600), // breaks one alias
		fstest.CreateDir("bin", 0o755),
		fstest.Mkfifo("bin/wall", 0o600),
	)
	s := &stack{dirs: dirs}
	compareStack(t, s, s, mountOpts{})
}

// TestWithUpper mounts a stack with an upper dir and only reads: the merged
// tree must match the kernel's and the upper must not change.
func TestWithUpper(t *testing.T) {
	fstest.RequireRoot(t)
	model := generate(7, configFor(5))
	base := t.TempDir()
	s, err := writeStack(base, "lowers", model[1:], func(int) dialect { return dialectChar })
	if err != nil {
		t.Fatal(err)
	}
	uppers := [2]string{filepath.Join(base, "kernel-upper"), filepath.Join(base, "union-upper")}
	for _, u := range uppers {
		if err := os.Mkdir(u, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := model[0].render(u, dialectChar); err != nil {
			t.Fatal(err)
		}
	}
	compareStack(t, s, s, mountOpts{kernelUpper: uppers[0], unionUpper: uppers[1]})
}

// TestDialectsInUpper is TestWithUpper with the upper written in the
// dialects the kernel cannot read there (AUFS ".wh." whiteouts and
// ".wh..wh..opq", fuse-overlayfs' user.fuseoverlayfs.opaque, and
// user.overlay.opaque on a root mount), while the kernel gets the same
// upper in its own format: the merged trees must match, and reading must
// leave the upper as it was.
func TestDialectsInUpper(t *testing.T) {
	for i, d := range []dialect{dialectAUFS, dialectFuseOverlayfs, dialectUser, dialectXattr} {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			fstest.RequireRoot(t)
			model := generate(uint64(200+i), configFor(5))
			whiteouts, opaques := 0, 0
			for _, it := range model[0].items {
				if it.kind == kWhiteout {
					whiteouts++
				}
				if it.kind == kDir && it.opaque {
					opaques++
				}
			}
			if whiteouts == 0 || opaques == 0 {
				t.Fatalf("seed %d: the upper has %d whiteouts and %d opaque dirs; the test needs both", 200+i, whiteouts, opaques)
			}
			t.Logf("upper: %d whiteouts, %d opaque dirs", whiteouts, opaques)
			base := t.TempDir()
			s, err := writeStack(base, "lowers", model[1:], func(int) dialect { return dialectChar })
			if err != nil {
				t.Fatal(err)
			}
			kupper, uupper := filepath.Join(base, "kernel-upper"), filepath.Join(base, "union-upper")
			for _, u := range []struct {
				dir string
				d   dialect
			}{{kupper, dialectChar}, {uupper, d}} {
				if err := os.Mkdir(u.dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := model[0].render(u.dir, u.d); err != nil {
					t.Fatal(err)
				}
			}
			compareStack(t, s, s, mountOpts{kernelUpper: kupper, unionUpper: uupper})
		})
	}
}
