package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	gcr "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/store"
)

// maxManifestSize bounds a manifest or index read into memory (the
// distribution spec lets registries refuse more than 4 MiB).
const maxManifestSize = 4 << 20

// Resolved is what a reference names in the registry, for one platform.
type Resolved struct {
	Ref    image.Remote
	Source store.PullSource
}

// Resolve reads the manifest ref names, choosing from a manifest list or
// OCI index the image for opts.Platform (this machine's when unset), and
// returns what store.Pull needs to fetch it.
func Resolve(ctx context.Context, ref image.Remote, opts Options) (*Resolved, error) {
	what := "pull " + ref.String()
	gref, err := opts.reference(ref)
	if err != nil {
		return nil, err
	}
	ropts, err := opts.remoteOptions(ref.Registry, NewKeychain(opts))
	if err != nil {
		return nil, err
	}
	ropts = append(ropts, remote.WithContext(ctx))
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return nil, err
	}
	desc, err := puller.Get(ctx, gref)
	if err != nil {
		return nil, opts.explain(ref.Registry, err, what)
	}
	if desc.MediaType.IsIndex() {
		platform, _ := ParsePlatform(opts.Platform)
		child, err := pickPlatform(desc.Manifest, platform)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if desc, err = puller.Get(ctx, gref.Context().Digest(child.String())); err != nil {
			return nil, opts.explain(ref.Registry, err, what)
		}
		if desc.Digest.String() != child.String() {
			return nil, fmt.Errorf("%s: %w: the registry served manifest %s for %s", what, image.ErrDigestMismatch, desc.Digest, child)
		}
	}
	src, err := pullSource(desc.Manifest, desc.MediaType, desc.Digest.String())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	src.Repo = ref.Name()
	if l := ref.Local(); l.Name != "" {
		src.Name = l.String()
	}
	src.Fetch = func(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
		open := func() (io.ReadCloser, error) {
			l, err := puller.Layer(ctx, gref.Context().Digest(d.Digest.String()))
			if err != nil {
				return nil, opts.explain(ref.Registry, err, "blob "+d.Digest.Encoded()[:12])
			}
			rc, err := l.Compressed()
			if err != nil {
				return nil, opts.explain(ref.Registry, err, "blob "+d.Digest.Encoded()[:12])
			}
			return rc, nil
		}
		rc, err := open()
		if err != nil {
			return nil, err
		}
		return &resumingReader{ctx: ctx, open: open, rc: rc, backoff: opts.backoff()}, nil
	}
	return &Resolved{Ref: ref, Source: src}, nil
}

// pickPlatform chooses the image of an index for p: OS and architecture
// equal, and the variant equal when p names one (else the index's first
// for that OS and architecture).
func pickPlatform(raw []byte, p gcr.Platform) (gcr.Hash, error) {
	var idx gcr.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return gcr.Hash{}, fmt.Errorf("%w: manifest list: %w", image.ErrCorrupt, err)
	}
	var have []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		have = append(have, platformString(*m.Platform))
		if m.Platform.OS == p.OS && m.Platform.Architecture == p.Architecture &&
			(p.Variant == "" || m.Platform.Variant == "" || m.Platform.Variant == p.Variant) {
			if !m.MediaType.IsImage() {
				continue
			}
			return m.Digest, nil
		}
	}
	return gcr.Hash{}, fmt.Errorf("%w: no image for %s in the manifest list (it has %s; choose one with --platform)",
		image.ErrNotFound, platformString(p), strings.Join(have, ", "))
}

func platformString(p gcr.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// pullSource reads an image manifest (Docker schema 2 or OCI).
func pullSource(raw []byte, mt types.MediaType, dgst string) (store.PullSource, error) {
	var src store.PullSource
	if len(raw) > maxManifestSize {
		return src, fmt.Errorf("%w: manifest of %d bytes", image.ErrTooLarge, len(raw))
	}
	switch mt {
	case types.DockerManifestSchema2, types.OCIManifestSchema1:
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return src, fmt.Errorf("%w: Docker schema 1 manifest (deprecated since 2017): push the image again with a current tool", image.ErrUnsupported)
	default:
		return src, fmt.Errorf("%w: manifest media type %q is no image", image.ErrUnsupported, mt)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return src, fmt.Errorf("%w: manifest: %w", image.ErrCorrupt, err)
	}
	switch m.Config.MediaType {
	case v1.MediaTypeImageConfig, store.MediaTypeDockerConfig:
	default:
		return src, fmt.Errorf("%w: config media type %q: not a container image (an artifact?)", image.ErrUnsupported, m.Config.MediaType)
	}
	md, err := digest.Parse(dgst)
	if err != nil || md != digest.FromBytes(raw) {
		return src, fmt.Errorf("%w: manifest does not hash to %s", image.ErrDigestMismatch, dgst)
	}
	src.Manifest, src.ManifestDigest = raw, md
	src.Config = m.Config
	src.Layers = m.Layers
	return src, nil
}

// Pull fetches ref into st. Events, when set, sees each layer's progress.
func Pull(ctx context.Context, st *store.Store, ref image.Remote, opts Options, events func(store.PullEvent)) (*Resolved, store.PullResult, error) {
	r, err := Resolve(ctx, ref, opts)
	if err != nil {
		return nil, store.PullResult{}, err
	}
	res, err := st.Pull(ctx, r.Source, store.PullOptions{Jobs: opts.jobs(), Events: events})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return r, res, fmt.Errorf("pull %s: interrupted: %w", ref, err)
		}
		return r, res, fmt.Errorf("pull %s: %w", ref, err)
	}
	return r, res, nil
}

// resumingReader reads a blob and, when the connection breaks in the
// middle (reset, unexpected EOF, timeout), fetches it again, skips what
// it already delivered and goes on, up to the backoff's steps. The
// request-level retries of go-containerregistry's transport end once a
// response has begun; this covers the body. The bytes delivered across
// attempts are checked as one against the blob's digest by the reader's
// consumer (store.Pull), so a registry that served other bytes the
// second time is caught there.
type resumingReader struct {
	ctx     context.Context
	open    func() (io.ReadCloser, error)
	rc      io.ReadCloser
	n       int64 // bytes delivered
	backoff remote.Backoff
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.rc == nil {
			rc, err := r.open()
			if err == nil {
				if _, err = io.CopyN(io.Discard, rc, r.n); err != nil {
					rc.Close()
				}
			}
			if err != nil {
				if r.retry(err) {
					continue
				}
				return 0, err
			}
			r.rc = rc
		}
		n, err := r.rc.Read(p)
		r.n += int64(n)
		if err == nil || err == io.EOF || !r.retry(err) {
			return n, err
		}
		r.rc.Close()
		r.rc = nil
		if n > 0 {
			return n, nil
		}
	}
}

// retry says whether err is worth another attempt and, if so, waits the
// next backoff step (or until ctx ends).
func (r *resumingReader) retry(err error) bool {
	if r.ctx.Err() != nil || r.backoff.Steps <= 0 {
		return false
	}
	var nerr net.Error
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) &&
		!(errors.As(err, &nerr) && nerr.Timeout()) {
		return false
	}
	t := time.NewTimer(r.backoff.Step())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.ctx.Done():
		return false
	}
}

func (r *resumingReader) Close() error {
	if r.rc == nil {
		return nil
	}
	return r.rc.Close()
}
