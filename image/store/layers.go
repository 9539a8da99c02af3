package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
)

// Layer is the record of one stored layer (layers/<id hex>/layer.json).
type Layer struct {
	// ID is the layer's chain ID: its diff_id for a base layer, else
	// sha256(parent chain ID + " " + diff_id). Layers are shared by
	// every image with the same stack below and including them.
	ID        digest.Digest `json:"id"`
	Parent    digest.Digest `json:"parent,omitempty"`
	DiffID    digest.Digest `json:"diff_id"`
	Size      int64         `json:"size"`     // regular file bytes and symlink targets
	TarSize   int64         `json:"tar_size"` // bytes of the uncompressed tar
	Created   time.Time     `json:"created"`
	CreatedBy string        `json:"created_by,omitempty"`
	Comment   string        `json:"comment,omitempty"`
	// TarSplit: tarsplit.gz reproduces the tar exactly (false only for
	// layers with sparse files: save writes a fresh tar for them).
	TarSplit bool `json:"tarsplit"`
	// Blobs are the compressed forms of the layer that registries are
	// known to hold: pull records the blob it unpacked, push the blob it
	// made (once; later pushes reuse its digest).
	Blobs []Blob `json:"blobs,omitempty"`
}

// Blob is a compressed layer tar as a registry stores it.
type Blob struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"media_type"`
	// Repos are repositories (REGISTRY/PATH) known to hold the blob: a
	// push to another repository of the same registry mounts it from one
	// of them instead of uploading it.
	Repos []string `json:"repos,omitempty"`
	// Own: unionctl made the blob from the layer's tar (gzip, default
	// level), so it can make it again for a registry that lacks it.
	Own bool `json:"own,omitempty"`
}

// ChainID computes the chain ID of a layer over parent ("" for a base
// layer) with the given diff_id (OCI image spec, config.md).
func ChainID(parent, diffID digest.Digest) digest.Digest {
	if parent == "" {
		return diffID
	}
	return digest.FromString(parent.String() + " " + diffID.String())
}

// ChainIDs computes the chain ID of each layer of a stack of diff_ids.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	var parent digest.Digest
	for i, d := range diffIDs {
		parent = ChainID(parent, d)
		out[i] = parent
	}
	return out
}

func (s *Store) layerDir(id digest.Digest) string { return s.path("layers", id.Encoded()) }

// LayerDiff returns the directory holding the layer's unpacked contents.
func (s *Store) LayerDiff(id digest.Digest) string { return filepath.Join(s.layerDir(id), "diff") }

// Layer reads a layer record.
func (s *Store) Layer(id digest.Digest) (*Layer, error) {
	if id.Validate() != nil {
		return nil, fmt.Errorf("%w: layer %q", image.ErrNotFound, id)
	}
	var l Layer
	if err := readJSON(filepath.Join(s.layerDir(id), "layer.json"), &l); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: layer %s", image.ErrNotFound, id)
		}
		return nil, fmt.Errorf("read layer %s: %w", id, err)
	}
	return &l, nil
}

func (s *Store) hasLayer(id digest.Digest) bool {
	_, err := os.Stat(filepath.Join(s.layerDir(id), "layer.json"))
	return err == nil
}

// newLayer unpacks the uncompressed tar r as the layer over parent, and
// moves it into place. want, when set, is the diff_id the tar must have
// (ErrDigestMismatch otherwise, and nothing is stored). If a layer with the
// resulting chain ID exists already, it is kept and created is false.
// Call with the lock held.
func (s *Store) newLayer(r io.Reader, parent, want digest.Digest, meta Layer) (l *Layer, created bool, err error) {
	return s.newLayerVerified(r, parent, want, meta, nil)
}

// newLayerVerified is newLayer with one more check, verify, run after the
// tar is unpacked and before the layer moves into place: Pull uses it to
// wait for the digest of the compressed blob the tar came from.
func (s *Store) newLayerVerified(r io.Reader, parent, want digest.Digest, meta Layer, verify func() error) (l *Layer, created bool, err error) {
	stage, err := s.tempDir("layer-")
	if err != nil {
		return nil, false, err
	}
	defer removeAll(stage)
	diff := filepath.Join(stage, "diff")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return nil, false, fmt.Errorf("stage layer: %w", err)
	}
	split, err := os.Create(filepath.Join(stage, "tarsplit.gz"))
	if err != nil {
		return nil, false, fmt.Errorf("stage layer: %w", err)
	}
	opts := s.applyOptions(split, parent)
	opts.MaxSize = s.opts.MaxLayerSize
	limit := "as given"
	if opts.MaxSize == 0 {
		if opts.MaxSize, err = layer.SpaceLimit(stage); err != nil {
			split.Close()
			return nil, false, fmt.Errorf("stage layer: %w", err)
		}
		limit = "the free space of the store's filesystem less a reserve"
	}
	st, err := layer.Apply(diff, r, opts)
	if cerr := split.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("stage layer: %w", cerr)
	}
	if errors.Is(err, image.ErrTooLarge) {
		err = fmt.Errorf("%w (the limit: %s)", err, limit)
	}
	if err != nil {
		return nil, false, err
	}
	if want != "" && st.DiffID != want {
		return nil, false, fmt.Errorf("%w: layer tar hashes to %s, the image config says %s", image.ErrDigestMismatch, st.DiffID, want)
	}
	if verify != nil {
		if err := verify(); err != nil {
			return nil, false, err
		}
	}
	if !st.Split {
		os.Remove(filepath.Join(stage, "tarsplit.gz"))
	}
	rec := meta
	rec.ID = ChainID(parent, st.DiffID)
	rec.Parent = parent
	rec.DiffID = st.DiffID
	rec.Size = st.Size
	rec.TarSize = st.TarSize
	rec.TarSplit = st.Split
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC()
	}
	if s.hasLayer(rec.ID) {
		l, err := s.Layer(rec.ID)
		return l, false, err
	}
	if err := writeJSON(filepath.Join(stage, "layer.json"), &rec); err != nil {
		return nil, false, fmt.Errorf("stage layer: %w", err)
	}
	if err := os.Chmod(stage, 0o711); err != nil {
		return nil, false, fmt.Errorf("stage layer: %w", err)
	}
	if err := os.Rename(stage, s.layerDir(rec.ID)); err != nil {
		return nil, false, fmt.Errorf("store layer %s: %w", rec.ID, err)
	}
	return &rec, true, nil
}

// LayerTar writes the layer's tar to w: the exact bytes it was stored
// from when the layer has a tar-split record, else a fresh tar of its
// directory (whose digest then differs from the recorded diff_id). It
// returns the digest and size of what it wrote.
func (s *Store) LayerTar(l *Layer, w io.Writer) (digest.Digest, int64, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	var err error
	if l.TarSplit {
		var f *os.File
		f, err = os.Open(filepath.Join(s.layerDir(l.ID), "tarsplit.gz"))
		if err == nil {
			err = layer.Reassemble(s.LayerDiff(l.ID), f, cw)
			f.Close()
		}
	} else {
		err = layer.WriteTar(cw, s.LayerDiff(l.ID))
	}
	if err != nil {
		return "", 0, fmt.Errorf("layer %s: %w", l.ID, err)
	}
	d := digest.NewDigest(digest.SHA256, h)
	if l.TarSplit && d != l.DiffID {
		return "", 0, fmt.Errorf("%w: layer %s reassembles to %s: the store was changed behind unionctl's back", image.ErrDigestMismatch, l.ID, d)
	}
	return d, cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Layers lists every stored layer.
func (s *Store) Layers() ([]*Layer, error) {
	ents, err := os.ReadDir(s.path("layers"))
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	var out []*Layer
	for _, e := range ents {
		l, err := s.Layer(digest.NewDigestFromEncoded(digest.SHA256, e.Name()))
		if err != nil {
			continue // not a complete layer
		}
		out = append(out, l)
	}
	return out, nil
}

// collectLayers removes every layer no image uses, and returns their IDs.
// Call with the lock held.
func (s *Store) collectLayers() ([]digest.Digest, error) {
	imgs, err := s.Images()
	if err != nil {
		return nil, err
	}
	used := map[digest.Digest]bool{}
	for _, img := range imgs {
		for _, l := range img.Layers {
			used[l] = true
		}
	}
	cs, err := s.Containers()
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		for _, l := range c.Layers {
			used[l] = true
		}
	}
	if err := s.collectLazy(used); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(s.path("layers"))
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	var removed []digest.Digest
	for _, e := range ents {
		id := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if used[id] {
			continue
		}
		if err := s.discard(s.path("layers", e.Name())); err != nil {
			return removed, fmt.Errorf("remove layer %s: %w", id, err)
		}
		removed = append(removed, id)
	}
	return removed, nil
}
