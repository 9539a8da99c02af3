package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	gcr "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/store"
)

// PushEvent reports one blob of a push.
type PushEvent struct {
	Layer  int // index in the image's layers; -1 for the config
	Digest digest.Digest
	State  PushState
}

// PushState is where one blob of a push is.
type PushState int

// Push states.
const (
	PushPreparing PushState = iota // checking whether the registry has it
	PushUploading                  // the registry lacked it: sending it
	PushDone                       // sent, found there, or mounted
)

// PushResult says what Push did.
type PushResult struct {
	ManifestDigest digest.Digest
	Uploaded       int // blobs sent (the others were there or mounted)
	Reused         bool
}

// Push sends the stored image img to dest: only the blobs the registry
// lacks (it is asked first, and blobs it holds in another repository are
// mounted from there), then the manifest. See store.PlanPush for which
// manifest.
func Push(ctx context.Context, st *store.Store, img *store.Image, dest image.Remote, opts Options, events func(PushEvent)) (PushResult, error) {
	var res PushResult
	what := "push " + dest.String()
	if dest.Tag == "" {
		return res, fmt.Errorf("%s: %w: push to NAME:TAG (a digest names what is there already)", what, image.ErrInvalidReference)
	}
	repo, err := opts.repository(dest)
	if err != nil {
		return res, err
	}
	ropts, err := opts.remoteOptions(dest.Registry, NewKeychain(opts))
	if err != nil {
		return res, err
	}
	pusher, err := remote.NewPusher(append(ropts, remote.WithContext(ctx))...)
	if err != nil {
		return res, err
	}
	plan, err := st.PlanPush(img, dest.Registry, store.PushOptions{Estargz: opts.Estargz})
	if err != nil {
		return res, fmt.Errorf("%s: %w", what, err)
	}
	defer plan.Done()
	res.ManifestDigest, res.Reused = plan.ManifestDigest, plan.Reused
	if events == nil {
		events = func(PushEvent) {}
	}

	var uploaded atomic.Int32
	upload := func(i int, l gcr.Layer, d digest.Digest) error {
		events(PushEvent{Layer: i, Digest: d, State: PushPreparing})
		if err := pusher.Upload(ctx, repo, l); err != nil {
			return opts.explain(dest.Registry, err, fmt.Sprintf("%s: blob %s", what, d.Encoded()[:12]))
		}
		events(PushEvent{Layer: i, Digest: d, State: PushDone})
		return nil
	}
	sem := make(chan struct{}, opts.jobs())
	var wg sync.WaitGroup
	errs := make([]error, len(plan.Layers))
	for i, pl := range plan.Layers {
		var l gcr.Layer = &pushLayer{pl: pl, onOpen: func() {
			uploaded.Add(1)
			events(PushEvent{Layer: i, Digest: pl.Blob.Digest, State: PushUploading})
		}}
		if from := mountSource(pl.Blob, dest); from != "" {
			src, err := name.NewRepository(from, opts.nameOptions()...)
			if err == nil {
				l = &remote.MountableLayer{Layer: l, Reference: src.Digest(pl.Blob.Digest.String())}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = upload(i, l, pl.Blob.Digest)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	// The config is where the image's manifests are: mounted from there.
	cb := store.Blob{Digest: plan.ConfigDescriptor.Digest, Size: plan.ConfigDescriptor.Size, MediaType: plan.ConfigDescriptor.MediaType}
	for _, rd := range img.RepoDigests {
		if repo, _, ok := strings.Cut(rd, "@"); ok && !plan.Estargz {
			cb.Repos = append(cb.Repos, repo)
		}
	}
	var cfg gcr.Layer = &pushLayer{pl: store.PushLayer{Blob: cb,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(plan.Config)), nil },
	}, onOpen: func() { uploaded.Add(1) }}
	if from := mountSource(cb, dest); from != "" {
		if src, err := name.NewRepository(from, opts.nameOptions()...); err == nil {
			cfg = &remote.MountableLayer{Layer: cfg, Reference: src.Digest(cb.Digest.String())}
		}
	}
	if err := upload(-1, cfg, plan.ConfigDescriptor.Digest); err != nil {
		return res, err
	}
	gref := repo.Tag(dest.Tag)
	if err := pusher.Put(ctx, gref, rawManifest{raw: plan.Manifest, mt: types.MediaType(plan.ManifestMediaType)}); err != nil {
		return res, opts.explain(dest.Registry, err, what+": manifest")
	}
	res.Uploaded = int(uploaded.Load())
	if err := plan.Pushed(dest.Name()); err != nil {
		return res, fmt.Errorf("%s: pushed, but recording it in the store failed: %w", what, err)
	}
	return res, nil
}

// mountSource is a repository on dest's registry, other than dest's, that
// holds the blob: the registry can mount it from there.
func mountSource(b store.Blob, dest image.Remote) string {
	for _, r := range b.Repos {
		if r != dest.Name() && len(r) > len(dest.Registry) && r[:len(dest.Registry)+1] == dest.Registry+"/" {
			return r
		}
	}
	return ""
}

// pushLayer is a store blob as go-containerregistry's layer.
type pushLayer struct {
	pl     store.PushLayer
	onOpen func()
}

func (l *pushLayer) Digest() (gcr.Hash, error) { return gcr.NewHash(l.pl.Blob.Digest.String()) }
func (l *pushLayer) DiffID() (gcr.Hash, error) {
	if l.pl.DiffID == "" {
		return l.Digest()
	}
	return gcr.NewHash(l.pl.DiffID.String())
}
func (l *pushLayer) Size() (int64, error) { return l.pl.Blob.Size, nil }
func (l *pushLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.pl.Blob.MediaType), nil
}
func (l *pushLayer) Compressed() (io.ReadCloser, error) {
	if l.onOpen != nil {
		l.onOpen()
	}
	return l.pl.Open()
}
func (l *pushLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("push: uncompressed layer not available")
}

// rawManifest is a manifest to put as it is.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }
