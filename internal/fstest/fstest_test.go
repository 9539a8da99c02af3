package fstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testenv"
)

var t0 = time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)

// everyKind is a fixture with one of each thing a tree can hold.
func everyKind() []Applier {
	return []Applier{
		CreateDir("d", 0o750),
		CreateDir("d/sub", 0o1777),
		CreateFile("d/f", []byte("hello\n"), 0o644),
		CreateFile("suid", []byte("#!/bin/sh\n"), 0o755|os.ModeSetuid|os.ModeSetgid),
		CreateFile("suid2", nil, 0o4711),
		CreateFile("with space", nil, 0o600),
		CreateFile("new\nline", []byte("x"), 0o600),
		CreateFile("co:lon", []byte("y"), 0o600),
		CreateSparseFile("sparse", 1<<20, map[int64][]byte{0: []byte("head"), 512 << 10: []byte("middle")}),
		Symlink("d/f", "rel"),
		Symlink("/etc/passwd", "abs"),
		Symlink("nowhere", "dangling"),
		Link("d/f", "hard"),
		Mkfifo("fifo", 0o640),
		Mknod("chr", os.ModeDevice|os.ModeCharDevice|0o666, 1, 3),
		Mknod("blk", os.ModeDevice|0o660, 7, 42),
		Chown("d/f", 1000, 1001),
		Chown("abs", 12, 13),
		SetXattr("d/f", "user.color", []byte("blue")),
		SetXattr("d", "trusted.note", []byte("t")),
		SetXattr("abs", "trusted.link", []byte("l")),
		SetXattr("d", "trusted.overlay.opaque", []byte("y")),   // filtered
		SetXattr("d/f", "user.overlay.something", []byte("z")), // filtered
		SetXattr("d/f", "user.unionmount.origin", []byte("o")), // filtered
		CreateFile("gone", nil, 0o644),
		Remove("gone"),
		Chtimes("d/f", t0, t0),
		Chtimes("abs", t0, t0.Add(time.Second)),
		Chtimes("d/sub", t0, t0),
		Chtimes("d", t0, t0),
		Chtimes(".", t0, t0),
	}
}

