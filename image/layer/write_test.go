package layer

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/whiteout"
)

// upperFixture is an upper as a union leaves it, with every marker
// dialect the writer must translate.
func upperFixture() []fstest.Applier {
	return []fstest.Applier{
		fstest.CreateDir("etc", 0o755),
		fstest.CreateFile("etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644),
		fstest.SetXattr("etc/hosts", "user.unionmount.origin", []byte("origin")), // bookkeeping: dropped
		fstest.SetXattr("etc/hosts", "trusted.overlay.origin", []byte("o")),      // bookkeeping: dropped
		fstest.SetXattr("etc/hosts", "user.note", []byte("kept")),
		fstest.Whiteout("etc/motd"),
		fstest.CreateDir("opaque", 0o700),
		fstest.Opaque("opaque"),
		fstest.CreateFile("opaque/new", []byte("n"), 0o600),
		fstest.CreateDir("aufsopq", 0o755),
		fstest.AUFSOpaque("aufsopq"),
		fstest.AUFSWhiteout("aufs-gone"),
		fstest.CreateDir("xwh", 0o755),
		fstest.XattrWhiteout("xwh/gone"),
		fstest.CreateFile("bin/tool", []byte("#!/bin/sh\n"), 0o755),
		fstest.Link("bin/tool", "bin/tool2"),
		fstest.Symlink("tool", "bin/link"),
		fstest.Mkfifo("fifo", 0o644),
		fstest.Chown("bin/tool", 7, 8),
		fstest.Chmod("bin/tool", 0o4755),
	}
}

type tarLine struct {
	name string
	typ  byte
	link string
}

func readTar(t *testing.T, data []byte) ([]tarLine, map[string]*tar.Header) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var lines []tarLine
	hdrs := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, tarLine{h.Name, h.Typeflag, h.Linkname})
		hdrs[h.Name] = h
	}
	return lines, hdrs
}

func TestWriteTar(t *testing.T) {
	fstest.RequireRoot(t)
	upper := t.TempDir()
	if err := fstest.Apply(upper, fstest.CreateDir("bin", 0o755)); err != nil {
		t.Fatal(err)
	}
	if err := fstest.Apply(upper, upperFixture()...); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(&buf, upper); err != nil {
		t.Fatal(err)
	}
	lines, hdrs := readTar(t, buf.Bytes())
	want := []tarLine{
		{".wh.aufs-gone", tar.TypeReg, ""},
		{"aufsopq/", tar.TypeDir, ""},
		{"aufsopq/.wh..wh..opq", tar.TypeReg, ""},
		{"bin/", tar.TypeDir, ""},
		{"bin/link", tar.TypeSymlink, "tool"},
		{"bin/tool", tar.TypeReg, ""},
		{"bin/tool2", tar.TypeLink, "bin/tool"},
		{"etc/", tar.TypeDir, ""},
		{"etc/hosts", tar.TypeReg, ""},
		{"etc/.wh.motd", tar.TypeReg, ""},
		{"fifo", tar.TypeFifo, ""},
		{"opaque/", tar.TypeDir, ""},
		{"opaque/.wh..wh..opq", tar.TypeReg, ""},
		{"opaque/new", tar.TypeReg, ""},
		{"xwh/", tar.TypeDir, ""},
		{"xwh/.wh.gone", tar.TypeReg, ""},
	}
	if len(lines) != len(want) {
		t.Fatalf("entries\n got %v\nwant %v", lines, want)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("entry %d: %v, want %v", i, lines[i], want[i])
		}
	}
	if x := hdrs["etc/hosts"].PAXRecords; len(x) != 1 || x["SCHILY.xattr.user.note"] != "kept" {
		t.Errorf("etc/hosts xattrs %v, want only user.note", x)
	}
	if h := hdrs["bin/tool"]; h.Uid != 7 || h.Gid != 8 || h.Mode != 0o4755 {
		t.Errorf("bin/tool header %+v", h)
	}
	if x := hdrs["opaque/"].PAXRecords; len(x) != 0 {
		t.Errorf("opaque/ carries %v: the marker must be the .wh..wh..opq entry only", x)
	}

	// Deterministic: the same tree gives the same bytes.
	var again bytes.Buffer
	if err := WriteTar(&again, upper); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two writes of one tree differ")
	}

	// Applying the tar gives the upper back in the canonical dialect.
	dst := t.TempDir()
	if _, err := Apply(dst, bytes.NewReader(buf.Bytes()), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	tree, err := fstest.Snapshot(dst, fstest.XattrFilter(allXattrs))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"aufs-gone", "etc/motd", "xwh/gone"} {
		if e := tree[p]; e.Type != fstest.TypeChar || e.Rdev != 0 {
			t.Errorf("%s: %+v, want a char 0/0 whiteout", p, e)
		}
	}
	for _, p := range []string{"opaque", "aufsopq"} {
		if tree[p].Xattrs[whiteout.TrustedOpaque] != "y" {
			t.Errorf("%s not opaque after the round trip: %v", p, tree[p].Xattrs)
		}
	}
	if tree["bin/tool2"].InoClass != "bin/tool" {
		t.Error("hard link lost")
	}
}

