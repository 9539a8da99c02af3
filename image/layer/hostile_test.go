package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/internal/fstest"
)

// applyHostile applies data (compressed or not) in a fresh sandbox and
// fails the test if anything outside the target changed.
func applyHostile(t *testing.T, data []byte, opts ApplyOptions) (sandbox, Stats, error) {
	t.Helper()
	s := newSandbox(t)
	before := s.outside(t)
	var st Stats
	r, _, err := Decompress(bytes.NewReader(data))
	if err == nil {
		st, err = Apply(s.target, r, opts)
		r.Close()
	}
	if d := fstest.Diff(before, s.outside(t)); len(d) > 0 {
		t.Errorf("outside of the target changed:\n%s", strings.Join(d, "\n"))
	}
	return s, st, err
}

// TestApplyHugeNames: a name component longer than NAME_MAX, a path or a
// symlink target of PATH_MAX or more, are refused as ErrUnsupported
// before anything is created; the longest names Linux allows apply.
func TestApplyHugeNames(t *testing.T) {
	long := strings.Repeat("n", 256)
	deepPath := strings.Repeat("abcdefghi/", 410) + "f" // 4101 bytes, components of 9
	for _, c := range []struct {
		name string
		ents []ent
	}{
		{"component of 256 bytes", []ent{file(long, "x")}},
		{"dir component of 256 bytes", []ent{file(long+"/f", "x")}},
		{"path of 4101 bytes", []ent{file(deepPath, "x")}},
		{"path of 1 MiB", []ent{file(strings.Repeat("a/", 500_000)+"f", "x")}},
		{"hard link target of 4101 bytes", []ent{file("f", "x"), hardlink("h", deepPath)}},
		{"symlink target of 4096 bytes", []ent{symlink("s", strings.Repeat("t", 4096))}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _, err := applyHostile(t, mkTar(t, c.ents...), ApplyOptions{})
			if !errors.Is(err, image.ErrUnsupported) || !strings.Contains(err.Error(), "Linux") {
				t.Fatalf("error %v, want ErrUnsupported naming the Linux limit", err)
			}
			if n := strings.Count(err.Error(), "\n"); n > 0 {
				t.Errorf("error spans %d lines", n+1)
			}
			if ents, _ := os.ReadDir(s.target); len(ents) > 1 {
				t.Errorf("target holds %d entries", len(ents))
			}
		})
	}
	t.Run("longest allowed", func(t *testing.T) {
		name := strings.Repeat("n", 255)
		target := strings.Repeat("t", 4095)
		s, _, err := applyHostile(t, mkTar(t, file(name, "x"), symlink("s", target)), ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(filepath.Join(s.target, "s")); err != nil || got != target {
			t.Errorf("symlink target of %d bytes, %v; want 4095", len(got), err)
		}
		if _, err := os.Stat(filepath.Join(s.target, name)); err != nil {
			t.Error(err)
		}
	})
}

// TestApplyDeepNesting: 10,000 levels cannot be named in fewer than
// PATH_MAX bytes, so the entry is refused before a directory is made;
// 2,000 levels (4,001 bytes) apply, in time linear in the depth, and the
// tree can be read and removed.
func TestApplyDeepNesting(t *testing.T) {
	s, _, err := applyHostile(t, mkTar(t, file(strings.Repeat("d/", 10_000)+"f", "deep")), ApplyOptions{})
	if !errors.Is(err, image.ErrUnsupported) {
		t.Fatalf("10,000 levels: %v, want ErrUnsupported", err)
	}
	if ents, _ := os.ReadDir(s.target); len(ents) != 0 {
		t.Errorf("10,000 levels: target holds %d entries, want none", len(ents))
	}

	rel := strings.Repeat("d/", 2000) + "f"
	s, st, err := applyHostile(t, mkTar(t, file(rel, "deep"), dir(strings.Repeat("d/", 1000))), ApplyOptions{})
	if err != nil {
		t.Fatalf("2,000 levels: %v", err)
	}
	if st.Entries != 2 {
		t.Errorf("%d entries, want 2", st.Entries)
	}
	root, err := os.OpenRoot(s.target)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if b, err := root.ReadFile(rel); err != nil || string(b) != "deep" {
		t.Errorf("the deepest file: %q, %v", b, err)
	}
	if err := os.RemoveAll(s.target); err != nil {
		t.Errorf("remove the deep tree: %v", err)
	}
}

