package store

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
)

// memSource is an image served from memory, as a registry would serve
// it, counting what is fetched.
type memSource struct {
	blobs map[digest.Digest][]byte
	src   PullSource

	mu      sync.Mutex
	fetched []digest.Digest
	// hook, when set, runs before a blob is served; an error fails the
	// fetch.
	hook func(ctx context.Context, d digest.Digest) error
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := layer.Compress(&buf, layer.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newMemSource makes an image of n layers, each adding one file.
func newMemSource(t testing.TB, name string, n int) *memSource {
	t.Helper()
	m := &memSource{blobs: map[digest.Digest][]byte{}}
	var diffIDs []digest.Digest
	var layers []v1.Descriptor
	for i := range n {
		tb := imagetest.Tar(t, []imagetest.Entry{
			{Name: "d/", Type: tar.TypeDir},
			{Name: fmt.Sprintf("d/f%d", i), Body: bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))},
		})
		diffIDs = append(diffIDs, digest.FromBytes(tb))
		gz := gzipped(t, tb)
		d := digest.FromBytes(gz)
		m.blobs[d] = gz
		layers = append(layers, v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(gz))})
	}
	cfg, err := json.Marshal(v1.Image{Platform: v1.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
	if err != nil {
		t.Fatal(err)
	}
	cd := digest.FromBytes(cfg)
	m.blobs[cd] = cfg
	man, _ := json.Marshal(v1.Manifest{MediaType: v1.MediaTypeImageManifest,
		Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))}, Layers: layers})
	m.src = PullSource{Manifest: man, ManifestDigest: digest.FromBytes(man),
		Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
		Layers: layers, Name: name, Repo: "registry.test/x",
		Fetch: m.fetch}
	return m
}

func (m *memSource) fetch(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	m.mu.Lock()
	m.fetched = append(m.fetched, d.Digest)
	hook := m.hook
	m.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, d.Digest); err != nil {
			return nil, err
		}
	}
	b, ok := m.blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s unknown", d.Digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memSource) takeFetched() []digest.Digest {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.fetched
	m.fetched = nil
	return f
}

