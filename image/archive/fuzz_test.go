package archive

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image"
)

// FuzzOpen feeds arbitrary bytes to the archive reader as a docker-archive
// or oci-archive. It must not panic, must only fail with the kinds it
// documents, and reading a blob must end in a documented error or EOF.
//
//	go test ./image/archive -run '^$' -fuzz FuzzOpen -fuzztime 2m
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	// Seeds: the archives TestWriteRead writes.
	l := []byte("layer")
	cfg := []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`)
	p := filepath.Join(dir, "l")
	os.WriteFile(p, l, 0o644)
	imgs := []SaveImage{{Config: cfg, Names: []string{"a:1"}, Layers: []SaveLayer{{Path: p, Size: 5, Digest: digest.FromBytes(l), DiffID: digest.FromBytes(l), MediaType: "application/vnd.oci.image.layer.v1.tar"}}}}
	var oci, dock bytes.Buffer
	WriteOCIArchive(&oci, imgs)
	WriteDockerArchive(&dock, imgs)
	f.Add(oci.Bytes())
	f.Add(dock.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "a.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := Open(p, t.TempDir())
		if err != nil {
			if !known(err) {
				t.Fatalf("unexpected kind of error: %v", err)
			}
			return
		}
		defer src.Close()
		for _, img := range src.Images {
			for _, b := range img.Layers {
				r, err := b.Open()
				if err != nil {
					if !known(err) {
						t.Fatalf("open blob: unexpected kind of error: %v", err)
					}
					continue
				}
				_, err = io.Copy(io.Discard, io.LimitReader(r, 1<<20))
				r.Close()
				if err != nil && !known(err) {
					t.Fatalf("read blob: unexpected kind of error: %v", err)
				}
			}
		}
	})
}

func known(err error) bool {
	for _, k := range []error{image.ErrCorrupt, image.ErrUnsupported, image.ErrDigestMismatch} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}
