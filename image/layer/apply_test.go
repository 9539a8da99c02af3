package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/whiteout"
)

func allXattrs(string) bool { return true }

// everyKind is a layer with one of each thing a tar can hold, in an order
// that puts children before their parent's own entry.
func everyKind() []ent {
	owned := file("etc/shadow", "root:*:1::::::\n")
	owned.uid, owned.gid, owned.mode = 0, 42, 0o640
	suid := file("bin/su", "#!/bin/sh\n")
	suid.mode = 0o4755
	xa := file("etc/x", "x")
	xa.xattrs = map[string]string{
		"user.color":             "blue",
		"trusted.overlay.opaque": "y", // planted marker: dropped
		"user.overlay.whiteout":  "",  // planted marker: dropped
		"user.unionmount.origin": "o", // forged bookkeeping: dropped
	}
	opaqueDir := dir("var/cache")
	return []ent{
		file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), // parent implicit
		dir("etc"), // the parent's own entry, after its child
		owned,
		xa,
		suid,
		symlink("bin/sh", "/bin/busybox"),
		symlink("lib", "usr/lib"),
		hardlink("bin/su2", "bin/su"),
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o640},
		file("etc/.wh.motd", ""),
		opaqueDir,
		file("var/cache/.wh..wh..opq", ""),
		file("var/cache/kept", "layer's own entry stays\n"),
		file(".wh..wh.plnk/123.456", "aufs hard link store"), // skipped
		{name: "./", typ: tar.TypeDir, mode: 0o755},
	}
}

func TestApplyEveryKind(t *testing.T) {
	fstest.RequireRoot(t)
	dst := t.TempDir()
	data := mkTar(t, everyKind()...)
	st, err := Apply(dst, bytes.NewReader(data), ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(data); st.DiffID != want {
		t.Errorf("diff_id %s, want %s", st.DiffID, want)
	}
	if st.TarSize != int64(len(data)) {
		t.Errorf("tar size %d, want %d", st.TarSize, len(data))
	}
	if st.DroppedXattrs != 3 {
		t.Errorf("dropped %d xattrs, want 3", st.DroppedXattrs)
	}
	tree, err := fstest.Snapshot(dst, fstest.XattrFilter(allXattrs))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", "bin", "bin/sh", "bin/su", "bin/su2", "etc", "etc/motd", "etc/passwd", "etc/shadow",
		"etc/x", "lib", "run", "run/fifo", "var", "var/cache", "var/cache/kept"}
	if got := tree.Paths(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("paths\n got %q\nwant %q", got, want)
	}
	check := func(p string, ok bool, what string) {
		t.Helper()
		if !ok {
			t.Errorf("%s: want %s, have %+v", p, what, tree[p])
		}
	}
	check("etc/motd", tree["etc/motd"].Type == fstest.TypeChar && tree["etc/motd"].Rdev == 0, "char 0/0 whiteout")
	check("etc/shadow", tree["etc/shadow"].Mode == 0o640 && tree["etc/shadow"].GID == 42, "0640 root:42")
	check("bin/su", tree["bin/su"].Mode == 0o4755, "setuid kept after chown")
	check("bin/su2", tree["bin/su2"].InoClass == "bin/su", "hard link to bin/su")
	check("bin/sh", tree["bin/sh"].Target == "/bin/busybox", "absolute target kept verbatim")
	check("etc/x", len(tree["etc/x"].Xattrs) == 1 && tree["etc/x"].Xattrs["user.color"] == "blue", "only user.color")
	check("var/cache", tree["var/cache"].Xattrs[whiteout.TrustedOpaque] == "y", "opaque")
	check("etc", tree["etc"].Mtime.Equal(t0) && tree["etc"].Mode == 0o755, "dir time set after its children")
	check(".", tree["."].Mtime.Equal(t0), "root entry applied")
	check("run", tree["run"].Mode == 0o755, "implicit parent 0755")
	if st.Size != int64(len("root:x:0:0::/root:/bin/sh\n")+len("root:*:1::::::\n")+1+len("#!/bin/sh\n")+
		len("/bin/busybox")+len("usr/lib")+len("layer's own entry stays\n")) {
		t.Errorf("content size %d", st.Size)
	}
}

