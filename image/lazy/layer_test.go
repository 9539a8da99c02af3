package lazy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/lazy"
)

// memBlob is a blob in memory that counts reads and can hand out other
// bytes.
type memBlob struct {
	b      []byte
	mu     sync.Mutex
	reads  int
	tamper bool
}

func (m *memBlob) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	m.mu.Lock()
	m.reads++
	tamper := m.tamper
	m.mu.Unlock()
	n := copy(p, m.b[off:])
	if tamper {
		// Valid gzip of other bytes, where the chunk's member starts.
		copy(p, zipped(bytes.Repeat([]byte{'X'}, len(p))))
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memBlob) take() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.reads
	m.reads = 0
	return n
}

func zipped(b []byte) []byte {
	var out bytes.Buffer
	zw, _ := layer.Compress(&out, layer.Gzip)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// bigFile is 4.7 MB of seeded random bytes (identical chunks would be
// cached once: the cache is content-addressed).
func bigFile() []byte {
	b := make([]byte, 4<<20+500000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func layerTar(t *testing.T) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range []struct {
		name string
		body []byte
	}{
		{"bin/sh", []byte("#!shell\n")},
		{"big", bigFile()}, // 4.7 MB: 2 chunks (4 MiB and the rest), different
		{"etc/motd", []byte("welcome\n")},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.body)
	}
	tw.Close()
	return b.Bytes()
}

func open(t *testing.T, prioritized []string) (*lazy.Layer, *memBlob, []byte) {
	in := layerTar(t)
	var out bytes.Buffer
	eb, err := layer.BuildEstargz(io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))), &out, prioritized)
	if err != nil {
		t.Fatal(err)
	}
	blob := &memBlob{b: out.Bytes()}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob.b), 0, int64(len(blob.b))))
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.VerifyTOC(eb.TOCDigest)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := lazy.OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return lazy.New(r, v, blob, cache, lazy.Options{}), blob, in
}

// TestPrefetch: the chunks of the files before the prefetch landmark
// (both chunks of "big") are fetched by Prefetch, in blob order, and
// reading "big" afterwards fetches nothing, across chunk boundaries; other
// files are fetched on read. Without a landmark nothing is prefetched.
func TestPrefetch(t *testing.T) {
	ctx := context.Background()
	l, blob, _ := open(t, []string{"big"})
	n, err := l.Prefetch(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Prefetch: %d chunks, %v; want the 2 of big", n, err)
	}
	if r := blob.take(); r != 2 {
		t.Errorf("Prefetch made %d reads, want 2", r)
	}
	want := bigFile()
	got := make([]byte, 400000)
	off := int64(4<<20 - 1000) // across the first chunk boundary
	if n, err := l.ReadFile(ctx, "big", got, off); err != nil || n != len(got) || !bytes.Equal(got, want[off:off+int64(len(got))]) {
		t.Errorf("big at %d: %d, %v", off, n, err)
	}
	if r := blob.take(); r != 0 {
		t.Errorf("reading prefetched big made %d reads", r)
	}
	tail := make([]byte, 10)
	if n, err := l.ReadFile(ctx, "big", tail, int64(len(want))-4); n != 4 || err != io.EOF || !bytes.Equal(tail[:4], want[len(want)-4:]) {
		t.Errorf("read past the end: %d %v %q", n, err, tail[:n])
	}
	b := make([]byte, 8)
	if _, err := l.ReadFile(ctx, "etc/motd", b, 0); err != nil || string(b) != "welcome\n" || blob.take() != 1 {
		t.Errorf("etc/motd: %q, %v", b, err)
	}

	l2, blob2, _ := open(t, nil)
	if n, err := l2.Prefetch(ctx); n != 0 || err != nil || blob2.take() != 0 {
		t.Errorf("Prefetch without a landmark: %d, %v", n, err)
	}
	blob2.tamper = true
	if n, err := l2.ReadFile(ctx, "bin/sh", b, 0); !errors.Is(err, lazy.ErrTampered) || n != 0 {
		t.Errorf("tampered: %d, %v; want ErrTampered and no bytes", n, err)
	}
}
