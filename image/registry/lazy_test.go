package registry

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/lazy"
	"github.com/unionmount/unionmount/image/registrytest"
	"github.com/unionmount/unionmount/image/store"
)

// rangeProxy sits between the client and a real registry: it refuses
// multi-range requests (416, as some blob stores do), can drop the Range
// header (the registry then sends 200 and the whole blob), and counts
// blob requests and the body bytes it forwarded.
type rangeProxy struct {
	host        string
	ignoreRange bool
	// mode "hang": every request waits until the client gives up;
	// "tamper": a blob range request gets a well-formed gzip member of
	// other bytes ("wElcome\n"), padded to the length asked for.
	mode string

	mu       sync.Mutex
	requests int
	bytes    int64
}

func newRangeProxy(t *testing.T, target string) *rangeProxy {
	u, _ := url.Parse("http://" + target)
	p := &rangeProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		mode := p.mode
		p.mu.Unlock()
		if mode == "hang" {
			<-r.Context().Done()
			return
		}
		if !strings.Contains(r.URL.Path, "/blobs/") || r.Method != http.MethodGet {
			rp.ServeHTTP(w, r)
			return
		}
		if strings.Contains(r.Header.Get("Range"), ",") {
			http.Error(w, "multiple ranges not supported", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		p.mu.Lock()
		p.requests++
		ignore := p.ignoreRange
		p.mu.Unlock()
		if ignore {
			r.Header.Del("Range")
		}
		if mode == "tamper" {
			var start, end int64
			if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end); err == nil {
				var b bytes.Buffer
				zw := gzip.NewWriter(&b)
				zw.Write([]byte("wElcome\n"))
				zw.Close()
				body := make([]byte, end-start+1)
				copy(body, b.Bytes())
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", start, end))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(body)
				return
			}
		}
		rp.ServeHTTP(&countingResponse{ResponseWriter: w, p: p}, r)
	}))
	t.Cleanup(srv.Close)
	p.host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *rangeProxy) setIgnoreRange(b bool) {
	p.mu.Lock()
	p.ignoreRange = b
	p.mu.Unlock()
}

func (p *rangeProxy) setMode(m string) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
}

func (p *rangeProxy) take() (int, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, b := p.requests, p.bytes
	p.requests, p.bytes = 0, 0
	return n, b
}

type countingResponse struct {
	http.ResponseWriter
	p *rangeProxy
}

func (c *countingResponse) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.p.mu.Lock()
	c.p.bytes += int64(n)
	c.p.mu.Unlock()
	return n, err
}