// TestApplyRootlessFormat: without privileges the opaque marker is the
// user.overlay one, as the union writes it rootless.
func TestApplyRootlessFormat(t *testing.T) {
	dst := t.TempDir()
	data := mkTar(t, dir("d"), file("d/.wh..wh..opq", ""), file("d/.wh.gone", ""))
	if _, err := Apply(dst, bytes.NewReader(data), ApplyOptions{Format: whiteout.Format{Rootless: true}}); err != nil {
		t.Fatal(err)
	}
	if got := whiteout.DirOpacityPath(filepath.Join(dst, "d")); got != whiteout.Opaque {
		t.Errorf("d opacity %v, want opaque", got)
	}
	var buf [4]byte
	if n, err := unix.Lgetxattr(filepath.Join(dst, "d"), whiteout.UserOpaque, buf[:]); err != nil || string(buf[:n]) != "y" {
		t.Errorf("user.overlay.opaque: %q, %v", buf[:n], err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "d/gone"), &st); err != nil || !whiteout.IsCharWhiteout(&st) {
		t.Errorf("d/gone is not a char 0/0 whiteout: %v", err)
	}
}

// TestApplyRefuses: each hostile or broken layer is refused with its
// sentinel error, and nothing outside the target changes.
func TestApplyRefuses(t *testing.T) {
	dev := ent{name: "dev/sda", typ: tar.TypeBlock, major: 8, minor: 0, mode: 0o660}
	cases := []struct {
		name string
		ents []ent
		want error
	}{
		{"dotdot", []ent{file("../victim", "pwned")}, image.ErrUnsafePath},
		{"dotdot inside", []ent{dir("a"), file("a/../../victim", "pwned")}, image.ErrUnsafePath},
		{"absolute", []ent{file("/etc/passwd", "pwned")}, image.ErrUnsafePath},
		{"symlink parent escape", []ent{symlink("a", ".."), file("a/victim", "pwned")}, image.ErrUnsafePath},
		{"absolute symlink parent", []ent{symlink("a", "/"), file("a/victim", "pwned")}, image.ErrUnsafePath},
		{"symlink parent inside", []ent{dir("d"), symlink("a", "d"), file("a/f", "x")}, image.ErrUnsafePath},
		{"hard link out", []ent{hardlink("h", "../outside/secret")}, image.ErrUnsafePath},
		{"hard link absolute", []ent{hardlink("h", "/etc/passwd")}, image.ErrUnsafePath},
		{"hard link to missing", []ent{hardlink("h", "nothing")}, image.ErrUnsafePath},
		{"hard link through symlink", []ent{symlink("s", "../outside"), hardlink("h", "s/secret")}, image.ErrUnsafePath},
		{"hard link to dir", []ent{dir("d"), hardlink("h", "d")}, image.ErrUnsafePath},
		{"duplicate file", []ent{file("a", "1"), file("a", "2")}, image.ErrDuplicateEntry},
		{"duplicate dir", []ent{dir("a"), dir("a/")}, image.ErrDuplicateEntry},
		{"dir then file", []ent{file("a/b", "1"), file("a", "2")}, image.ErrDuplicateEntry},
		{"whiteout and entry", []ent{file("a", "1"), file(".wh.a", "")}, image.ErrDuplicateEntry},
		{"entry after whiteout", []ent{file(".wh.a", ""), file("a", "1")}, image.ErrDuplicateEntry},
		{"below whiteout", []ent{file(".wh.a", ""), file("a/b", "1")}, image.ErrDuplicateEntry},
		{"below file", []ent{file("a", "1"), file("a/b", "1")}, image.ErrDuplicateEntry},
		{"two opaque markers", []ent{file("d/.wh..wh..opq", ""), file("d/.wh..wh..opq", "")}, image.ErrDuplicateEntry},
		{"bad whiteout name", []ent{file("d/.wh.", "")}, image.ErrUnsafePath},
		{"below whiteout name", []ent{file(".wh.x/y", "")}, image.ErrUnsafePath},
		{"root as file", []ent{file(".", "")}, image.ErrUnsafePath},
		{"empty name", []ent{file("", "x")}, image.ErrUnsafePath},
		{"device unprivileged", []ent{dev}, image.ErrDeviceNode},
		{"unsupported type", []ent{{name: "v", typ: 'V'}}, image.ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			before := s.outside(t)
			_, err := Apply(s.target, bytes.NewReader(mkTar(t, c.ents...)), ApplyOptions{})
			if !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
			if d := fstest.Diff(before, s.outside(t)); len(d) > 0 {
				t.Errorf("outside of the target changed:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

func TestApplyDevicesAsRoot(t *testing.T) {
	fstest.RequireRoot(t)
	dst := t.TempDir()
	data := mkTar(t, ent{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666})
	if _, err := Apply(dst, bytes.NewReader(data), ApplyOptions{Devices: true}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "dev/null"), &st); err != nil || st.Rdev != unix.Mkdev(1, 3) || st.Mode&0o777 != 0o666 {
		t.Errorf("dev/null: %+v %v", st, err)
	}
}

func TestApplyCorrupt(t *testing.T) {
	data := mkTar(t, file("a", strings.Repeat("x", 4000)), file("b", "y"))
	// Cut inside a header, inside content, between entries (Go's tar
	// reader takes that for the end), and in the end blocks.
	for _, n := range []int{100, 600, 3000, 4608, 512 * 11, len(data) - 600} {
		_, err := Apply(t.TempDir(), bytes.NewReader(data[:n]), ApplyOptions{})
		if !errors.Is(err, image.ErrCorrupt) {
			t.Errorf("truncated at %d: %v, want ErrCorrupt", n, err)
		}
	}
	bad := bytes.Clone(data)
	bad[150] ^= 0xff // header checksum no longer matches
	if _, err := Apply(t.TempDir(), bytes.NewReader(bad), ApplyOptions{}); !errors.Is(err, image.ErrCorrupt) {
		t.Errorf("corrupted header: %v, want ErrCorrupt", err)
	}
}

// TestTarSplitRoundTrip: the record and the unpacked layer give back the
// exact bytes, whatever the writer's choices (PAX records, GNU long names,
// padding, content in entries that are not written as files).
func TestTarSplitRoundTrip(t *testing.T) {
	long := strings.Repeat("long-name/", 20) + "file"
	gnu := func() []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: long, Typeflag: tar.TypeReg, Size: 3, Mode: 0o644, Format: tar.FormatGNU, ModTime: t0,
			Uid: os.Getuid(), Gid: os.Getgid()})
		tw.Write([]byte("abc"))
		tw.WriteHeader(&tar.Header{Name: "x/.wh.y", Typeflag: tar.TypeReg, Size: 5, Mode: 0o644, Format: tar.FormatGNU,
			Uid: os.Getuid(), Gid: os.Getgid()})
		tw.Write([]byte("junk!")) // content of a whiteout: not a file, kept raw
		tw.Close()
		buf.Write(make([]byte, 10240-buf.Len()%10240)) // record padding
		return buf.Bytes()
	}()
	cases := map[string][]byte{
		"every kind": mkTar(t, everyKind()...),
		"gnu":        gnu,
		"empty":      mkTar(t),
		"big":        mkTar(t, file("big", strings.Repeat("0123456789", 100_000)), file("small", "s")),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(name, "every") {
				fstest.RequireRoot(t)
			}
			dst := t.TempDir()
			var split bytes.Buffer
			st, err := Apply(dst, bytes.NewReader(data), ApplyOptions{Split: &split})
			if err != nil {
				t.Fatal(err)
			}
			if !st.Split {
				t.Fatal("record incomplete")
			}
			var out bytes.Buffer
			if err := Reassemble(dst, &split, &out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("reassembled %d bytes (sha256 %x), want %d (sha256 %x)", out.Len(), sha256.Sum256(out.Bytes()), len(data), sha256.Sum256(data))
			}
		})
	}
}

