package registry

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	gcr "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image/layer"
)

// FuzzManifests: whatever a registry sends as a manifest or an index,
// reading it does not panic; an accepted manifest hashes to the digest
// it is filed under and names a config, and a platform picked from an
// index is a valid sha256 digest.
func FuzzManifests(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:`+
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"+`","size":2},"layers":[]}`), false)
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"+`","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}`), true)
	f.Add([]byte(`{"manifests":[{"platform":null}]}`), true)
	f.Fuzz(func(t *testing.T, raw []byte, index bool) {
		if index {
			h, err := pickPlatform(raw, gcr.Platform{OS: "linux", Architecture: "amd64"})
			if err == nil {
				if _, err := digest.Parse(h.String()); err != nil {
					t.Fatalf("picked %q: %v", h, err)
				}
			}
			return
		}
		d := digest.FromBytes(raw).String()
		for _, mt := range []types.MediaType{types.OCIManifestSchema1, types.DockerManifestSchema2} {
			src, err := pullSource(raw, mt, d)
			if err != nil {
				continue
			}
			if src.ManifestDigest.String() != d || src.Config.MediaType == "" {
				t.Fatalf("accepted %q as %+v", raw, src)
			}
		}
		if _, err := pullSource(raw, types.OCIManifestSchema1, "sha256:0"); err == nil {
			t.Fatal("accepted a manifest under a digest it does not hash to")
		}
	})
}

// FuzzOpenTOC: whatever a registry serves as an eStargz blob, opening
// its TOC does not panic, and a TOC that opens hashes to the digest it
// was checked against. Content-Range headers parse or are refused.
func FuzzOpenTOC(f *testing.F) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644})
	tw.Write([]byte("hi"))
	tw.Close()
	var blob bytes.Buffer
	eb, err := layer.BuildEstargz(io.NewSectionReader(bytes.NewReader(tb.Bytes()), 0, int64(tb.Len())), &blob, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob.Bytes(), eb.TOCDigest.String(), "bytes 0-1/2")
	f.Add([]byte("garbage"), eb.TOCDigest.String(), "bytes -1-/")
	f.Fuzz(func(t *testing.T, b []byte, d string, cr string) {
		rangeStart(cr)
		want, err := digest.Parse(d)
		if err != nil {
			return
		}
		tr, _, err := OpenTOC(b, 0, int64(len(b)), bytes.NewReader(nil), want)
		if err == nil && tr.TOCDigest() != want {
			t.Fatalf("accepted a TOC hashing to %s as %s", tr.TOCDigest(), want)
		}
	})
}
