package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
)

// A lazy pull reads parts of layer blobs with HTTP Range requests: the
// footer and TOC of each eStargz layer first, then the chunks a reader
// needs. One range per request: some registries (and the storage they
// redirect to) refuse or ignore multi-range requests, and single ranges
// are what the distribution spec's blob GET supports.

// ErrTOCMismatch (wrapped): an eStargz layer's TOC does not hash to the
// digest its manifest annotates. The layer cannot be trusted lazily.
var ErrTOCMismatch = errors.New("eStargz TOC does not match the manifest's toc.digest annotation")

// BlobReader reads one blob of a repository by Range requests, through
// the registry's authenticated transport (bearer tokens are fetched and
// refreshed on 401 by go-containerregistry; redirects to blob storage are
// followed with the Range kept). It is an io.ReaderAt; every ReadAt is
// one request.
type BlobReader struct {
	ctx    context.Context
	client *http.Client
	url    string
	size   int64
	what   string
	host   string
	opts   Options

	requests atomic.Int64
	fetched  atomic.Int64
}

// OpenBlob returns a reader of the blob d of ref's repository. Nothing is
// fetched until the first ReadAt (apart from the registry's auth ping).
func OpenBlob(ctx context.Context, ref image.Remote, d v1.Descriptor, opts Options) (*BlobReader, error) {
	repo, err := opts.repository(ref)
	if err != nil {
		return nil, err
	}
	tr, err := opts.transport(ref.Registry)
	if err != nil {
		return nil, err
	}
	auth, err := authn.Resolve(ctx, NewKeychain(opts), repo)
	if err != nil {
		return nil, err
	}
	what := "blob " + d.Digest.Encoded()[:12] + " of " + ref.Name()
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, tr, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, opts.explain(ref.Registry, err, what)
	}
	u := url.URL{Scheme: repo.Registry.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", repo.RepositoryStr(), d.Digest)}
	return &BlobReader{ctx: ctx, client: &http.Client{Transport: rt}, url: u.String(), size: d.Size, what: what, host: ref.Registry, opts: opts}, nil
}

// Size is the blob's size, as its descriptor says.
func (b *BlobReader) Size() int64 { return b.size }

// Requests is how many Range requests were made; Fetched how many body
// bytes arrived.
func (b *BlobReader) Requests() int64 { return b.requests.Load() }

// Fetched is how many bytes of the blob arrived.
func (b *BlobReader) Fetched() int64 { return b.fetched.Load() }

// ReadAt reads len(p) bytes at off with one Range request. A registry
// that ignores the Range header (200 and the whole blob) still works: the
// bytes before off are skipped.
func (b *BlobReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= b.size {
		return 0, io.EOF
	}
	want := int64(len(p))
	short := false
	if off+want > b.size {
		want, short = b.size-off, true
	}
	if want == 0 {
		return 0, nil
	}
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+want-1))
	req.Header.Set("User-Agent", cmpOr(b.opts.UserAgent, userAgent))
	b.requests.Add(1)
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, b.opts.explain(b.host, err, b.what)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != off {
			return 0, fmt.Errorf("%s: %w: asked for bytes from %d, the registry sent %q", b.what, image.ErrCorrupt, off, resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		n, err := io.CopyN(io.Discard, resp.Body, off)
		b.fetched.Add(n)
		if err != nil {
			return 0, b.opts.explain(b.host, err, b.what)
		}
	default:
		return 0, b.opts.explain(b.host, transport.CheckError(resp, http.StatusPartialContent), b.what)
	}
	n, err := io.ReadFull(body, p[:want])
	b.fetched.Add(int64(n))
	if err != nil {
		return n, b.opts.explain(b.host, err, b.what)
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// rangeStart reads the first byte of "bytes START-END/SIZE".
func rangeStart(cr string) (int64, bool) {
	r, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, false
	}
	s, _, ok := strings.Cut(r, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// LazyLayer is one layer of a lazily pulled image: an eStargz blob whose
// TOC was fetched and verified, or (TOC nil) a layer to pull fully.
type LazyLayer struct {
	Descriptor v1.Descriptor
	// TOCDigest is the annotated digest the TOC was verified against.
	TOCDigest digest.Digest
	// TOC is the verified TOC reader; its chunks are read through Blob.
	// Its OpenFile does not check chunks: a reader that serves bytes
	// checks each chunk with Verifier first.
	TOC      *estargz.Reader
	Verifier estargz.TOCEntryVerifier
	Blob     *BlobReader
}

// Lazy reports whether the layer is read lazily.
func (l *LazyLayer) Lazy() bool { return l.TOC != nil }

// EstargzTOCDigest is the TOC digest a layer descriptor annotates, if
// any (a layer without it is pulled fully).
func EstargzTOCDigest(d v1.Descriptor) (digest.Digest, bool, error) {
	s, ok := d.Annotations[layer.AnnotationTOCDigest]
	if !ok {
		return "", false, nil
	}
	td, err := digest.Parse(s)
	if err != nil {
		return "", false, fmt.Errorf("%w: layer %s: annotation %s=%q is no digest", image.ErrCorrupt, d.Digest.Encoded()[:12], layer.AnnotationTOCDigest, s)
	}
	return td, true, nil
}

// OpenLazy fetches the TOC of every eStargz layer of the resolved image
// (footer and TOC by Range, nothing else) and verifies it against the
// manifest's annotation: a mismatch refuses the whole lazy pull with
// ErrTOCMismatch. Layers without the annotation come back with a nil
// TOC.
func OpenLazy(ctx context.Context, r *Resolved, opts Options) ([]*LazyLayer, error) {
	what := "pull --lazy " + r.Ref.String()
	var out []*LazyLayer
	for i, d := range r.Source.Layers {
		ll := &LazyLayer{Descriptor: d}
		out = append(out, ll)
		td, ok, err := EstargzTOCDigest(d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if !ok {
			continue
		}
		br, err := OpenBlob(ctx, r.Ref, d, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		tr, err := estargz.Open(io.NewSectionReader(br, 0, br.Size()))
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", what, ctx.Err())
			}
			return nil, fmt.Errorf("%s: layer %d (blob %s): %w: cannot read its eStargz TOC: %v (pull it without --lazy)",
				what, i+1, d.Digest.Encoded()[:12], image.ErrCorrupt, err)
		}
		v, err := tr.VerifyTOC(td)
		if err != nil {
			return nil, fmt.Errorf("%s: layer %d (blob %s): %w (the TOC hashes to %s, the manifest says %s); refusing the lazy pull: pull it without --lazy, or tell the registry's operator",
				what, i+1, d.Digest.Encoded()[:12], ErrTOCMismatch, tr.TOCDigest(), td)
		}
		ll.TOCDigest, ll.TOC, ll.Verifier, ll.Blob = td, tr, v, br
	}
	return out, nil
}