// TestOpenLazyRealRegistry: an image pushed as eStargz to Debian's
// docker-registry opens lazily: each layer's TOC is fetched by single
// Range requests (through a proxy that refuses multi-range), verified
// against the annotation, and a file reads back by its chunks, at a small
// part of the blob bytes. A registry that ignores Range still works. A
// manifest whose toc.digest annotation is wrong refuses the lazy pull
// with ErrTOCMismatch in one line.
func TestOpenLazyRealRegistry(t *testing.T) {
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 1)+":base", "bb:1")
	s := newStore(t)
	opts := testOptions(t)
	ctx := context.Background()
	src, _ := image.ParseRemote(reg.Host + "/bb:1")
	_, res, err := Pull(ctx, s, src, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	eopts := opts
	eopts.Estargz = true
	dst, _ := image.ParseRemote(reg.Host + "/bb:esgz")
	if _, err := Push(ctx, s, res.Image, dst, eopts, nil); err != nil {
		t.Fatal(err)
	}

	p := newRangeProxy(t, reg.Host)
	open := func(tag string) (*Resolved, []*LazyLayer, error) {
		t.Helper()
		ref, _ := image.ParseRemote(p.host + "/bb:" + tag)
		r, err := Resolve(ctx, ref, opts)
		if err != nil {
			t.Fatal(err)
		}
		lls, err := OpenLazy(ctx, r, opts)
		return r, lls, err
	}
	r, lls, err := open("esgz")
	if err != nil {
		t.Fatal(err)
	}
	n, fetched := p.take()
	var total int64
	for i, ll := range lls {
		if !ll.Lazy() {
			t.Errorf("layer %d is not lazy: %+v", i, ll.Descriptor)
		}
		total += ll.Descriptor.Size
	}
	t.Logf("TOCs of %d layers: %d requests, %d of %d blob bytes", len(lls), n, fetched, total)
	if n != 2*len(lls) || fetched*10 > total {
		t.Errorf("TOCs took %d requests and %d bytes; want 2 per layer (footer, TOC) and under a tenth of the %d blob bytes", n, fetched, total)
	}
	readMotd := func(lls []*LazyLayer) {
		t.Helper()
		f, err := lls[0].TOC.OpenFile("etc/motd")
		if err != nil {
			t.Fatalf("etc/motd: %v", err)
		}
		b, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
		if err != nil || string(b) != "welcome\n" {
			t.Errorf("etc/motd reads %q, %v", b, err)
		}
		// The chunk digest in the verified TOC checks those bytes, and
		// no others.
		e, _ := lls[0].TOC.ChunkEntryForOffset("etc/motd", 0)
		for _, body := range []string{"welcome\n", "welcomE\n"} {
			v, err := lls[0].Verifier.Verifier(e)
			if err != nil {
				t.Fatal(err)
			}
			v.Write([]byte(body))
			if v.Verified() != (body == "welcome\n") {
				t.Errorf("chunk verifier says %v for %q", v.Verified(), body)
			}
		}
	}
	readMotd(lls)
	if n, _ := p.take(); n != 1 {
		t.Errorf("reading etc/motd took %d requests, want 1", n)
	}

	p.setIgnoreRange(true)
	if _, lls, err = open("esgz"); err != nil {
		t.Fatalf("registry ignoring Range: %v", err)
	}
	readMotd(lls)
	p.setIgnoreRange(false)

	// The same manifest with a wrong toc.digest on the second layer.
	var m v1.Manifest
	if err := json.Unmarshal(r.Source.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	m.Layers[1].Annotations[layer.AnnotationTOCDigest] = m.Layers[0].Annotations[layer.AnnotationTOCDigest]
	raw, _ := json.Marshal(m)
	repo, _ := opts.repository(dst)
	if err := remote.Put(repo.Tag("bad"), rawManifest{raw: raw, mt: types.OCIManifestSchema1}, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	_, _, err = open("bad")
	if !errors.Is(err, ErrTOCMismatch) || strings.Contains(err.Error(), "\n") {
		t.Errorf("tampered TOC digest: %v; want one line with ErrTOCMismatch", err)
	}
	t.Logf("tampered: %v", err)
	if _, ok, err := EstargzTOCDigest(v1.Descriptor{Digest: digest.FromString("x"), Annotations: map[string]string{layer.AnnotationTOCDigest: "nonsense"}}); ok || !errors.Is(err, image.ErrCorrupt) {
		t.Errorf("malformed annotation: %v %v", ok, err)
	}
}

// estargzRegistry is a registry holding bb:1 (busybox and /layer/1, as
// skopeo put it there) and bb:esgz (the same pushed as eStargz), and the
// store that pulled bb:1 fully.
func estargzRegistry(t *testing.T) (*registrytest.Registry, *store.Store, *store.Image) {
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 1)+":base", "bb:1")
	s := newStore(t)
	opts := testOptions(t)
	ctx := context.Background()
	src, _ := image.ParseRemote(reg.Host + "/bb:1")
	_, res, err := Pull(ctx, s, src, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	eopts := opts
	eopts.Estargz = true
	dst, _ := image.ParseRemote(reg.Host + "/bb:esgz")
	if _, err := Push(ctx, s, res.Image, dst, eopts, nil); err != nil {
		t.Fatal(err)
	}
	return reg, s, res.Image
}

// TestLazyLayerReads: a layer registered by PullLazy reads through
// OpenStoredLazy with the bytes of the fully pulled layer, fetching each
// chunk once. Through a proxy that flips bytes, an uncached chunk fails
// with ErrTampered and no byte is served. With the registry hanging, an
// uncached read fails with ErrUnavailable (at the deadline) while cached
// chunks are served; when it answers again the same layer reads on. A
// new open of the layer (a restart) reads cached chunks without the
// registry. A cache bound evicts.
func TestLazyLayerReads(t *testing.T) {
	reg, full, fullImg := estargzRegistry(t)
	p := newRangeProxy(t, reg.Host)
	opts := testOptions(t)
	ctx := context.Background()
	st := newStore(t)
	ref, _ := image.ParseRemote(p.host + "/bb:esgz")
	_, res, err := PullLazy(ctx, st, ref, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := res.Image.Layers[0]
	want := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(full.LayerDiff(fullImg.Layers[0]), name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	read := func(l *lazy.Layer, name string) ([]byte, error) {
		e, ok := l.TOC().Lookup(name)
		if !ok {
			t.Fatalf("%s not in the TOC", name)
		}
		b := make([]byte, e.Size)
		n, err := l.ReadFile(ctx, name, b, 0)
		if err == io.EOF && int64(n) == e.Size {
			err = nil
		}
		return b[:n], err
	}
	lopts := lazy.Options{Deadline: 200 * time.Millisecond}
	p.take()
	l, err := OpenStoredLazy(ctx, st, base, lopts, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := p.take(); n != 0 {
		t.Errorf("opening a stored lazy layer made %d blob requests", n)
	}
	if b, err := read(l, "bin/busybox"); err != nil || !bytes.Equal(b, want("bin/busybox")) {
		t.Fatalf("bin/busybox: %d bytes, %v; want the %d bytes of the full pull", len(b), err, len(want("bin/busybox")))
	}
	n1, _ := p.take()
	if b, err := read(l, "bin/busybox"); err != nil || !bytes.Equal(b, want("bin/busybox")) {
		t.Fatalf("bin/busybox again: %v", err)
	}
	if n, _ := p.take(); n != 0 || n1 == 0 {
		t.Errorf("first read took %d requests, the second %d; want some, then none (cached)", n1, n)
	}
	// Part of a file, from an offset inside it.
	part := make([]byte, 100)
	if n, err := l.ReadFile(ctx, "bin/busybox", part, 5000); err != nil || n != 100 || !bytes.Equal(part, want("bin/busybox")[5000:5100]) {
		t.Errorf("ReadFile at 5000: %d, %v", n, err)
	}

	p.setMode("tamper")
	if b, err := read(l, "etc/motd"); !errors.Is(err, lazy.ErrTampered) || len(b) != 0 {
		t.Errorf("tampered chunk: %q, %v; want no bytes and ErrTampered", b, err)
	}
	p.setMode("hang")
	if b, err := read(l, "etc/motd"); !errors.Is(err, lazy.ErrUnavailable) || len(b) != 0 {
		t.Errorf("registry hanging: %q, %v; want ErrUnavailable", b, err)
	}
	if b, err := read(l, "bin/busybox"); err != nil || !bytes.Equal(b, want("bin/busybox")) {
		t.Errorf("cached file with the registry hanging: %v", err)
	}
	// A restart: the layer opens and serves its cache with the registry
	// still hanging.
	l2, err := OpenStoredLazy(ctx, st, base, lopts, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := read(l2, "bin/busybox"); err != nil || !bytes.Equal(b, want("bin/busybox")) {
		t.Errorf("cached file after reopening, registry hanging: %v", err)
	}
	p.setMode("")
	for _, l := range []*lazy.Layer{l, l2} {
		if b, err := read(l, "etc/motd"); err != nil || string(b) != "welcome\n" {
			t.Errorf("after the registry came back: %q, %v", b, err)
		}
	}
	if frac, total := st.LazyProgress(res.Image); frac == 0 || frac > total {
		t.Errorf("LazyProgress %d of %d", frac, total)
	}

	// A bound of one byte keeps only the chunk read last.
	st2 := newStore(t)
	if _, res, err = PullLazy(ctx, st2, ref, opts, nil); err != nil {
		t.Fatal(err)
	}
	small, err := OpenStoredLazy(ctx, st2, res.Image.Layers[0], lopts, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bin/busybox", "etc/motd"} {
		if _, err := read(small, name); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(st2.LazyCache(res.Image.Layers[0])); len(ents) != 1 {
		t.Errorf("cache bounded to 1 byte holds %d chunks, want 1 (the last)", len(ents))
	}
}
