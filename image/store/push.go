package store

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
)

// PushImage is an image as a push sends it to one registry: the manifest
// to put, exact bytes, and the blobs it names.
type PushImage struct {
	Manifest          []byte
	ManifestDigest    digest.Digest
	ManifestMediaType string
	Config            []byte
	ConfigDescriptor  v1.Descriptor
	Layers            []PushLayer
	// Reused: the manifest is one a registry served this image as (kept
	// by pull or an earlier push), so its digest is the same again.
	Reused bool
	// Estargz: the layers are eStargz blobs made for this push, so the
	// config (its diff_ids) is new too: the registry gets another image
	// than the stored one, and the store records nothing of the push.
	Estargz bool
}

// PushOptions configures PlanPush.
type PushOptions struct {
	// Estargz makes every layer an eStargz blob (layer.BuildEstargz),
	// with the TOC digest and uncompressed size annotations, so that the
	// image can be pulled lazily; other tools read it as gzip layers.
	Estargz bool
}

// PushLayer is one layer blob of a push.
type PushLayer struct {
	Blob   Blob // digest, size, media type, and repositories known to hold it
	DiffID digest.Digest
	// Open opens the compressed blob. For a blob a registry made (one
	// that was pulled) it fails: the blob can only be mounted or found
	// there.
	Open func() (io.ReadCloser, error)
}

// PushPlan is a push of one image, holding the store's lock until Done.
type PushPlan struct {
	*PushImage
	s      *Store
	img    *Image
	unlock func()
	work   string
}

// Done releases the store.
func (p *PushPlan) Done() {
	removeAll(p.work)
	p.unlock()
}

// PlanPush prepares a push of img to the registry host (HOST[:PORT]).
//
// When the image came from (or went to) that registry and every layer's
// blob is known to be there, the manifest it was served as is sent again,
// byte for byte: same manifest digest, and the registry has every blob
// (a push to another repository mounts them). Otherwise the manifest is a
// new OCI one over gzip blobs unionctl makes from the layers: each is
// compressed once, its digest remembered in the layer's record, and a
// later push asks the registry for that digest before compressing again
// (gzip output is deterministic, so the digest holds).
//
// With opts.Estargz every layer is made into an eStargz blob again on each
// push (nothing is remembered: the blobs belong to another image, the one
// with the eStargz diff_ids).
func (s *Store) PlanPush(img *Image, host string, opts PushOptions) (*PushPlan, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	work, err := s.tempDir("push-")
	if err != nil {
		unlock()
		return nil, err
	}
	p := &PushPlan{s: s, img: img, unlock: unlock, work: work}
	if p.PushImage, err = s.planPush(img, host, work, opts); err != nil {
		p.Done()
		return nil, err
	}
	return p, nil
}

func (s *Store) planPush(img *Image, host, work string, opts PushOptions) (*PushImage, error) {
	cur, err := s.ImageByID(img.ID)
	if err != nil {
		return nil, err
	}
	if err := s.requireComplete(cur, "push"); err != nil {
		return nil, err
	}
	_, config, err := s.Config(cur)
	if err != nil {
		return nil, err
	}
	var layers []*Layer
	for _, id := range cur.Layers {
		l, err := s.Layer(id)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	if opts.Estargz {
		return s.planEstargz(layers, config, work)
	}
	if pi := s.keptManifest(cur, layers, config, host); pi != nil {
		return pi, nil
	}
	pi := &PushImage{Config: config, ManifestMediaType: v1.MediaTypeImageManifest,
		ConfigDescriptor: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}}
	m := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: pi.ConfigDescriptor, Layers: []v1.Descriptor{}}
	m.SchemaVersion = 2
	for _, l := range layers {
		pl, ok := registryBlob(l, host)
		if !ok {
			var err error
			if pl, err = s.ownBlob(l, work); err != nil {
				return nil, err
			}
		}
		pi.Layers = append(pi.Layers, pl)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: pl.Blob.MediaType, Digest: pl.Blob.Digest, Size: pl.Blob.Size})
	}
	if pi.Manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	pi.ManifestDigest = digest.FromBytes(pi.Manifest)
	return pi, nil
}

