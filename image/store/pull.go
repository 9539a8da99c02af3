package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
)

// PullSource is an image as a registry serves it: its manifest, already
// read and resolved to one platform, and a way to fetch its blobs. The
// store knows nothing of registries; image/registry fills this in.
type PullSource struct {
	// Manifest is the image manifest, exact bytes; ManifestDigest is what
	// the registry calls it (the digest of those bytes).
	Manifest       []byte
	ManifestDigest digest.Digest
	Config         v1.Descriptor   // the config blob
	Layers         []v1.Descriptor // compressed layer blobs, bottom first
	// Fetch opens a blob. Pull checks what it reads against the
	// descriptor's size and digest.
	Fetch func(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error)
	// Name is the NAME:TAG the image gets ("" for none: pulled by digest).
	Name string
	// Repo is the REGISTRY/PATH it came from: the name of its RepoDigest,
	// and where a later push to that registry can mount its blobs from.
	Repo string
}

// PullState is where one layer of a pull is.
type PullState int

// Pull states, in the order a layer goes through them (Docker's words).
const (
	PullWaiting     PullState = iota // queued behind other downloads
	PullExists                       // the store has the layer: nothing to fetch
	PullDownloading                  // Done of Total compressed bytes fetched
	PullVerifying                    // all bytes in; checking the digest
	PullDownloaded                   // verified, waiting for the layers below
	PullExtracting                   // Done of Total compressed bytes unpacked
	PullComplete                     // stored
	PullLazy                         // registered from its TOC; content fetched on first read
)

var pullStateNames = [...]string{"Waiting", "Already exists", "Downloading", "Verifying Checksum",
	"Download complete", "Extracting", "Pull complete", "Lazy (TOC verified)"}

func (p PullState) String() string {
	if int(p) < len(pullStateNames) {
		return pullStateNames[p]
	}
	return fmt.Sprintf("PullState(%d)", int(p))
}

// PullEvent reports a layer's progress to PullOptions.Events.
type PullEvent struct {
	Layer       int // index in PullSource.Layers
	Digest      digest.Digest
	State       PullState
	Done, Total int64
}

// PullOptions configures Pull.
type PullOptions struct {
	// Jobs is how many layers download at once (0: 3, as Docker).
	Jobs int
	// Events, when set, is told each layer's progress; it is called from
	// several goroutines, at most once per read of the network.
	Events func(PullEvent)
	// Lazy, when set, names the layers (by index) to register lazily from
	// their TOC instead of fetching them: a lazy pull. Without it, Pull
	// of an image whose layers are lazy fetches them and completes it.
	Lazy map[int]LazyInput
}

// PullResult says what Pull did.
type PullResult struct {
	Image   *Image
	Fetched int // blobs fetched: the config and the layers the store lacked
	Layers  int // layers stored by this pull
	Lazy    int // layers registered lazily by this pull
}

// DefaultPullJobs is how many layers download at once by default.
const DefaultPullJobs = 3

// Pull stores the image src describes. A layer the store already has (by
// chain ID, from the config's diff_ids) is not fetched, and an image the
// store already has (by config digest) fetches no blob at all.
//
// Layers download Jobs at a time into files under tmp/ while the bottom
// one not yet stored unpacks from its file as the bytes arrive: a blob is
// never whole in memory. The unpacked layer moves into the store only
// once its blob's size and digest and its tar's diff_id have checked out.
// Layers apply bottom first (each one's directories take attributes from
// the layers below, see layer.ApplyOptions.Lower).
//
// On an error the layers this pull stored are removed again and the store
// is as it was. When ctx is cancelled (the user interrupted the pull) the
// layers already complete stay, unused, and the next pull of an image
// with them does not fetch them again (rmi of any image collects them).
func (s *Store) Pull(ctx context.Context, src PullSource, opts PullOptions) (PullResult, error) {
	var res PullResult
	if err := src.Config.Digest.Validate(); err != nil {
		return res, fmt.Errorf("%w: config digest %q: %w", image.ErrCorrupt, src.Config.Digest, err)
	}
	for i, d := range src.Layers {
		if err := checkLayerDescriptor(d, s.opts.MaxLayerSize); err != nil {
			return res, fmt.Errorf("layer %d/%d: %w", i+1, len(src.Layers), err)
		}
	}
	var names []string
	if src.Name != "" {
		r, err := image.ParseReference(src.Name)
		if err != nil {
			return res, err
		}
		names = []string{r.String()}
	}
	unlock, err := s.Lock()
	if err != nil {
		return res, err
	}
	defer unlock()

	id := src.Config.Digest
	if s.hasImage(id) {
		img, err := s.ImageByID(id)
		if err != nil {
			return res, err
		}
		if opts.Lazy == nil && len(s.LazyLayers(img)) > 0 {
			return s.pullLocked(ctx, src, opts, names)
		}
		for _, n := range names {
			if err := s.tagLocked(img, n); err != nil {
				return res, err
			}
		}
		res.Image = img
		return res, s.addRepoDigest(img, src)
	}
	return s.pullLocked(ctx, src, opts, names)
}