// sparseBomb is an old GNU sparse tar entry of 512 bytes of data at the
// end of a file of size bytes: a stream of 2.5 KiB that writes size bytes
// (Go's tar reader gives the holes as zeros).
func sparseBomb(size int64) []byte { return gnuSparse(size-512, size) }

// gnuSparse is a tar stream of one old GNU sparse entry, "sparse": 512
// bytes of data at offset of a file of size bytes.
func gnuSparse(offset, size int64) []byte {
	var hdr [512]byte
	copy(hdr[0:], "sparse")
	copy(hdr[100:], "0000644\x00")
	copy(hdr[108:], fmt.Sprintf("%07o\x00", os.Getuid()))
	copy(hdr[116:], fmt.Sprintf("%07o\x00", os.Getgid()))
	copy(hdr[124:], fmt.Sprintf("%011o\x00", 512))
	copy(hdr[136:], fmt.Sprintf("%011o\x00", t0.Unix()))
	hdr[156] = 'S'
	copy(hdr[257:], "ustar  \x00")
	copy(hdr[386:], fmt.Sprintf("%011o\x00", offset)) // sparse[0].offset
	copy(hdr[398:], fmt.Sprintf("%011o\x00", 512))    // sparse[0].numbytes
	copy(hdr[483:], fmt.Sprintf("%011o\x00", size))   // real size
	copy(hdr[148:], "        ")
	sum := 0
	for _, b := range hdr {
		sum += int(b)
	}
	copy(hdr[148:], fmt.Sprintf("%06o\x00 ", sum))
	data := append(hdr[:], bytes.Repeat([]byte{'d'}, 512)...)
	return append(data, make([]byte, 1024)...)
}