func TestApplyAndSnapshot(t *testing.T) {
	RequireRoot(t)
	root := t.TempDir()
	if err := Apply(root, everyKind()...); err != nil {
		t.Fatal(err)
	}
	tree, err := Snapshot(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", "abs", "blk", "chr", "co:lon", "d", "d/f", "d/sub", "dangling", "fifo",
		"hard", "new\nline", "rel", "sparse", "suid", "suid2", "with space"}
	if got := tree.Paths(); !slices.Equal(got, want) {
		t.Fatalf("paths %q, want %q", got, want)
	}
	check := func(p string, ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			t.Errorf("%s: "+format+" (entry %+v)", append([]any{p}, append(args, tree[p])...)...)
		}
	}
	e := tree["d"]
	check("d", e.Type == TypeDir && e.Mode == 0o750 && e.Mtime.Equal(t0), "dir 0750 at t0")
	check("d", len(e.Xattrs) == 1 && e.Xattrs["trusted.note"] == "t", "xattrs %v", e.Xattrs)
	e = tree["d/sub"]
	check("d/sub", e.Mode == 0o1777, "sticky mode %o", e.Mode)
	e = tree["d/f"]
	check("d/f", e.Type == TypeFile && e.Size == 6 && e.UID == 1000 && e.GID == 1001, "file 6 bytes owned 1000:1001")
	check("d/f", e.SHA256 == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03", "sha256 %s", e.SHA256)
	check("d/f", e.Nlink == 2 && e.InoClass == "d/f", "nlink %d class %q", e.Nlink, e.InoClass)
	check("d/f", len(e.Xattrs) == 1 && e.Xattrs["user.color"] == "blue", "xattrs %v", e.Xattrs)
	check("hard", tree["hard"].InoClass == "d/f" && tree["hard"].Ino == tree["d/f"].Ino, "same class as d/f")
	check("suid", tree["suid"].Mode == 0o6755, "mode %o", tree["suid"].Mode)
	check("suid2", tree["suid2"].Mode == 0o4711, "mode %o", tree["suid2"].Mode)
	check("sparse", tree["sparse"].Size == 1<<20, "size")
	e = tree["abs"]
	check("abs", e.Type == TypeSymlink && e.Target == "/etc/passwd" && e.Size == 11 && e.UID == 12, "symlink")
	check("abs", e.Mtime.Equal(t0.Add(time.Second)) && e.Xattrs["trusted.link"] == "l", "lutimes and xattr")
	check("dangling", tree["dangling"].Target == "nowhere", "target")
	check("fifo", tree["fifo"].Type == TypeFIFO && tree["fifo"].Mode == 0o640, "fifo 0640")
	check("chr", tree["chr"].Type == TypeChar && tree["chr"].Rdev == unix.Mkdev(1, 3), "char 1:3")
	check("blk", tree["blk"].Type == TypeBlock && tree["blk"].Rdev == unix.Mkdev(7, 42), "block 7:42")
	check(".", tree["."].InoClass == "." && tree["."].Mtime.Equal(t0), "root")

	// The same fixture elsewhere gives the same snapshot.
	other := t.TempDir()
	if err := Apply(other, everyKind()...); err != nil {
		t.Fatal(err)
	}
	tree2, err := Snapshot(other)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(tree, tree2, CompareFields(FieldDirNlink), IgnoreFields(FieldMtime)); len(d) > 0 {
		t.Errorf("two applications of one fixture differ:\n%s", strings.Join(d, "\n"))
	}
	// And the differences show once made.
	if err := Apply(other, Chmod("d/f", 0o600), Remove("rel"), CreateFile("extra", nil, 0o644),
		Chown("with space", 5, 6)); err != nil {
		t.Fatal(err)
	}
	tree2, err = Snapshot(other)
	if err != nil {
		t.Fatal(err)
	}
	got := Diff(tree, tree2, IgnoreFields(FieldMtime))
	wantDiff := []string{"d/f: mode 0644 != 0600", "extra: unexpected", "hard: mode 0644 != 0600", "rel: missing",
		"with space: owner 0:0 != 5:6"}
	if !slices.Equal(got, wantDiff) {
		t.Errorf("diff\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantDiff, "\n"))
	}
}

func TestDiffLines(t *testing.T) {
	want := Tree{
		".":        {Path: ".", Type: TypeDir, Mode: 0o755, InoClass: "."},
		"a/b":      {Path: "a/b", Type: TypeFile, Mode: 0o644, Size: 3, SHA256: "aaaaaaaaaaaaaaaa", Nlink: 1, InoClass: "a/b"},
		"l":        {Path: "l", Type: TypeSymlink, Target: "x", Size: 1, Nlink: 1, InoClass: "l"},
		"dev":      {Path: "dev", Type: TypeChar, Rdev: unix.Mkdev(1, 3), Nlink: 1, InoClass: "dev"},
		"x":        {Path: "x", Type: TypeFile},
		"typ":      {Path: "typ", Type: TypeFile},
		"n\nl":     {Path: "n\nl", Type: TypeFIFO, Xattrs: map[string]string{"user.a": "1", "user.b": "2"}},
		"h1":       {Path: "h1", Type: TypeFile, Nlink: 2, InoClass: "h1"},
		"h2":       {Path: "h2", Type: TypeFile, Nlink: 2, InoClass: "h1"},
		"dir":      {Path: "dir", Type: TypeDir, Nlink: 3, InoClass: "dir", Mtime: t0},
		"vanished": {Path: "vanished", Type: TypeVanished},
	}
	got := Tree{}
	for p, e := range want {
		got[p] = e
	}
	delete(got, "x")
	got["y"] = Entry{Path: "y", Type: TypeDir}
	got["a/b"] = Entry{Path: "a/b", Type: TypeFile, Mode: 0o755, UID: 1, Size: 4, SHA256: "bbbbbbbbbbbbbbbb", Nlink: 1, InoClass: "a/b"}
	got["l"] = Entry{Path: "l", Type: TypeSymlink, Target: "y\n", Size: 2, Nlink: 1, InoClass: "l"}
	got["dev"] = Entry{Path: "dev", Type: TypeChar, Rdev: unix.Mkdev(1, 5), Nlink: 1, InoClass: "dev"}
	got["typ"] = Entry{Path: "typ", Type: TypeDir, Mode: 0o777}
	got["n\nl"] = Entry{Path: "n\nl", Type: TypeFIFO, Xattrs: map[string]string{"user.b": "3", "user.c": ""}}
	got["h2"] = Entry{Path: "h2", Type: TypeFile, Nlink: 1, InoClass: "h2"}
	got["dir"] = Entry{Path: "dir", Type: TypeDir, Nlink: 1, InoClass: "dir", Mtime: t0.Add(time.Nanosecond)}

	lines := Diff(want, got)
	wantLines := []string{
		`"n\nl": xattr user.a missing`,
		`"n\nl": xattr user.b "2" != "3"`,
		`"n\nl": xattr user.c unexpected`,
		"a/b: content sha256 aaaaaaaaaaaa != bbbbbbbbbbbb",
		"a/b: mode 0644 != 0755",
		"a/b: owner 0:0 != 1:0",
		"a/b: size 3 != 4",
		"dev: rdev 1:3 != 1:5",
		"dir: mtime 2020-01-02T03:04:05.123456789Z != 2020-01-02T03:04:05.12345679Z",
		"h2: ino class h1 != h2",
		"h2: nlink 2 != 1",
		`l: size 1 != 2`,
		`l: target "x" != "y\n"`,
		"typ: type file != dir",
		"x: missing",
		"y: unexpected",
	}
	if !slices.Equal(lines, wantLines) {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
	lines = Diff(want, got, IgnoreFields(DefaultFields), CompareFields(FieldDirNlink))
	wantLines = []string{"dir: nlink 3 != 1", "typ: type file != dir", "x: missing", "y: unexpected"}
	if !slices.Equal(lines, wantLines) {
		t.Errorf("diff with only dir nlink:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}
	if d := Diff(want, want); len(d) != 0 {
		t.Errorf("a tree differs from itself: %q", d)
	}
}

func TestWhiteoutDialects(t *testing.T) {
	RequireRoot(t)
	root := t.TempDir()
	err := Apply(root,
		CreateDir("k", 0o755), Whiteout("k/w"), Opaque("k"),
		CreateDir("a", 0o755), AUFSWhiteout("a/w"), AUFSOpaque("a"), AUFSMeta(".", AUFSPlink),
		CreateDir("u", 0o755), UserOpaque("u"),
		CreateDir("f", 0o755), FuseOverlayfsOpaque("f"),
		CreateDir("x", 0o755), XattrWhiteout("x/w"), XattrWhiteout("x/w2"),
		CreateDir("ux", 0o755), UserXattrWhiteout("ux/w"),
		CreateDir("y", 0o755), Opaque("y"), XattrWhiteout("y/w"),
	)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := Snapshot(root, XattrFilter(func(string) bool { return true }))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		typ    Type
		rdev   uint64
		xattrs map[string]string
	}
	for p, w := range map[string]want{
		"k/w":             {TypeChar, 0, nil},
		"k":               {TypeDir, 0, map[string]string{TrustedOpaqueXattr: "y"}},
		"a/.wh.w":         {TypeFile, 0, nil},
		"a/.wh..wh..opq":  {TypeFile, 0, nil},
		".wh..wh.plnk":    {TypeDir, 0, nil},
		"u":               {TypeDir, 0, map[string]string{UserOpaqueXattr: "y"}},
		"f":               {TypeDir, 0, map[string]string{FuseOverlayfsOpaqueXattr: "y"}}, // kept by the default filter
		"x":               {TypeDir, 0, map[string]string{TrustedOpaqueXattr: "x"}},
		"x/w":             {TypeFile, 0, map[string]string{TrustedWhiteoutXattr: ""}},
		"ux":              {TypeDir, 0, map[string]string{UserOpaqueXattr: "x"}},
		"ux/w":            {TypeFile, 0, map[string]string{UserWhiteoutXattr: ""}},
		"y":               {TypeDir, 0, map[string]string{TrustedOpaqueXattr: "y"}},
		".wh..wh.plnk/lo": {}, // absent: the leftover file is named "leftover"
	} {
		e, ok := tree[p]
		if w.typ == "" {
			if ok {
				t.Errorf("%q exists", p)
			}
			continue
		}
		if !ok {
			t.Errorf("%q missing", p)
			continue
		}
		if e.Type != w.typ || e.Rdev != w.rdev || len(e.Xattrs) != len(w.xattrs) {
			t.Errorf("%q: %+v, want %+v", p, e, w)
		}
		for k, v := range w.xattrs {
			if e.Xattrs[k] != v {
				t.Errorf("%q: xattr %s=%q, want %q", p, k, e.Xattrs[k], v)
			}
		}
	}
	// The default filter hides the markers.
	tree, err = Snapshot(root)
	if err != nil {
		t.Fatal(err)
	}
	for p, e := range tree {
		if len(e.Xattrs) > 0 && p != "f" {
			t.Errorf("%q: default filter kept %v", p, e.Xattrs)
		}
	}
}

func TestReadDirentsAndInos(t *testing.T) {
	root := t.TempDir()
	if err := Apply(root, CreateDir("d", 0o755), CreateFile("d/a", nil, 0o644), CreateFile("b", nil, 0o644),
		Link("b", "c"), Symlink("b", "s")); err != nil {
		t.Fatal(err)
	}
	inos, err := Inos(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(inos) != 6 || inos["b"] != inos["c"] || inos["b"] == inos["s"] {
		t.Errorf("inos %v", inos)
	}
	ents, err := ReadDirents(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 4 {
		t.Errorf("dirents %v, want 4", ents)
	}
	for _, d := range ents {
		ino, err := Ino(filepath.Join(root, d.Name))
		if err != nil {
			t.Fatal(err)
		}
		if d.Ino != ino || d.Ino != inos[d.Name] {
			t.Errorf("%s: d_ino %d, lstat %d", d.Name, d.Ino, ino)
		}
		if d.Name == "d" && d.Type != unix.DT_DIR || d.Name == "s" && d.Type != unix.DT_LNK {
			t.Errorf("%s: d_type %d", d.Name, d.Type)
		}
	}
}

func TestDataExtents(t *testing.T) {
	root := t.TempDir()
	if err := Apply(root,
		CreateSparseFile("sparse", 8<<20, map[int64][]byte{1 << 20: []byte("x"), 4 << 20: []byte("y")}),
		CreateFile("dense", []byte("abc"), 0o644),
		CreateSparseFile("empty", 1<<20, nil)); err != nil {
		t.Fatal(err)
	}
	sparse, err := DataExtents(filepath.Join(root, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sparse) != 2 || sparse[0].Off > 1<<20 || sparse[1].Off > 4<<20 || sparse[1].Off+sparse[1].Len <= 4<<20 {
		t.Errorf("sparse: %v, want two extents around 1 MiB and 4 MiB", sparse)
	}
	if dense, err := DataExtents(filepath.Join(root, "dense")); err != nil || len(dense) != 1 || dense[0] != (Extent{0, 3}) {
		t.Errorf("dense: %v %v", dense, err)
	}
	if empty, err := DataExtents(filepath.Join(root, "empty")); err != nil || len(empty) != 0 {
		t.Errorf("all hole: %v %v", empty, err)
	}
}

// TestKernelOverlayMatchesHandMerge checks MountKernelOverlay and Snapshot
// together: the kernel's merge of three lowers (whose paths need escaping)
// must equal the merged tree built by hand.
func TestKernelOverlayMatchesHandMerge(t *testing.T) {
	RequireOverlay(t)
	base := t.TempDir()
	l1, l2, l3 := filepath.Join(base, "top:1"), filepath.Join(base, "mid,2"), filepath.Join(base, `bot\3 x`)
	mnt, want := filepath.Join(base, "mnt"), filepath.Join(base, "want")
	for _, d := range []string{l1, l2, l3, mnt, want} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(root string, a ...Applier) {
		t.Helper()
		if err := Apply(root, a...); err != nil {
			t.Fatal(err)
		}
	}
	must(l3,
		CreateDir("etc", 0o755), CreateFile("etc/passwd", []byte("root\n"), 0o644),
		CreateFile("etc/group", []byte("root\n"), 0o644), Link("etc/group", "etc/group-"),
		CreateDir("var", 0o755), CreateDir("var/lib", 0o700), CreateFile("var/lib/db", []byte("db"), 0o600),
		CreateFile("file2dir", []byte("f"), 0o644), CreateDir("dir2file", 0o755), CreateFile("dir2file/x", nil, 0o644),
		CreateDir("x", 0o755), CreateFile("x/a", nil, 0o644), CreateFile("x/b", nil, 0o644),
		Chtimes("etc", t0, t0))
	must(l2,
		CreateDir("etc", 0o711), Whiteout("etc/passwd"), CreateFile("etc/shadow", []byte("s"), 0o640),
		CreateDir("var", 0o755), Opaque("var"), CreateFile("var/new", []byte("n"), 0o644),
		CreateDir("file2dir", 0o755), CreateFile("file2dir/in", nil, 0o644),
		CreateFile("dir2file", []byte("now a file"), 0o644),
		CreateDir("x", 0o755), XattrWhiteout("x/a"),
		SetXattr("etc/shadow", "user.k", []byte("v")), Chtimes("etc", t0.Add(time.Hour), t0.Add(time.Hour)))
	must(l1,
		CreateDir("etc", 0o755), CreateFile("etc/passwd", []byte("recreated\n"), 0o644), // re-created above the whiteout
		Symlink("../etc/shadow", "etc/link"), Mkfifo("fifo", 0o644))
	must(want,
		CreateDir("etc", 0o755), CreateFile("etc/passwd", []byte("recreated\n"), 0o644),
		CreateFile("etc/group", []byte("root\n"), 0o644), Link("etc/group", "etc/group-"),
		CreateFile("etc/shadow", []byte("s"), 0o640), SetXattr("etc/shadow", "user.k", []byte("v")),
		Symlink("../etc/shadow", "etc/link"), Mkfifo("fifo", 0o644),
		CreateDir("var", 0o755), CreateFile("var/new", []byte("n"), 0o644),
		CreateDir("file2dir", 0o755), CreateFile("file2dir/in", nil, 0o644),
		CreateFile("dir2file", []byte("now a file"), 0o644),
		CreateDir("x", 0o755), CreateFile("x/b", nil, 0o644))
	// etc comes from the top layer that has it: l1 (which did not set its
	// times), so copy l1's etc mode and times. Other dirs: their top layer.
	copyMeta(t, filepath.Join(l1, "etc"), filepath.Join(want, "etc"))
	copyMeta(t, l1, want)
	for _, p := range []string{"var", "file2dir", "x"} {
		copyMeta(t, filepath.Join(l2, p), filepath.Join(want, p))
	}
	copyTimes(t, l3, want, "etc/group", "x/b")
	copyTimes(t, l2, want, "etc/shadow", "var/new", "file2dir/in", "dir2file")
	copyTimes(t, l1, want, "etc/passwd", "etc/link", "fifo")

	MountKernelOverlay(t, []string{l1, l2, l3}, "", "", mnt)
	got, err := Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := Snapshot(want)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(exp, got); len(d) > 0 {
		t.Errorf("kernel overlay differs from the hand-made merge:\n%s", strings.Join(d, "\n"))
	}
}

// copyMeta gives dst the mode and times of src (directories).
func copyMeta(t *testing.T, src, dst string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
		t.Fatal(err)
	}
	copyTimes(t, src, dst, ".")
}

func copyTimes(t *testing.T, srcRoot, dstRoot string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(srcRoot, p), &st); err != nil {
			t.Fatal(err)
		}
		if err := Apply(dstRoot, Chtimes(p, time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKernelOverlayQuirks pins what the kernel does that Snapshot must cope
// with: a single lower (MountKernelOverlay adds an empty one), and whiteouts
// in a directory that is not merged, which readdir lists and lstat denies.
func TestKernelOverlayQuirks(t *testing.T) {
	RequireOverlay(t)
	l, mnt := t.TempDir(), t.TempDir()
	if err := Apply(l, CreateDir("solo", 0o755), Whiteout("solo/w"), CreateFile("solo/f", nil, 0o644), Whiteout("w")); err != nil {
		t.Fatal(err)
	}
	MountKernelOverlay(t, []string{l}, "", "", mnt)
	tree, err := Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := tree["solo/w"]; !ok || e.Type != TypeVanished {
		t.Errorf("solo/w: %+v, want a vanished entry (kernel lists whiteouts of unmerged dirs)", e)
	}
	if _, ok := tree["w"]; ok {
		t.Errorf("w: shown in the merged root")
	}
	if tree["solo/f"].Type != TypeFile {
		t.Errorf("solo/f: %+v", tree["solo/f"])
	}
}

func TestKernelOverlayWithUpper(t *testing.T) {
	RequireOverlay(t)
	l, u, w, mnt := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	if err := Apply(l, CreateFile("f", []byte("lower"), 0o644)); err != nil {
		t.Fatal(err)
	}
	k := MountKernelOverlay(t, []string{l}, u, w, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("upper"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "f")); err != nil {
		t.Fatal(err)
	}
	if err := k.Unmount(); err != nil {
		t.Fatal(err)
	}
	tree, err := Snapshot(u, XattrFilter(func(string) bool { return true }))
	if err != nil {
		t.Fatal(err)
	}
	if e := tree["f"]; e.Type != TypeChar || e.Rdev != 0 {
		t.Errorf("upper f: %+v, want a whiteout", e)
	}
	if mounted, err := IsMountpoint(mnt); err != nil || mounted {
		t.Errorf("still mounted after Unmount (%v)", err)
	}
}

// TestKernelOverlayManyLayers needs more than a page of mount options, which
// MountKernelOverlay passes through fsconfig instead.
func TestKernelOverlayManyLayers(t *testing.T) {
	RequireOverlay(t)
	base := t.TempDir()
	var lowers []string
	for i := range 120 {
		l := filepath.Join(base, fmt.Sprintf("a-rather-long-layer-directory-name:%03d", i))
		if err := os.Mkdir(l, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Apply(l, CreateFile(fmt.Sprint(i), nil, 0o644), CreateFile("top", []byte(fmt.Sprint(i)), 0o644)); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, l)
	}
	mnt := t.TempDir()
	k := MountKernelOverlay(t, lowers, "", "", mnt)
	if len(k.Options) < 4096 {
		t.Fatalf("options only %d bytes: the test does not reach the fsconfig path", len(k.Options))
	}
	tree, err := Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree) != 122 {
		t.Errorf("%d entries, want 122", len(tree))
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "top")); err != nil || string(b) != "0" {
		t.Errorf("top: %q %v, want the topmost layer's", b, err)
	}
}

func TestMountUnionPlumbing(t *testing.T) {
	RequireFUSE(t)
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		testenv.Skipf(t, "needs fuse-overlayfs for the fake daemon (apt-get install fuse-overlayfs)")
	}
	shim, err := WriteFuseOverlayfsShim(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("UNIONMOUNT_BIN", shim)
	l, u, w := t.TempDir(), t.TempDir(), t.TempDir()
	if err := Apply(l, CreateFile("f", []byte("x"), 0o644)); err != nil {
		t.Fatal(err)
	}

	t.Run("unmount", func(t *testing.T) {
		mnt := t.TempDir()
		m := MountUnion(t, []string{l}, u, w, mnt)
		if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "x" {
			t.Fatalf("read through the mount: %q %v", b, err)
		}
		if err := m.Unmount(); err != nil {
			t.Fatal(err)
		}
		if mounted, err := IsMountpoint(mnt); err != nil || mounted {
			t.Errorf("still mounted after Unmount (%v)", err)
		}
	})
	t.Run("kill", func(t *testing.T) {
		mnt := t.TempDir()
		m := MountUnion(t, []string{l}, "", "", mnt)
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
		<-m.Done()
		_, err := os.Stat(filepath.Join(mnt, "f"))
		if !errors.Is(err, unix.ENOTCONN) {
			t.Errorf("stat on a killed mount: %v, want ENOTCONN", err)
		}
		// The cleanup unmounts without expecting exit status 0.
	})
	t.Run("held by another namespace", func(t *testing.T) {
		// A mount namespace made while the mount exists keeps a copy of
		// it, so the unmount here does not end the FUSE connection.
		if _, err := exec.LookPath("unshare"); err != nil {
			testenv.Skipf(t, "needs unshare (util-linux)")
		}
		defer func(w time.Duration) { exitWait = w }(exitWait)
		exitWait = 500 * time.Millisecond
		mnt := t.TempDir()
		m := MountUnion(t, []string{l}, "", "", mnt)
		holder := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "60")
		if err := holder.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { holder.Process.Kill(); holder.Wait() }()
		ns := "/proc/" + fmt.Sprint(holder.Process.Pid) + "/ns/mnt"
		self, _ := os.Readlink("/proc/self/ns/mnt")
		for deadline := time.Now().Add(5 * time.Second); ; {
			if got, _ := os.Readlink(ns); got != "" && got != self {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("unshare did not enter a new mount namespace")
			}
			time.Sleep(5 * time.Millisecond) // polling for unshare to exec
		}
		if err := m.Unmount(); err != nil {
			t.Fatalf("Unmount: %v (want success: the holder explains the wait)", err)
		}
		if m.note == "" || !strings.Contains(m.note, "sleep") {
			t.Errorf("note %q, want the holder named", m.note)
		}
	})
	t.Run("cleanup", func(t *testing.T) {
		mnt := t.TempDir()
		MountUnion(t, []string{l}, "", "", mnt)
	})
}