// pullLocked is Pull of an image the store lacks, or holds lazily.
func (s *Store) pullLocked(ctx context.Context, src PullSource, opts PullOptions, names []string) (PullResult, error) {
	var res PullResult
	id := src.Config.Digest
	config, err := fetchConfig(ctx, src)
	res.Fetched++
	if err != nil {
		return res, err
	}
	var cfg v1.Image
	if err := json.Unmarshal(config, &cfg); err != nil {
		return res, fmt.Errorf("%w: image config %s: %w", image.ErrCorrupt, short(id), err)
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return res, fmt.Errorf("%w: image %s is for %s, not linux", image.ErrUnsupported, short(id), cfg.OS)
	}
	diffIDs := cfg.RootFS.DiffIDs
	if len(diffIDs) != len(src.Layers) {
		return res, fmt.Errorf("%w: the manifest lists %d layers but the config lists %d diff_ids",
			image.ErrCorrupt, len(src.Layers), len(diffIDs))
	}
	for _, d := range diffIDs {
		if err := d.Validate(); err != nil {
			return res, fmt.Errorf("%w: image config diff_id %q: %w", image.ErrCorrupt, d, err)
		}
	}
	var hist []v1.History
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			hist = append(hist, h)
		}
	}
	chain := ChainIDs(diffIDs)

	tmp, err := s.tempDir("pull-")
	if err != nil {
		return res, err
	}
	defer removeAll(tmp)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &puller{s: s, src: src, opts: opts, tmp: tmp, spools: make([]*spool, len(src.Layers))}
	if p.opts.Jobs <= 0 {
		p.opts.Jobs = DefaultPullJobs
	}
	var had []int // layers the store has: their blobs are recorded at the end
	tx := &transaction{s: s}
	for i := range src.Layers {
		if s.hasLayer(chain[i]) {
			p.event(i, PullExists, 0, 0)
			had = append(had, i)
			continue
		}
		if in, ok := opts.Lazy[i]; ok {
			var parent digest.Digest
			if i > 0 {
				parent = chain[i-1]
			}
			meta := LazyLayer{ID: chain[i], Parent: parent, DiffID: diffIDs[i], Blob: blobOf(src.Layers[i], src.Repo),
				TOCDigest: in.TOCDigest, TailOffset: in.TailOffset, Size: in.Size, Access: in.Access}
			if i < len(hist) {
				meta.CreatedBy, meta.Comment = hist[i].CreatedBy, hist[i].Comment
			}
			if _, err := os.Stat(s.lazyDir(chain[i])); err != nil {
				tx.lazy = append(tx.lazy, chain[i])
			}
			if err := s.putLazyLayer(meta, in); err != nil {
				tx.rollback()
				return res, err
			}
			p.event(i, PullLazy, 0, src.Layers[i].Size)
			res.Lazy++
			continue
		}
		p.event(i, PullWaiting, 0, src.Layers[i].Size)
		p.spools[i] = newSpool()
		res.Fetched++
	}
	p.startDownloads(dctx)

	err = func() error {
		for i := range src.Layers {
			if p.spools[i] == nil {
				continue
			}
			var parent digest.Digest
			if i > 0 {
				parent = chain[i-1]
			}
			meta := Layer{Blobs: []Blob{blobOf(src.Layers[i], src.Repo)}}
			if i < len(hist) {
				meta.CreatedBy, meta.Comment = hist[i].CreatedBy, hist[i].Comment
				if hist[i].Created != nil {
					meta.Created = hist[i].Created.UTC()
				}
			}
			l, created, err := p.apply(i, parent, diffIDs[i], meta)
			if err != nil {
				return fmt.Errorf("layer %d/%d (%s): %w", i+1, len(src.Layers), short(src.Layers[i].Digest), err)
			}
			if created {
				tx.created = append(tx.created, l.ID)
				res.Layers++
				// The layer was lazy: it is complete now. A container's
				// daemon may still serve it (its mountpoint is busy):
				// then the record stays until rmi collects it.
				s.discard(s.lazyDir(l.ID))
			} else if err := s.rememberBlob(l.ID, meta.Blobs[0]); err != nil {
				return err
			}
		}
		return nil
	}()
	cancel()
	p.wg.Wait()
	p.closeFiles()
	if err != nil {
		if ctx.Err() != nil {
			// Interrupted: what is complete stays for the next pull.
			return res, fmt.Errorf("%w (%d complete layers kept for the next pull)", ctx.Err(), len(tx.created))
		}
		tx.rollback()
		return res, err
	}
	img, err := s.putImage(config, chain, names)
	if err != nil {
		tx.rollback()
		return res, err
	}
	res.Image = img
	for _, i := range had {
		if err := s.rememberBlob(chain[i], blobOf(src.Layers[i], src.Repo)); err != nil {
			return res, err
		}
	}
	return res, s.addRepoDigest(img, src)
}