// TestTarSplitSparse: a sparse file's content is not its raw bytes, so the
// record says it is incomplete rather than reassemble something else.
func TestTarSplitSparse(t *testing.T) {
	// An old GNU sparse entry: 512 bytes of data at offset 0 of a 1 MiB file.
	data := gnuSparse(0, 1<<20)
	var split bytes.Buffer
	st, err := Apply(t.TempDir(), bytes.NewReader(data), ApplyOptions{Split: &split})
	if err != nil {
		t.Fatal(err)
	}
	if st.Split {
		t.Error("record of a sparse file claims to be complete")
	}
}

func TestDecompress(t *testing.T) {
	data := mkTar(t, file("a", strings.Repeat("data ", 1000)))
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		var buf bytes.Buffer
		w, err := Compress(&buf, c)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r, got, err := Decompress(&buf)
		if err != nil || got != c {
			t.Fatalf("%v: detected %v, %v", c, got, err)
		}
		out, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(out, data) {
			t.Errorf("%v: round trip differs (%v)", c, err)
		}
	}
	if _, _, err := Decompress(bytes.NewReader([]byte("BZh91AY&SY"))); !errors.Is(err, image.ErrUnsupported) {
		t.Errorf("bzip2: %v, want ErrUnsupported", err)
	}
	var gz bytes.Buffer
	w, _ := Compress(&gz, Gzip)
	w.Write(data)
	w.Close()
	bad := gz.Bytes()[:gz.Len()-20]
	r, _, err := Decompress(bytes.NewReader(bad))
	if err == nil {
		_, err = Apply(t.TempDir(), r, ApplyOptions{})
	}
	if !errors.Is(err, image.ErrCorrupt) {
		t.Errorf("truncated gzip: %v, want ErrCorrupt", err)
	}
}