func compress(t *testing.T, c Compression, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := Compress(&buf, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestApplyDecompressionBombs: a small gzip or zstd layer that expands to
// 16 times MaxSize, and a sparse entry that writes as much from a stream
// of 2.5 KiB, stop with ErrTooLarge once MaxSize bytes are read or written,
// and write no more than that.
func TestApplyDecompressionBombs(t *testing.T) {
	const limit = 1 << 20
	zeros := mkTar(t, file("zeros", string(make([]byte, 16*limit))))
	bombs := map[string][]byte{
		"gzip":   compress(t, Gzip, zeros),
		"zstd":   compress(t, Zstd, zeros),
		"sparse": sparseBomb(16 * limit),
	}
	for name, data := range bombs {
		t.Run(name, func(t *testing.T) {
			if len(data) > 256<<10 {
				t.Fatalf("the bomb is %d bytes: not small", len(data))
			}
			s, _, err := applyHostile(t, data, ApplyOptions{MaxSize: limit})
			if !errors.Is(err, image.ErrTooLarge) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("%d-byte bomb: %v, want one line of ErrTooLarge", len(data), err)
			}
			u, err := DiskUsage(s.target)
			if err != nil {
				t.Fatal(err)
			}
			if u.Content > limit {
				t.Errorf("wrote %d bytes, more than the limit of %d", u.Content, limit)
			}
			// The same layer under a limit it fits in applies.
			if _, _, err := applyHostile(t, data, ApplyOptions{MaxSize: 17 * limit}); err != nil {
				t.Errorf("under a limit of 17 MiB: %v", err)
			}
		})
	}
}

// TestSpaceLimit: the default limit is the free space less a reserve.
func TestSpaceLimit(t *testing.T) {
	dir := t.TempDir()
	got, err := SpaceLimit(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Frsize
	if got <= 0 || got > free || got < free-(1<<30)-(64<<20) {
		t.Errorf("limit %d with %d bytes free: want the free space less at most 1 GiB", got, free)
	}
	if _, err := SpaceLimit(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing directory")
	}
}

// TestApplyCorruptZstd: a zstd layer with one byte flipped half way, or
// cut short, is ErrCorrupt (zstd frames carry a checksum), deterministic
// because the input is.
func TestApplyCorruptZstd(t *testing.T) {
	var body strings.Builder
	for i := range 20_000 {
		fmt.Fprintf(&body, "line %d of a file that compresses\n", i*i)
	}
	good := compress(t, Zstd, mkTar(t, file("f", body.String()), file("g", "g")))
	if _, _, err := applyHostile(t, good, ApplyOptions{}); err != nil {
		t.Fatalf("the intact stream: %v", err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x55
	for name, data := range map[string][]byte{"flipped": flipped, "truncated": good[:len(good)*2/3]} {
		if _, _, err := applyHostile(t, data, ApplyOptions{}); !errors.Is(err, image.ErrCorrupt) {
			t.Errorf("%s zstd: %v, want ErrCorrupt", name, err)
		}
	}
}

// TestApplySetuidAndDevices: setuid and setgid files and directories are
// kept with their owners and bits, as docker keeps them: images ship
// su, passwd and ping, and the union shows them to the container only
// (the store root is 0700, so no host user reaches a layer's files).
// Device nodes are kept as root (the union mount is nodev, so none opens
// through it) and refused unprivileged (ErrDeviceNode): see
// TestApplyRefuses and TestApplyDevicesAsRoot.
func TestApplySetuidAndDevices(t *testing.T) {
	fstest.RequireRoot(t)
	suid := file("bin/rootshell", "#!/bin/sh\n")
	suid.mode, suid.uid, suid.gid = 0o4755, 0, 0
	sgid := file("bin/mail", "x")
	sgid.mode, sgid.uid, sgid.gid = 0o2755, 1000, 8
	sgidDir := dir("var/mail")
	sgidDir.mode, sgidDir.gid = 0o2775, 8
	both := file("bin/both", "x")
	both.mode, both.uid = 0o6711, 0
	mem := ent{name: "dev/mem", typ: tar.TypeChar, major: 1, minor: 1, mode: 0o640}
	sda := ent{name: "dev/sda", typ: tar.TypeBlock, major: 8, minor: 0, mode: 0o660}
	s, _, err := applyHostile(t, mkTar(t, suid, sgid, sgidDir, both, mem, sda), ApplyOptions{Devices: true})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := fstest.Snapshot(s.target)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]struct {
		mode     uint32
		uid, gid uint32
	}{
		"bin/rootshell": {0o4755, 0, 0}, "bin/mail": {0o2755, 1000, 8}, "var/mail": {0o2775, 0, 8},
		"bin/both": {0o6711, 0, 0}, "dev/mem": {0o640, 0, 0}, "dev/sda": {0o660, 0, 0},
	} {
		if e := tree[p]; uint32(e.Mode) != want.mode || uint32(e.UID) != want.uid || uint32(e.GID) != want.gid {
			t.Errorf("%s: %o %d:%d, want %o %d:%d", p, e.Mode, e.UID, e.GID, want.mode, want.uid, want.gid)
		}
	}
	if e := tree["dev/sda"]; e.Type != fstest.TypeBlock || e.Rdev != unix.Mkdev(8, 0) {
		t.Errorf("dev/sda: %+v, want block 8:0", e)
	}
	// Unprivileged, the same layer is refused at its first device.
	if _, _, err := applyHostile(t, mkTar(t, suid, mem), ApplyOptions{}); !errors.Is(err, image.ErrDeviceNode) {
		t.Errorf("devices without ApplyOptions.Devices: %v, want ErrDeviceNode", err)
	}
}