// checkLayerDescriptor refuses what Pull cannot or must not fetch: a blob
// of a type that is no layer, a foreign layer (its bytes are elsewhere),
// a malformed digest, a size over max (when max > 0).
func checkLayerDescriptor(d v1.Descriptor, max int64) error {
	switch d.MediaType {
	case v1.MediaTypeImageLayer, v1.MediaTypeImageLayerGzip, v1.MediaTypeImageLayerZstd,
		MediaTypeDockerLayer:
	case v1.MediaTypeImageLayerNonDistributable, v1.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck
		v1.MediaTypeImageLayerNonDistributableZstd, MediaTypeDockerForeignLayer: //nolint:staticcheck
		return fmt.Errorf("%w: foreign layer %s (%s): its content is not in the registry", image.ErrUnsupported, d.Digest, d.MediaType)
	default:
		return fmt.Errorf("%w: blob %s has media type %q, which is no layer", image.ErrUnsupported, d.Digest, d.MediaType)
	}
	if err := d.Digest.Validate(); err != nil || d.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: layer digest %q: use sha256", image.ErrCorrupt, d.Digest)
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: layer %s has size %d", image.ErrCorrupt, short(d.Digest), d.Size)
	}
	if max > 0 && d.Size > max {
		return fmt.Errorf("%w: layer %s is %d bytes compressed, over the limit of %d (raise --max-layer-size if it is genuine)",
			image.ErrTooLarge, short(d.Digest), d.Size, max)
	}
	return nil
}

// Docker's media types (schema 2) that have no OCI constant.
const (
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
)

// maxConfigSize bounds the config blob read into memory.
const maxConfigSize = 16 << 20

func fetchConfig(ctx context.Context, src PullSource) ([]byte, error) {
	d := src.Config
	if d.Size > maxConfigSize {
		return nil, fmt.Errorf("%w: image config is %d bytes, more than %d", image.ErrTooLarge, d.Size, maxConfigSize)
	}
	rc, err := src.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch image config %s: %w", short(d.Digest), err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch image config %s: %w", short(d.Digest), err)
	}
	if got := digest.FromBytes(b); got != d.Digest {
		return nil, fmt.Errorf("%w: image config hashes to %s, the manifest says %s", image.ErrDigestMismatch, got, d.Digest)
	}
	return b, nil
}

func blobOf(d v1.Descriptor, repo string) Blob {
	b := Blob{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType}
	if repo != "" {
		b.Repos = []string{repo}
	}
	return b
}

// rememberBlob adds b (or b's repositories) to the layer's record. Call
// with the lock held.
func (s *Store) rememberBlob(id digest.Digest, b Blob) error {
	l, err := s.Layer(id)
	if err != nil {
		return err
	}
	changed := false
	found := false
	for i := range l.Blobs {
		if l.Blobs[i].Digest != b.Digest {
			continue
		}
		found = true
		for _, r := range b.Repos {
			if indexOf(l.Blobs[i].Repos, r) < 0 {
				l.Blobs[i].Repos = append(l.Blobs[i].Repos, r)
				changed = true
			}
		}
	}
	if !found {
		l.Blobs = append(l.Blobs, b)
		changed = true
	}
	if !changed {
		return nil
	}
	if err := writeJSON(filepath.Join(s.layerDir(id), "layer.json"), l); err != nil {
		return fmt.Errorf("record blob of layer %s: %w", short(id), err)
	}
	return nil
}

