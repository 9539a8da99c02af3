package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/lazy"
	"github.com/unionmount/unionmount/image/store"
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
	ctx  context.Context
	bc   *BlobClient
	url  string
	size int64
	what string
	host string
	opts Options

	requests atomic.Int64
	fetched  atomic.Int64
}

// BlobClient reads blobs of one repository by Range requests; its
// transport authenticates (one ping, tokens fetched and refreshed as
// needed) for every blob it opens. The ping is made on the first read,
// not before: a layer whose chunks are cached opens and reads with the
// registry gone.
type BlobClient struct {
	ref  image.Remote
	repo name.Repository
	tr   http.RoundTripper
	auth authn.Authenticator
	opts Options

	mu     sync.Mutex   // guards client
	client *http.Client // nil until a ping succeeded
}

// NewBlobClient returns a client for the blobs of ref's repository.
func NewBlobClient(ctx context.Context, ref image.Remote, opts Options) (*BlobClient, error) {
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
	return &BlobClient{ref: ref, repo: repo, tr: tr, auth: auth, opts: opts}, nil
}

// httpClient is the authenticated client, made (one ping) on first use
// and again after a failed attempt.
func (c *BlobClient) httpClient(ctx context.Context) (*http.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client != nil {
		return c.client, nil
	}
	rt, err := transport.NewWithContext(ctx, c.repo.Registry, c.auth, c.tr, []string{c.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, c.opts.explain(c.ref.Registry, err, "blobs of "+c.ref.Name())
	}
	c.client = &http.Client{Transport: rt}
	return c.client, nil
}

// Open returns a reader of the blob d. Nothing is fetched until the first
// ReadAt.
func (c *BlobClient) Open(ctx context.Context, d v1.Descriptor) *BlobReader {
	u := url.URL{Scheme: c.repo.Registry.Scheme(), Host: c.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", c.repo.RepositoryStr(), d.Digest)}
	return &BlobReader{ctx: ctx, bc: c, url: u.String(), size: d.Size,
		what: "blob " + d.Digest.Encoded()[:12] + " of " + c.ref.Name(), host: c.ref.Registry, opts: c.opts}
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
	return b.ReadAtContext(b.ctx, p, off)
}

// ReadAtContext is ReadAt bounded by ctx (a read's deadline).
func (b *BlobReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+want-1))
	req.Header.Set("User-Agent", cmpOr(b.opts.UserAgent, userAgent))
	client, err := b.bc.httpClient(ctx)
	if err != nil {
		return 0, err
	}
	b.requests.Add(1)
	resp, err := client.Do(req)
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
	// Tail is the blob from TailOffset to its end: the TOC (compressed)
	// and the footer. Kept, it opens the layer again without the network.
	Tail       []byte
	TailOffset int64
}

// MaxTOCTail bounds the compressed TOC and footer read into memory (the
// TOC of a layer with a million files is about 100 MB of JSON, a tenth of
// it compressed).
const MaxTOCTail = 64 << 20

// TailReaderAt reads a blob of size Size whose end, from TailOffset, is
// Tail in memory; other bytes come from Rest.
type TailReaderAt struct {
	Tail       []byte
	TailOffset int64
	Rest       io.ReaderAt
}

