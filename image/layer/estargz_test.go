package layer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
)

func estargzTestTar(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB: several chunks
	add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	add(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeReg, Mode: 0o755}, []byte("#!shell\n"))
	add(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644}, big)
	add(&tar.Header{Name: "ln", Typeflag: tar.TypeSymlink, Linkname: "big"}, nil)
	add(&tar.Header{Name: ".wh.gone", Typeflag: tar.TypeReg}, nil)
	tw.Close()
	return b.Bytes()
}

// TestBuildEstargz: the blob is gzip whose uncompressed digest is the
// diff_id reported, the estargz reader opens it and verifies it against
// the TOC digest reported, files read back, prioritized files come first,
// and the same tar gives the same blob again (pushes are reproducible).
func TestBuildEstargz(t *testing.T) {
	in := estargzTestTar(t)
	var out bytes.Buffer
	eb, err := BuildEstargz(io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))), &out, []string{"big", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	blob := out.Bytes()
	if eb.Digest != digest.FromBytes(blob) || eb.Size != int64(len(blob)) {
		t.Errorf("digest/size %s %d, blob is %s %d", eb.Digest, eb.Size, digest.FromBytes(blob), len(blob))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if d := digest.FromBytes(raw); d != eb.DiffID || int64(len(raw)) != eb.UncompressedSize {
		t.Errorf("gunzipped blob: %s %d bytes; reported diff_id %s, size %d", d, len(raw), eb.DiffID, eb.UncompressedSize)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.VerifyTOC(eb.TOCDigest)
	if err != nil {
		t.Fatalf("VerifyTOC(%s): %v", eb.TOCDigest, err)
	}
	if _, err := r.VerifyTOC(digest.FromString("other")); err == nil {
		t.Error("VerifyTOC accepted a wrong digest")
	}
	e, ok := r.Lookup("big")
	if !ok {
		t.Fatal("big not in the TOC")
	}
	if _, err := v.Verifier(e); err != nil {
		t.Errorf("no verifier for big: %v", err)
	}
	sr, err := r.OpenFile("big")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(sr)
	if !bytes.Equal(got, bytes.Repeat([]byte("0123456789abcdef"), 40000)) {
		t.Errorf("big reads back as %d other bytes", len(got))
	}
	// The prioritized file is the first entry of the tar.
	if h, err := tar.NewReader(bytes.NewReader(raw)).Next(); err != nil || h.Name != "big" {
		t.Errorf("first entry %v, %v; want big", h, err)
	}
	if a := eb.Annotations(); a[AnnotationTOCDigest] != eb.TOCDigest.String() || a[AnnotationUncompressedSize] == "" {
		t.Errorf("annotations %v", a)
	}

	var again bytes.Buffer
	eb2, err := BuildEstargz(io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))), &again, []string{"big", "missing"})
	if err != nil || eb2 != eb {
		t.Errorf("second build: %+v, %v; first %+v", eb2, err, eb)
	}
}
