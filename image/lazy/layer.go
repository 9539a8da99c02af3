package lazy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
)

// Errors of a read. Each is EIO to a reader of the union.
var (
	// ErrTampered: a chunk from the registry does not hash to the digest
	// the verified TOC gives it (or the TOC gives none).
	ErrTampered = errors.New("chunk does not match its digest in the TOC")
	// ErrUnavailable: the registry did not deliver the chunk within the
	// deadline.
	ErrUnavailable = errors.New("registry did not deliver the chunk")
)

// Fetcher reads bytes of the blob by range (registry.BlobReader).
type Fetcher interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// Options configures a Layer.
type Options struct {
	// Deadline bounds one chunk fetch (0: DefaultDeadline).
	Deadline time.Duration
}

// DefaultDeadline is how long a read waits for the registry by default:
// a few seconds on loopback, where a chunk takes milliseconds.
const DefaultDeadline = 5 * time.Second

// Layer reads the files of one eStargz blob: the TOC from the blob's
// tail, file bytes chunk by chunk from the cache or the registry.
type Layer struct {
	toc      *estargz.Reader
	verifier estargz.TOCEntryVerifier
	fetch    Fetcher
	cache    *Cache
	deadline time.Duration

	// tocFile is the TOC's own tar entry (stargz.index.json), which the
	// TOC does not list but every full unpack of the layer has.
	tocHdr  *tar.Header
	tocBody []byte

	fetched atomic.Int64 // compressed bytes fetched from the registry
	flights sync.Map     // digest.Digest -> *flight: one fetch per chunk at a time
}

type flight struct {
	done chan struct{}
	b    []byte
	err  error
}

// New returns a layer over a TOC the caller opened and verified
// (registry.OpenTOC), its chunk verifier, the registry and a cache.
func New(toc *estargz.Reader, v estargz.TOCEntryVerifier, fetch Fetcher, cache *Cache, opts Options) *Layer {
	d := opts.Deadline
	if d <= 0 {
		d = DefaultDeadline
	}
	return &Layer{toc: toc, verifier: v, fetch: fetch, cache: cache, deadline: d}
}