// TestPullStoresOnceAndFetchesNothingTwice: a pull stores every layer
// with the blob it came from and the manifest; a second pull fetches no
// blob; a pull of an image sharing the bottom layers fetches only the
// config and the layers the store lacks.
func TestPullStoresOnceAndFetchesNothingTwice(t *testing.T) {
	s := newStore(t)
	m := newMemSource(t, "registry.test/x:1", 4)
	var mu sync.Mutex
	states := map[int][]PullState{}
	res, err := s.Pull(context.Background(), m.src, PullOptions{Events: func(e PullEvent) {
		mu.Lock()
		defer mu.Unlock()
		if st := states[e.Layer]; len(st) == 0 || st[len(st)-1] != e.State {
			states[e.Layer] = append(st, e.State)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 5 || res.Layers != 4 || len(m.takeFetched()) != 5 {
		t.Errorf("first pull: %+v, want 5 blobs fetched and 4 layers stored", res)
	}
	for i := range 4 {
		if st := states[i]; st[0] != PullWaiting || st[len(st)-1] != PullComplete || !slices.Contains(st, PullExtracting) {
			t.Errorf("layer %d went through %v", i, st)
		}
	}
	img := res.Image
	if !slices.Equal(img.Names, []string{"registry.test/x:1"}) ||
		!slices.Equal(img.RepoDigests, []string{"registry.test/x@" + m.src.ManifestDigest.String()}) {
		t.Errorf("image %+v", img)
	}
	if b, err := s.Manifest(img, m.src.ManifestDigest); err != nil || !bytes.Equal(b, m.src.Manifest) {
		t.Errorf("manifest kept: %v", err)
	}
	for i, id := range img.Layers {
		l, err := s.Layer(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Blobs) != 1 || l.Blobs[0].Digest != m.src.Layers[i].Digest || !slices.Equal(l.Blobs[0].Repos, []string{"registry.test/x"}) {
			t.Errorf("layer %d blobs %+v", i, l.Blobs)
		}
	}

	// Again: no blob.
	res, err = s.Pull(context.Background(), m.src, PullOptions{})
	if err != nil || res.Image.ID != img.ID {
		t.Fatal(res, err)
	}
	if f := m.takeFetched(); len(f) != 0 || res.Fetched != 0 {
		t.Errorf("second pull fetched %v", f)
	}

	// An image with the same 4 layers and 2 more: the config and 2 blobs.
	m6 := newMemSource(t, "registry.test/x:2", 6)
	res, err = s.Pull(context.Background(), m6.src, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := m6.takeFetched(); len(f) != 3 || res.Layers != 2 {
		t.Errorf("pull of a 6-layer image sharing 4 fetched %d blobs and stored %d layers, want 3 and 2", len(f), res.Layers)
	}
}

// TestPullBadBlobLeavesStoreUnchanged: a layer whose blob does not match
// its digest, a truncated blob, a config that does not match, a layer over
// the size limit: each fails with its sentinel and the store is as it was.
func TestPullBadBlobLeavesStoreUnchanged(t *testing.T) {
	s := newStore(t)
	before := imagetest.StoreFiles(t, s.Root())
	cases := map[string]struct {
		change func(m *memSource)
		want   error
	}{
		"layer digest": {func(m *memSource) {
			b := m.blobs[m.src.Layers[2].Digest]
			b[len(b)-5] ^= 0xff
		}, image.ErrDigestMismatch},
		"truncated": {func(m *memSource) {
			d := m.src.Layers[1].Digest
			m.blobs[d] = m.blobs[d][:20]
		}, image.ErrCorrupt},
		"config": {func(m *memSource) { m.blobs[m.src.Config.Digest] = []byte("{}") }, image.ErrDigestMismatch},
		"media type": {func(m *memSource) {
			m.src.Layers[0].MediaType = "application/vnd.example.evil"
		}, image.ErrUnsupported},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m := newMemSource(t, "registry.test/x:1", 3)
			c.change(m)
			_, err := s.Pull(context.Background(), m.src, PullOptions{})
			if !errors.Is(err, c.want) {
				t.Fatalf("pull: %v, want %v", err, c.want)
			}
			if after := imagetest.StoreFiles(t, s.Root()); !slices.Equal(before, after) {
				t.Errorf("store changed:\n%v\n%v", before, after)
			}
		})
	}
	t.Run("max layer size", func(t *testing.T) {
		small, err := Open(Options{Root: s.Root(), MaxLayerSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		m := newMemSource(t, "registry.test/x:1", 3)
		if _, err := small.Pull(context.Background(), m.src, PullOptions{}); !errors.Is(err, image.ErrTooLarge) {
			t.Fatalf("pull: %v, want ErrTooLarge", err)
		}
		if f := m.takeFetched(); len(f) != 0 {
			t.Errorf("fetched %v before refusing", f)
		}
	})
}

// TestPullInterruptedKeepsCompleteLayers: a pull cancelled while it
// fetches layer 3 of 4 (one download at a time, so layers 1 and 2 are
// complete by then) keeps those two, no partial layer and no image; the
// next pull fetches only the config and the two missing layers.
func TestPullInterruptedKeepsCompleteLayers(t *testing.T) {
	s := newStore(t)
	m := newMemSource(t, "registry.test/x:1", 4)
	ctx, cancel := context.WithCancel(context.Background())
	m.hook = func(ctx context.Context, d digest.Digest) error {
		if d == m.src.Layers[2].Digest {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	_, err := s.Pull(ctx, m.src, PullOptions{Jobs: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pull: %v", err)
	}
	ls, err := s.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if imgs, _ := s.Images(); len(ls) != 2 || len(imgs) != 0 {
		t.Fatalf("after the interrupted pull: %d layers, %d images; want 2 and 0", len(ls), len(imgs))
	}
	m.hook = nil
	m.takeFetched()
	res, err := s.Pull(context.Background(), m.src, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{m.src.Config.Digest, m.src.Layers[2].Digest, m.src.Layers[3].Digest}
	f := m.takeFetched()
	slices.Sort(f)
	slices.Sort(want)
	if !slices.Equal(f, want) || res.Layers != 2 {
		t.Errorf("the next pull fetched %v, stored %d layers; want %v and 2", f, res.Layers, want)
	}
}