// ReadAt serves p from the tail where it can, from Rest before it.
func (t *TailReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= t.TailOffset {
		i := off - t.TailOffset
		if i >= int64(len(t.Tail)) {
			return 0, io.EOF
		}
		n := copy(p, t.Tail[i:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	if off+int64(len(p)) <= t.TailOffset {
		return t.Rest.ReadAt(p, off)
	}
	head := t.TailOffset - off
	n, err := t.Rest.ReadAt(p[:head], off)
	if err != nil {
		return n, err
	}
	m, err := t.ReadAt(p[head:], t.TailOffset)
	return n + m, err
}

// OpenTOC opens an eStargz blob of size from its tail (see LazyLayer)
// and verifies the TOC against tocDigest: ErrTOCMismatch if it differs.
// rest serves the bytes before the tail (chunk reads).
func OpenTOC(tail []byte, tailOffset, size int64, rest io.ReaderAt, tocDigest digest.Digest) (*estargz.Reader, estargz.TOCEntryVerifier, error) {
	sr := io.NewSectionReader(&TailReaderAt{Tail: tail, TailOffset: tailOffset, Rest: rest}, 0, size)
	if err := checkFooters(sr); err != nil {
		return nil, nil, fmt.Errorf("%w: cannot read its eStargz TOC: %v", image.ErrCorrupt, err)
	}
	tr, err := openEstargz(sr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cannot read its eStargz TOC: %v", image.ErrCorrupt, err)
	}
	v, err := tr.VerifyTOC(tocDigest)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (the TOC hashes to %s, the manifest says %s)", ErrTOCMismatch, tr.TOCDigest(), tocDigest)
	}
	return tr, v, nil
}

// checkFooters refuses a blob whose eStargz footer (either of the two
// forms estargz.Open tries) points the TOC outside the blob: estargz.Open
// v0.19.1 slices with such offsets unchecked and panics (found by
// FuzzOpenTOC).
func checkFooters(sr *io.SectionReader) error {
	size := sr.Size()
	for _, d := range []estargz.Decompressor{new(estargz.GzipDecompressor), new(estargz.LegacyGzipDecompressor)} {
		fs := d.FooterSize()
		if size < fs {
			continue
		}
		footer := make([]byte, fs)
		if _, err := sr.ReadAt(footer, size-fs); err != nil {
			return fmt.Errorf("reading the footer: %v", err)
		}
		_, off, tsize, err := d.ParseFooter(footer)
		if err != nil {
			continue // not this form: estargz.Open skips it too
		}
		if off < 0 || off > size-fs || tsize < 0 || (tsize > 0 && tsize > size-fs-off) {
			return fmt.Errorf("footer puts the TOC at %d+%d in a blob of %d bytes", off, tsize, size)
		}
	}
	return nil
}

// openEstargz is estargz.Open for a blob a registry served: a panic in the
// library on bytes it did not expect is an error about the blob, never
// the end of the daemon.
func openEstargz(sr *io.SectionReader) (tr *estargz.Reader, err error) {
	defer func() {
		if r := recover(); r != nil {
			tr, err = nil, fmt.Errorf("malformed eStargz blob (%v)", r)
		}
	}()
	return estargz.Open(sr)
}

// TOCSize is what a layer's files take, from its TOC: regular file bytes
// (each hard-linked file once) and symlink targets, as store.Layer.Size.
func TOCSize(tr *estargz.Reader) int64 {
	var n int64
	var walk func(e *estargz.TOCEntry)
	walk = func(e *estargz.TOCEntry) {
		e.ForeachChild(func(_ string, c *estargz.TOCEntry) bool {
			switch c.Type {
			case "reg":
				n += c.Size
			case "symlink":
				n += int64(len(c.LinkName))
			case "dir":
				walk(c)
			}
			return true
		})
	}
	if root, ok := tr.Lookup(""); ok {
		walk(root)
	}
	return n
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
	var bc *BlobClient
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
		if bc == nil {
			if bc, err = NewBlobClient(ctx, r.Ref, opts); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		}
		br := bc.Open(ctx, d)
		layerWhat := fmt.Sprintf("%s: layer %d (blob %s)", what, i+1, d.Digest.Encoded()[:12])
		tocOff, _, err := estargz.OpenFooter(io.NewSectionReader(br, 0, br.Size()))
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", what, ctx.Err())
			}
			return nil, fmt.Errorf("%s: %w: cannot read its eStargz footer: %v (pull it without --lazy)", layerWhat, image.ErrCorrupt, err)
		}
		if tocOff < 0 || tocOff >= br.Size() || br.Size()-tocOff > MaxTOCTail {
			return nil, fmt.Errorf("%s: %w: its TOC at %d of %d bytes is out of bounds (pull it without --lazy)", layerWhat, image.ErrCorrupt, tocOff, br.Size())
		}
		tail := make([]byte, br.Size()-tocOff)
		if _, err := br.ReadAt(tail, tocOff); err != nil && err != io.EOF {
			return nil, fmt.Errorf("%s: %w", layerWhat, err)
		}
		tr, v, err := OpenTOC(tail, tocOff, br.Size(), br, td)
		if err != nil {
			hint := " (pull it without --lazy)"
			if errors.Is(err, ErrTOCMismatch) {
				hint = "; refusing the lazy pull: pull it without --lazy, or tell the registry's operator"
			}
			return nil, fmt.Errorf("%s: %w%s", layerWhat, err, hint)
		}
		ll.TOCDigest, ll.TOC, ll.Verifier, ll.Blob, ll.Tail, ll.TailOffset = td, tr, v, br, tail, tocOff
	}
	return out, nil
}