// TestApplyGlobalHeader: a PAX global header (git archive's comment) is
// no entry, and the tar-split record keeps it.
func TestApplyGlobalHeader(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header",
		PAXRecords: map[string]string{"comment": "0123456789abcdef"}})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Size: 1, Mode: 0o644, Uid: os.Getuid(), Gid: os.Getgid()})
	tw.Write([]byte("x"))
	tw.Close()
	dst := t.TempDir()
	var split bytes.Buffer
	st, err := Apply(dst, bytes.NewReader(buf.Bytes()), ApplyOptions{Split: &split})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Reassemble(dst, &split, &out); err != nil || !st.Split || !bytes.Equal(out.Bytes(), buf.Bytes()) {
		t.Errorf("reassembled %d of %d bytes (complete %v): %v", out.Len(), buf.Len(), st.Split, err)
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 1 || ents[0].Name() != "f" {
		t.Errorf("unpacked %v, want only f", ents)
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"./a/b/": "a/b", "a//b/./c": "a/b/c", "./": ".", ".": ".", "a": "a"} {
		if got, err := CleanName(in); err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/", "/a", "..", "a/..", "a/../b", "../a"} {
		if _, err := CleanName(in); !errors.Is(err, image.ErrUnsafePath) {
			t.Errorf("CleanName(%q): %v, want ErrUnsafePath", in, err)
		}
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestApplyImpliedDirs: a directory the layer creates only as the parent
// of its entries (umoci leaves "etc/" out of a layer that only deletes
// etc/motd when etc's mtime did not change within the second) takes the
// attributes of the directory below, as applying the layer onto the
// unpacked lower would leave them; one with its own entry keeps its own.
func TestApplyImpliedDirs(t *testing.T) {
	fstest.RequireRoot(t)
	lower := t.TempDir()
	err := fstest.Apply(lower,
		fstest.CreateDir("etc", 0o750),
		fstest.CreateDir("own", 0o755),
		fstest.Chown("etc", 12, 34),
		fstest.SetXattr("etc", "user.k", []byte("v")),
		fstest.SetXattr("etc", "trusted.overlay.opaque", []byte("y")), // never inherited
		fstest.Chmod("etc", 0o750),
		fstest.Chtimes("etc", t0, t0),
		fstest.Chtimes(".", t0, t0),
	)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	data := mkTar(t, file("etc/.wh.motd", ""), file("own/x", ""), dir("own"), file("new/y", ""))
	if _, err := Apply(dst, bytes.NewReader(data), ApplyOptions{Lower: NewView([]string{lower}).Dir}); err != nil {
		t.Fatal(err)
	}
	tree, err := fstest.Snapshot(dst, fstest.XattrFilter(allXattrs))
	if err != nil {
		t.Fatal(err)
	}
	if e := tree["etc"]; e.Mode != 0o750 || e.UID != 12 || e.GID != 34 || !e.Mtime.Equal(t0) ||
		len(e.Xattrs) != 1 || e.Xattrs["user.k"] != "v" {
		t.Errorf("implied etc: %+v, want the lower's attributes", e)
	}
	if e := tree["."]; !e.Mtime.Equal(t0) {
		t.Errorf("implied root: mtime %v, want the lower's", e.Mtime)
	}
	if e := tree["own"]; e.Mode != 0o755 || !e.Mtime.Equal(t0) || e.UID != 0 {
		t.Errorf("own: %+v, want its entry's attributes", e)
	}
	if e := tree["new"]; e.Mode != 0o755 || e.UID != 0 || e.Mtime.Equal(t0) {
		t.Errorf("new (nothing below): %+v, want the defaults", e)
	}
}