// planEstargz is a push of eStargz blobs made now from layers, with
// config's diff_ids replaced by theirs.
func (s *Store) planEstargz(layers []*Layer, config []byte, work string) (*PushImage, error) {
	pi := &PushImage{ManifestMediaType: v1.MediaTypeImageManifest, Estargz: true}
	var descs []v1.Descriptor
	var diffIDs []digest.Digest
	for i, l := range layers {
		what := fmt.Sprintf("converting layer %d/%d %s to estargz", i+1, len(layers), short(l.DiffID))
		path, eb, err := s.estargzBlob(l, work, what)
		if err != nil {
			return nil, fmt.Errorf("push: %w", err)
		}
		b := Blob{Digest: eb.Digest, Size: eb.Size, MediaType: v1.MediaTypeImageLayerGzip}
		pi.Layers = append(pi.Layers, PushLayer{Blob: b, DiffID: eb.DiffID, Open: func() (io.ReadCloser, error) { return os.Open(path) }})
		descs = append(descs, v1.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size, Annotations: eb.Annotations()})
		diffIDs = append(diffIDs, eb.DiffID)
	}
	var err error
	if pi.Config, err = replaceDiffIDs(config, diffIDs); err != nil {
		return nil, err
	}
	pi.ConfigDescriptor = v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromBytes(pi.Config), Size: int64(len(pi.Config))}
	m := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: pi.ConfigDescriptor, Layers: descs}
	m.SchemaVersion = 2
	if m.Layers == nil {
		m.Layers = []v1.Descriptor{}
	}
	if pi.Manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	pi.ManifestDigest = digest.FromBytes(pi.Manifest)
	return pi, nil
}

// keptManifest is the manifest of a RepoDigest on host whose blobs are
// all known to be on host, or nil.
func (s *Store) keptManifest(img *Image, layers []*Layer, config []byte, host string) *PushImage {
	for _, rd := range img.RepoDigests {
		name, md, ok := cutDigest(rd)
		if !ok || registryOf(name) != host {
			continue
		}
		raw, err := s.Manifest(img, md)
		if err != nil {
			continue
		}
		var m v1.Manifest
		if json.Unmarshal(raw, &m) != nil || m.Config.Digest != img.ID || len(m.Layers) != len(layers) {
			continue
		}
		pi := &PushImage{Manifest: raw, ManifestDigest: md, ManifestMediaType: m.MediaType, Config: config,
			ConfigDescriptor: m.Config, Reused: true}
		if pi.ManifestMediaType == "" {
			// The field is optional in OCI manifests: the config's type
			// tells which kind it is, as registries infer it.
			pi.ManifestMediaType = v1.MediaTypeImageManifest
			if m.Config.MediaType == MediaTypeDockerConfig {
				pi.ManifestMediaType = MediaTypeDockerManifest
			}
		}
		for i, d := range m.Layers {
			b, ok := blobOn(layers[i], d.Digest, host)
			if !ok {
				pi = nil
				break
			}
			b.MediaType = d.MediaType
			pi.Layers = append(pi.Layers, PushLayer{Blob: b, DiffID: layers[i].DiffID, Open: func() (io.ReadCloser, error) {
				return nil, fmt.Errorf("%w: blob %s of layer %s was made by the registry and is no longer in %s; remove the RepoDigest's manifest by pushing to another registry first",
					image.ErrNotFound, short(d.Digest), short(layers[i].ID), host)
			}})
		}
		if pi != nil {
			return pi
		}
	}
	return nil
}

// registryBlob is a blob of l that a repository on host holds (from a
// pull, or a push of another image): pushed by HEAD or mount, never
// uploaded. Docker's layer type becomes OCI's, the same gzip tar bytes.
func registryBlob(l *Layer, host string) (PushLayer, bool) {
	for _, b := range l.Blobs {
		for _, r := range b.Repos {
			if registryOf(r) != host {
				continue
			}
			if b.MediaType == MediaTypeDockerLayer {
				b.MediaType = v1.MediaTypeImageLayerGzip
			}
			return PushLayer{Blob: b, DiffID: l.DiffID, Open: func() (io.ReadCloser, error) {
				return nil, fmt.Errorf("%w: blob %s of layer %s is no longer in %s", image.ErrNotFound, short(b.Digest), short(l.ID), r)
			}}, true
		}
	}
	return PushLayer{}, false
}

