package registry

import (
	"testing"

	gcr "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
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