// addRepoDigest records that src.Repo serves img as src.Manifest: the
// manifest is kept (images/<id>/manifest-<hex>.json) and img gets the
// RepoDigest REPO@DIGEST, replacing any other digest of that repository.
// Call with the lock held.
func (s *Store) addRepoDigest(img *Image, src PullSource) error {
	if src.Repo == "" || src.ManifestDigest == "" {
		return nil
	}
	if got := digest.FromBytes(src.Manifest); got != src.ManifestDigest {
		return fmt.Errorf("%w: manifest hashes to %s, not %s", image.ErrDigestMismatch, got, src.ManifestDigest)
	}
	p := s.manifestPath(img.ID, src.ManifestDigest)
	if _, err := os.Stat(p); err != nil {
		if err := writeFileAtomic(p, src.Manifest); err != nil {
			return fmt.Errorf("store manifest of %s: %w", short(img.ID), err)
		}
	}
	rd := src.Repo + "@" + src.ManifestDigest.String()
	var out []string
	for _, r := range img.RepoDigests {
		if name, _, ok := cutDigest(r); !ok || name != src.Repo {
			out = append(out, r)
		}
	}
	out = append(out, rd)
	if equalStrings(out, img.RepoDigests) {
		return nil
	}
	img.RepoDigests = out
	if err := writeJSON(filepath.Join(s.imageDir(img.ID), "image.json"), img); err != nil {
		return fmt.Errorf("record repo digest of %s: %w", short(img.ID), err)
	}
	return nil
}

func (s *Store) manifestPath(id, m digest.Digest) string {
	return filepath.Join(s.imageDir(id), "manifest-"+m.Encoded()+".json")
}

// Manifest returns the manifest (exact bytes) that a registry serves the
// image as, by the digest of one of its RepoDigests.
func (s *Store) Manifest(img *Image, m digest.Digest) ([]byte, error) {
	if m.Validate() != nil {
		return nil, fmt.Errorf("%w: manifest %q", image.ErrNotFound, m)
	}
	b, err := os.ReadFile(s.manifestPath(img.ID, m))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: manifest %s of image %s", image.ErrNotFound, short(m), short(img.ID))
		}
		return nil, err
	}
	if digest.FromBytes(b) != m {
		return nil, fmt.Errorf("%w: stored manifest %s of image %s was changed", image.ErrDigestMismatch, short(m), short(img.ID))
	}
	return b, nil
}

// cutDigest splits NAME@DIGEST.
func cutDigest(rd string) (string, digest.Digest, bool) {
	for i := len(rd) - 1; i >= 0; i-- {
		if rd[i] == '@' {
			d := digest.Digest(rd[i+1:])
			return rd[:i], d, d.Validate() == nil
		}
	}
	return "", "", false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// puller is one Pull's downloads and their files.
type puller struct {
	s      *Store
	src    PullSource
	opts   PullOptions
	tmp    string
	spools []*spool // per layer; nil for a layer the store has
	wg     sync.WaitGroup
}

func (p *puller) closeFiles() {
	for _, sp := range p.spools {
		if sp != nil && sp.f != nil {
			sp.f.Close()
		}
	}
}

func (p *puller) event(i int, st PullState, done, total int64) {
	if p.opts.Events != nil {
		p.opts.Events(PullEvent{Layer: i, Digest: p.src.Layers[i].Digest, State: st, Done: done, Total: total})
	}
}

// startDownloads fetches every missing layer, Jobs at a time, bottom
// first, each into its spool.
func (p *puller) startDownloads(ctx context.Context) {
	sem := make(chan struct{}, p.opts.Jobs)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for i, sp := range p.spools {
			if sp == nil {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				sp.finish(ctx.Err())
				continue
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer func() { <-sem }()
				sp.finish(p.download(ctx, i, sp))
			}()
		}
	}()
}