// blobOn finds the layer's blob d with a repository on host.
func blobOn(l *Layer, d digest.Digest, host string) (Blob, bool) {
	for _, b := range l.Blobs {
		if b.Digest != d {
			continue
		}
		for _, r := range b.Repos {
			if registryOf(r) == host {
				return b, true
			}
		}
	}
	return Blob{}, false
}

// registryOf is the HOST[:PORT] of REGISTRY/PATH.
func registryOf(repo string) string {
	host, _, _ := strings.Cut(repo, "/")
	return host
}

// ownMediaType marks the blobs unionctl makes: gzip at the default level,
// reproducible from the layer's tar.
const ownMediaType = v1.MediaTypeImageLayerGzip

// ownBlob is the gzip blob unionctl makes of l: remembered from an earlier
// push (and made again only if the registry lacks it), or made now into
// work and remembered.
func (s *Store) ownBlob(l *Layer, work string) (PushLayer, error) {
	for _, b := range l.Blobs {
		if b.Own {
			b := b
			return PushLayer{Blob: b, DiffID: l.DiffID, Open: func() (io.ReadCloser, error) { return s.compressed(l, b) }}, nil
		}
	}
	f, err := os.CreateTemp(work, "blob-")
	if err != nil {
		return PushLayer{}, fmt.Errorf("push: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	zw, err := layer.Compress(cw, layer.Gzip)
	if err != nil {
		return PushLayer{}, err
	}
	what := "compressing layer " + short(l.DiffID)
	var dst io.Writer = zw
	if s.opts.Progress != nil {
		dst = &progressWriter{w: zw, what: what, total: l.TarSize, p: s.opts.Progress}
	}
	diffID, _, err := s.LayerTar(l, dst)
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return PushLayer{}, fmt.Errorf("push: layer %s: %w", short(l.ID), err)
	}
	if diffID != l.DiffID {
		// A layer without an exact tar record: the blob is a fresh tar,
		// which the config's diff_id does not describe.
		return PushLayer{}, fmt.Errorf("%w: layer %s has no exact tar record (sparse files), so its blob would not match the image config; save and load the image to rewrite it",
			image.ErrUnsupported, short(l.ID))
	}
	b := Blob{Digest: digest.NewDigest(digest.SHA256, h), Size: cw.n, MediaType: ownMediaType, Own: true}
	if err := s.rememberBlob(l.ID, b); err != nil {
		return PushLayer{}, err
	}
	path := f.Name()
	return PushLayer{Blob: b, DiffID: l.DiffID, Open: func() (io.ReadCloser, error) { return os.Open(path) }}, nil
}

// compressed makes blob b of l again, streaming, and fails at the end if
// the bytes do not hash to b's digest.
func (s *Store) compressed(l *Layer, b Blob) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		h := sha256.New()
		zw, err := layer.Compress(io.MultiWriter(pw, h), layer.Gzip)
		if err == nil {
			_, _, err = s.LayerTar(l, zw)
		}
		if err == nil {
			err = zw.Close()
		}
		if err == nil && digest.NewDigest(digest.SHA256, h) != b.Digest {
			err = fmt.Errorf("%w: layer %s compresses to other bytes than when it was first pushed", image.ErrDigestMismatch, short(l.ID))
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// Pushed records a push: the image's RepoDigest in repo (REGISTRY/PATH)
// with its manifest, and repo among the repositories of every blob.
func (p *PushPlan) Pushed(repo string) error {
	if p.Estargz {
		return nil
	}
	for i, pl := range p.Layers {
		b := pl.Blob
		b.Repos = []string{repo}
		if err := p.s.rememberBlob(p.img.Layers[i], b); err != nil {
			return err
		}
	}
	cur, err := p.s.ImageByID(p.img.ID)
	if err != nil {
		return err
	}
	return p.s.addRepoDigest(cur, PullSource{Manifest: p.Manifest, ManifestDigest: p.ManifestDigest, Repo: repo})
}

// LayerIDs are the chain IDs of the image pushed, bottom first.
func (p *PushPlan) LayerIDs() []digest.Digest { return p.img.Layers }