func TestChanges(t *testing.T) {
	fstest.RequireRoot(t)
	base, top, upper := t.TempDir(), t.TempDir(), t.TempDir()
	err := fstest.Apply(base,
		fstest.CreateDir("etc", 0o755),
		fstest.CreateFile("etc/passwd", nil, 0o644),
		fstest.CreateFile("etc/group", nil, 0o644),
		fstest.CreateDir("var", 0o755),
		fstest.CreateDir("var/lib", 0o755),
		fstest.CreateFile("var/lib/a", nil, 0o644),
		fstest.CreateFile("var/lib/b", nil, 0o644),
		fstest.CreateFile("gone-in-top", nil, 0o644),
		fstest.CreateDir("opq", 0o755),
		fstest.CreateFile("opq/hidden", nil, 0o644),
	)
	if err != nil {
		t.Fatal(err)
	}
	err = fstest.Apply(top,
		fstest.Whiteout("gone-in-top"),
		fstest.CreateDir("opq", 0o755),
		fstest.Opaque("opq"),
		fstest.CreateFile("opq/top", nil, 0o644),
		fstest.CreateDir("var", 0o755),
		fstest.CreateDir("var/lib", 0o755),
		fstest.CreateFile("var/lib/c", nil, 0o644),
	)
	if err != nil {
		t.Fatal(err)
	}
	err = fstest.Apply(upper,
		fstest.CreateDir("etc", 0o755),
		fstest.CreateFile("etc/passwd", []byte("changed"), 0o644),
		fstest.CreateFile("etc/new", nil, 0o644),
		fstest.Whiteout("etc/group"),
		fstest.CreateDir("var", 0o755),
		fstest.CreateDir("var/lib", 0o755),
		fstest.Opaque("var/lib"),
		fstest.CreateFile("var/lib/b", []byte("kept"), 0o644),
		fstest.CreateFile("gone-in-top", nil, 0o644), // re-created: Added
		fstest.AUFSWhiteout("opq"),
		fstest.CreateDir("newdir", 0o755),
		fstest.CreateFile("newdir/f", nil, 0o644),
	)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Changes(upper, []string{top, base})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range got {
		lines = append(lines, c.String())
	}
	want := []string{
		"C /etc", "D /etc/group", "A /etc/new", "C /etc/passwd",
		"A /gone-in-top",
		"A /newdir", "A /newdir/f",
		"D /opq",
		"C /var", "C /var/lib", "D /var/lib/a", "C /var/lib/b", "D /var/lib/c",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("changes\n got %q\nwant %q", lines, want)
	}
}

func TestViewRules(t *testing.T) {
	fstest.RequireRoot(t)
	a, b := t.TempDir(), t.TempDir()
	err := fstest.Apply(b,
		fstest.CreateDir("d", 0o755), fstest.CreateFile("d/x", nil, 0o644),
		fstest.CreateDir("s", 0o755), fstest.CreateFile("s/under-symlink", nil, 0o644),
		fstest.CreateFile("f", nil, 0o644),
	)
	if err != nil {
		t.Fatal(err)
	}
	err = fstest.Apply(a,
		fstest.Symlink("d", "s"), // a non-directory hides the directory below
		fstest.CreateDir("f", 0o755), fstest.CreateFile("f/y", nil, 0o644),
	)
	if err != nil {
		t.Fatal(err)
	}
	v := NewView([]string{a, b})
	for p, want := range map[string]bool{"d/x": true, "s": true, "s/under-symlink": false, "f/y": true, "nothing": false} {
		e, err := v.Lookup(p)
		if err != nil || e.Found != want {
			t.Errorf("Lookup(%q) = %+v, %v; want found=%v", p, e, err, want)
		}
	}
}