// download fetches layer i into sp, checking its size and digest.
func (p *puller) download(ctx context.Context, i int, sp *spool) error {
	d := p.src.Layers[i]
	f, err := os.Create(filepath.Join(p.tmp, fmt.Sprintf("blob-%d", i)))
	if err != nil {
		return fmt.Errorf("stage blob: %w", err)
	}
	sp.setFile(f)
	p.event(i, PullDownloading, 0, d.Size)
	rc, err := p.src.Fetch(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	var n int64
	buf := make([]byte, 128<<10)
	for {
		m, rerr := rc.Read(buf)
		if m > 0 {
			if n+int64(m) > d.Size {
				return fmt.Errorf("%w: blob %s is longer than the %d bytes the manifest says", image.ErrDigestMismatch, short(d.Digest), d.Size)
			}
			h.Write(buf[:m])
			if _, err := sp.write(buf[:m]); err != nil {
				return fmt.Errorf("stage blob: %w", err)
			}
			n += int64(m)
			p.event(i, PullDownloading, n, d.Size)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// A client that verifies too fails at the end: ours is the
			// error that says what happened.
			if n == d.Size && digest.NewDigest(digest.SHA256, h) != d.Digest {
				return fmt.Errorf("%w: blob hashes to %s, the manifest says %s", image.ErrDigestMismatch, digest.NewDigest(digest.SHA256, h), d.Digest)
			}
			return fmt.Errorf("fetch blob %s: %w", short(d.Digest), rerr)
		}
	}
	p.event(i, PullVerifying, n, d.Size)
	if n != d.Size {
		return fmt.Errorf("%w: blob %s ended after %d of %d bytes", image.ErrCorrupt, short(d.Digest), n, d.Size)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != d.Digest {
		return fmt.Errorf("%w: blob hashes to %s, the manifest says %s", image.ErrDigestMismatch, got, d.Digest)
	}
	p.event(i, PullDownloaded, n, d.Size)
	return nil
}

// apply unpacks layer i from its spool as it fills. The layer moves into
// the store only after the whole blob is in and verified.
func (p *puller) apply(i int, parent, diffID digest.Digest, meta Layer) (*Layer, bool, error) {
	sp := p.spools[i]
	total := p.src.Layers[i].Size
	r := &spoolReader{sp: sp}
	pr := &countingReader{r: r, report: func(n int64) { p.event(i, PullExtracting, n, total) }}
	dr, _, err := layer.Decompress(pr)
	if err != nil {
		if serr := r.drain(); serr != nil {
			return nil, false, serr
		}
		return nil, false, err
	}
	defer dr.Close()
	l, created, err := p.s.newLayerVerified(dr, parent, diffID, meta, r.drain)
	if err != nil {
		// A blob that failed its digest explains any tar error.
		if serr := sp.wait(); serr != nil {
			return nil, false, serr
		}
		return nil, false, err
	}
	p.event(i, PullComplete, total, total)
	// The blob is in the layer now: its file goes at once rather than
	// with the pull's staging directory.
	if sp.f != nil {
		sp.f.Close()
		os.Remove(sp.f.Name())
	}
	return l, created, nil
}

type countingReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if n > 0 {
		c.report(c.n)
	}
	return n, err
}

// spool is a blob being downloaded into a file that a reader follows: the
// reader gets the bytes written so far, waits for more, and sees the
// download's end (io.EOF once verified, else its error).
type spool struct {
	mu      sync.Mutex
	cond    *sync.Cond
	f       *os.File
	written int64
	done    bool
	err     error
}

func newSpool() *spool {
	sp := &spool{}
	sp.cond = sync.NewCond(&sp.mu)
	return sp
}

func (sp *spool) setFile(f *os.File) {
	sp.mu.Lock()
	sp.f = f
	sp.mu.Unlock()
}

func (sp *spool) write(b []byte) (int, error) {
	n, err := sp.f.Write(b)
	sp.mu.Lock()
	sp.written += int64(n)
	sp.cond.Broadcast()
	sp.mu.Unlock()
	return n, err
}

// finish ends the download with err (nil: complete and verified).
func (sp *spool) finish(err error) {
	sp.mu.Lock()
	sp.done, sp.err = true, err
	sp.cond.Broadcast()
	sp.mu.Unlock()
}

// wait waits for the download's end and returns its error.
func (sp *spool) wait() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for !sp.done {
		sp.cond.Wait()
	}
	return sp.err
}

type spoolReader struct {
	sp  *spool
	off int64
}

func (r *spoolReader) Read(b []byte) (int, error) {
	sp := r.sp
	sp.mu.Lock()
	for r.off >= sp.written && !sp.done {
		sp.cond.Wait()
	}
	avail, f, done, err := sp.written-r.off, sp.f, sp.done, sp.err
	sp.mu.Unlock()
	if done && err != nil {
		return 0, err
	}
	if avail <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > avail {
		b = b[:avail]
	}
	n, rerr := f.ReadAt(b, r.off)
	r.off += int64(n)
	if rerr == io.EOF && n > 0 {
		rerr = nil
	}
	return n, rerr
}

// drain reads what the unpacker left (padding after the tar, the end of
// the compressed stream) and returns the download's verdict.
func (r *spoolReader) drain() error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	return r.sp.wait()
}
