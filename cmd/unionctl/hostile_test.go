package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/internal/fstest"
)

func compressed(t *testing.T, c layer.Compression, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := layer.Compress(&buf, c)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestHostileLayers: the hostile layers of image/layer's corpus that only
// make sense end to end (decompression bombs against the store's limit,
// a corrupted zstd stream, names Linux cannot hold), through import and
// load: each is refused with one line that says what to do, exit 1, and
// the store is as it was.
func TestHostileLayers(t *testing.T) {
	fstest.RequireRoot(t)
	zeros := imagetest.Tar(t, []imagetest.Entry{{Name: "zeros", Body: make([]byte, 16<<20)}})
	var text strings.Builder
	for i := range 20_000 {
		text.WriteString(strings.Repeat("x", i%61) + "\n")
	}
	zst := compressed(t, layer.Zstd, imagetest.Tar(t, []imagetest.Entry{{Name: "f", Body: []byte(text.String())}}))
	flipped := bytes.Clone(zst)
	flipped[len(flipped)/2] ^= 0x55

	// A bomb in an archive: an image of 16 MiB of zeros saved with
	// zstd layers is a 1 KiB blob.
	src := imagetest.NewSession(t)
	src.Must(zeros, "import", "-", "zeros:1")
	bombArchive := filepath.Join(t.TempDir(), "bomb.tar")
	src.Must(nil, "save", "--compression", "zstd", "-o", bombArchive, "zeros:1")
	if st, err := os.Stat(bombArchive); err != nil || st.Size() > 256<<10 {
		t.Fatalf("bomb archive: %v, %v; want a small file", st, err)
	}

	s := imagetest.NewSession(t)
	s.Must(imagetest.Tar(t, []imagetest.Entry{{Name: "f", Body: []byte("x")}}), "import", "-", "good:1")
	checkRefusals(t, s, map[string]refusal{
		"gzip bomb":       {[]string{"import", "--max-layer-size", "1M", "-", "bad:1"}, compressed(t, layer.Gzip, zeros), "layer too large"},
		"zstd bomb":       {[]string{"import", "--max-layer-size", "1M", "-", "bad:1"}, compressed(t, layer.Zstd, zeros), "layer too large"},
		"bomb in archive": {[]string{"load", "--max-layer-size", "1M", "-i", bombArchive}, nil, "layer too large"},
		"corrupted zstd":  {[]string{"import", "-", "bad:1"}, flipped, "corrupt or truncated"},
		"long name":       {[]string{"import", "-", "bad:1"}, imagetest.Tar(t, []imagetest.Entry{{Name: strings.Repeat("n", 256)}}), "at most 255 bytes"},
		"deep nesting": {[]string{"import", "-", "bad:1"},
			imagetest.Tar(t, []imagetest.Entry{{Name: strings.Repeat("d/", 10_000) + "f"}}), "shorter than 4096 bytes"},
	})
	if r := s.Run(compressed(t, layer.Gzip, zeros), "import", "--max-layer-size", "1M", "-", "bad:1"); !strings.Contains(r.Stderr, "--max-layer-size") {
		t.Errorf("the bomb's error does not say how to raise the limit: %v", r)
	}
	// Under the default limit (the store's free space less a reserve)
	// the same layers load.
	s.Must(compressed(t, layer.Gzip, zeros), "import", "-", "zeros:1")
	s.Must(nil, "load", "-i", bombArchive)
}

// TestSetuidAndDevicesInLayers: as root, setuid and setgid files and
// device nodes of an image are kept, as docker keeps them (images ship
// su and ping; /dev/null in a rootfs). They are no way in for the host:
// the store root is 0700, so no other user reaches a layer's files, and
// the union is mounted nodev, so a device node of an image opens nothing.
func TestSetuidAndDevicesInLayers(t *testing.T) {
	fstest.RequireRoot(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/rootshell", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 1},
		{Name: "bin/mail", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 8, Size: 1},
		{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "dev/sda", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 8, Devminor: 0},
		{Name: "dev/mem", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1},
	} {
		h.ModTime, h.Format = imagetest.T0, tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("x"))
		}
	}
	tw.Close()
	s := imagetest.NewSession(t)
	s.Must(buf.Bytes(), "import", "-", "suid:1")
	var st unix.Stat_t
	if err := unix.Stat(s.Root, &st); err != nil || st.Mode&0o777 != 0o700 || st.Uid != 0 {
		t.Errorf("store root: mode %o uid %d (%v), want 0700 root", st.Mode&0o777, st.Uid, err)
	}
	s.Must(nil, "create", "--name", "c", "suid:1", "/bin/rootshell")
	merged := strings.TrimSpace(s.Must(nil, "mount", "c").Stdout)
	defer s.Run(nil, "umount", "c")
	for p, mode := range map[string]uint32{"bin/rootshell": unix.S_IFREG | 0o4755, "bin/mail": unix.S_IFREG | 0o2755,
		"dev/sda": unix.S_IFBLK | 0o666, "dev/mem": unix.S_IFCHR | 0o666} {
		if err := unix.Lstat(filepath.Join(merged, p), &st); err != nil || st.Mode != mode {
			t.Errorf("%s through the union: mode %o (%v), want %o", p, st.Mode, err, mode)
		}
	}
	for _, p := range []string{"dev/sda", "dev/mem"} {
		if f, err := os.Open(filepath.Join(merged, p)); err == nil {
			f.Close()
			t.Errorf("%s of an image opens through the union, want EACCES (nodev)", p)
		} else if !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s: %v, want EACCES (nodev)", p, err)
		}
	}
}
