package registry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/registrytest"
)

// rangeProxy sits between the client and a real registry: it refuses
// multi-range requests (416, as some blob stores do), can drop the Range
// header (the registry then sends 200 and the whole blob), and counts
// blob requests and the body bytes it forwarded.
type rangeProxy struct {
	host        string
	ignoreRange bool

	mu       sync.Mutex
	requests int
	bytes    int64
}

func newRangeProxy(t *testing.T, target string) *rangeProxy {
	u, _ := url.Parse("http://" + target)
	p := &rangeProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