// SetTail reads the TOC's own tar entry from the blob's tail (its first
// gzip member holds the entry's header and the TOC JSON), so the layer's
// tree has stargz.index.json as a full unpack has it.
func (l *Layer) SetTail(tail []byte) error {
	zr, err := gzip.NewReader(bytes.NewReader(tail))
	if err != nil {
		return fmt.Errorf("%w: TOC entry: %v", ErrTampered, err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return fmt.Errorf("%w: TOC entry: %v", ErrTampered, err)
	}
	body, err := io.ReadAll(io.LimitReader(tr, 1<<30))
	if err != nil {
		return fmt.Errorf("%w: TOC entry: %v", ErrTampered, err)
	}
	if digest.FromBytes(body) != l.toc.TOCDigest() {
		return fmt.Errorf("%w: TOC entry does not hash to the verified TOC's digest", ErrTampered)
	}
	l.tocHdr, l.tocBody = h, body
	return nil
}

// TOC is the layer's verified table of contents.
func (l *Layer) TOC() *estargz.Reader { return l.toc }

// Fetched is the compressed bytes fetched from the registry so far.
func (l *Layer) Fetched() int64 { return l.fetched.Load() }

// ReadFile reads len(p) bytes of the regular file name at off (fewer
// with io.EOF at the end of the file).
func (l *Layer) ReadFile(ctx context.Context, name string, p []byte, off int64) (int, error) {
	e, ok := l.toc.Lookup(name)
	if !ok || e.Type != "reg" {
		return 0, fmt.Errorf("lazy read %q: no regular file in the TOC", name)
	}
	n := 0
	for n < len(p) {
		if off >= e.Size {
			return n, io.EOF
		}
		ce, ok := l.toc.ChunkEntryForOffset(name, off)
		if !ok {
			return n, fmt.Errorf("lazy read %q at %d: %w: no chunk holds the offset", name, off, ErrTampered)
		}
		chunk, err := l.chunk(ctx, name, ce)
		if err != nil {
			return n, err
		}
		m := copy(p[n:], chunk[off-ce.ChunkOffset:])
		n += m
		off += int64(m)
	}
	return n, nil
}

// chunk returns the verified uncompressed bytes of the chunk ce of name.
func (l *Layer) chunk(ctx context.Context, name string, ce *estargz.TOCEntry) ([]byte, error) {
	d, err := digest.Parse(ce.ChunkDigest)
	if err != nil {
		return nil, fmt.Errorf("lazy read %q: %w: the TOC gives chunk %d no digest", name, ErrTampered, ce.ChunkOffset)
	}
	if b, ok := l.cache.Get(d); ok && int64(len(b)) == ce.ChunkSize {
		return b, nil
	}
	f := &flight{done: make(chan struct{})}
	if prev, loaded := l.flights.LoadOrStore(d, f); loaded {
		f = prev.(*flight)
		select {
		case <-f.done:
			return f.b, f.err
		case <-ctx.Done():
			return nil, fmt.Errorf("lazy read %q: %w", name, ctx.Err())
		}
	}
	f.b, f.err = l.fetchChunk(ctx, name, ce, d)
	l.flights.Delete(d)
	close(f.done)
	return f.b, f.err
}

// maxChunk bounds a chunk's compressed and uncompressed size, which a
// hostile TOC sets (eStargz writes 4 MiB chunks).
const maxChunk = 64 << 20

// fetchChunk fetches, decompresses and verifies one chunk, and caches it.
func (l *Layer) fetchChunk(ctx context.Context, name string, ce *estargz.TOCEntry, d digest.Digest) ([]byte, error) {
	what := fmt.Sprintf("lazy read %q, chunk at %d", name, ce.ChunkOffset)
	clen := ce.NextOffset() - ce.Offset
	if clen <= 0 || clen > maxChunk || ce.ChunkSize < 0 || ce.ChunkSize > maxChunk {
		return nil, fmt.Errorf("%s: %w: compressed extent %d..%d", what, ErrTampered, ce.Offset, ce.NextOffset())
	}
	comp := make([]byte, clen)
	fctx, cancel := context.WithTimeout(ctx, l.deadline)
	n, err := l.fetch.ReadAtContext(fctx, comp, ce.Offset)
	cancel()
	l.fetched.Add(int64(n))
	if err != nil && !(err == io.EOF && int64(n) == clen) {
		if fctx.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("%s: %w within %v", what, ErrUnavailable, l.deadline)
		}
		return nil, fmt.Errorf("%s: %w: %v", what, ErrUnavailable, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(comp))
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", what, ErrTampered, err)
	}
	if _, err := io.CopyN(io.Discard, zr, ce.InnerOffset); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", what, ErrTampered, err)
	}
	b := make([]byte, ce.ChunkSize)
	if _, err := io.ReadFull(zr, b); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", what, ErrTampered, err)
	}
	v, err := l.verifier.Verifier(ce)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", what, ErrTampered, err)
	}
	v.Write(b)
	if !v.Verified() || digest.FromBytes(b) != d {
		return nil, fmt.Errorf("%s: %w", what, ErrTampered)
	}
	if err := l.cache.Put(d, b); err != nil {
		// Served all the same: the cache is a hint.
		return b, nil
	}
	return b, nil
}

// Prefetch fetches (into the cache) every chunk that lies before the
// layer's prefetch landmark: the files the image's builder marked as read
// first. A layer without the landmark (.no.prefetch.landmark) has nothing
// to prefetch. It returns how many chunks it fetched or found cached.
func (l *Layer) Prefetch(ctx context.Context) (int, error) {
	lm, ok := l.toc.Lookup(estargz.PrefetchLandmark)
	if !ok {
		return 0, nil
	}
	type chunkOf struct {
		name string
		ce   *estargz.TOCEntry
	}
	var chunks []chunkOf
	seen := map[string]bool{}
	var walk func(e *estargz.TOCEntry)
	walk = func(e *estargz.TOCEntry) {
		e.ForeachChild(func(_ string, c *estargz.TOCEntry) bool {
			switch {
			case c.Type == "dir":
				walk(c)
			case c.Type == "reg" && !seen[c.Name] && c.Size > 0 && c.Offset < lm.Offset:
				seen[c.Name] = true
				for off := int64(0); off < c.Size; {
					ce, ok := l.toc.ChunkEntryForOffset(c.Name, off)
					if !ok || ce.ChunkSize <= 0 {
						break
					}
					if ce.Offset < lm.Offset {
						chunks = append(chunks, chunkOf{c.Name, ce})
					}
					off = ce.ChunkOffset + ce.ChunkSize
				}
			}
			return true
		})
	}
	if root, ok := l.toc.Lookup(""); ok {
		walk(root)
	}
	// In blob order: the registry reads forwards.
	sort.Slice(chunks, func(i, j int) bool { return chunks[i].ce.Offset < chunks[j].ce.Offset })
	for i, c := range chunks {
		if _, err := l.chunk(ctx, c.name, c.ce); err != nil {
			return i, fmt.Errorf("prefetch: %w", err)
		}
	}
	return len(chunks), nil
}