// PullLazy registers ref in st lazily: manifest, config and each eStargz
// layer's TOC (verified) are fetched, the other layers in full, as Pull
// does. The lazy layers' content is fetched when it is read.
func PullLazy(ctx context.Context, st *store.Store, ref image.Remote, opts Options, events func(store.PullEvent)) (*Resolved, store.PullResult, error) {
	r, err := Resolve(ctx, ref, opts)
	if err != nil {
		return nil, store.PullResult{}, err
	}
	lls, err := OpenLazy(ctx, r, opts)
	if err != nil {
		return r, store.PullResult{}, err
	}
	access, err := json.Marshal(lazyAccess{Insecure: opts.Insecure, AuthFile: opts.AuthFile, CertDir: opts.CertDir})
	if err != nil {
		return r, store.PullResult{}, err
	}
	lazy := map[int]store.LazyInput{}
	for i, ll := range lls {
		if ll.Lazy() {
			lazy[i] = store.LazyInput{Tail: ll.Tail, TailOffset: ll.TailOffset, TOCDigest: ll.TOCDigest, Size: TOCSize(ll.TOC), Access: access}
		}
	}
	res, err := st.Pull(ctx, r.Source, store.PullOptions{Jobs: opts.jobs(), Events: events, Lazy: lazy})
	if err != nil {
		return r, res, fmt.Errorf("pull --lazy %s: %w", ref, err)
	}
	return r, res, nil
}

// lazyAccess is how a lazy layer's registry is reached, kept with the
// layer (store.LazyLayer.Access) so that the union daemon, which has no
// registry flags, fetches its chunks the way the pull did.
type lazyAccess struct {
	Insecure bool   `json:"insecure,omitempty"`
	AuthFile string `json:"authfile,omitempty"`
	CertDir  string `json:"cert_dir,omitempty"`
}

// OpenStoredLazy opens the lazy layer id of st for reading: its TOC from
// the stored tail (verified again), chunks from the repository the blob
// was pulled from, reached as the pull reached it, cached in the layer's
// cache directory (at most cacheMax bytes; 0: no bound).
func OpenStoredLazy(ctx context.Context, st *store.Store, id digest.Digest, lopts lazy.Options, cacheMax int64) (*lazy.Layer, error) {
	rec, err := st.LazyLayer(id)
	if err != nil {
		return nil, err
	}
	what := "lazy layer " + id.Encoded()[:12]
	var acc lazyAccess
	if len(rec.Access) > 0 {
		if err := json.Unmarshal(rec.Access, &acc); err != nil {
			return nil, fmt.Errorf("%s: %w: access record: %v", what, image.ErrCorrupt, err)
		}
	}
	opts := Options{Insecure: acc.Insecure, AuthFile: acc.AuthFile, CertDir: acc.CertDir}
	if len(rec.Blob.Repos) == 0 {
		return nil, fmt.Errorf("%s: %w: no repository is known to hold its blob", what, image.ErrNotFound)
	}
	ref, err := image.ParseRemote(rec.Blob.Repos[0] + "@" + rec.Blob.Digest.String())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	tail, err := st.LazyTail(id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	bc, err := NewBlobClient(ctx, ref, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	br := bc.Open(ctx, v1.Descriptor{Digest: rec.Blob.Digest, Size: rec.Blob.Size})
	tr, v, err := OpenTOC(tail, rec.TailOffset, rec.Blob.Size, br, rec.TOCDigest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	cache, err := lazy.OpenCache(st.LazyCache(id), cacheMax)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	l := lazy.New(tr, v, br, cache, lopts)
	if err := l.SetTail(tail); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return l, nil
}
