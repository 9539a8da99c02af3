package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image"
)

// A lazy layer is one a `pull --lazy` registered from its eStargz TOC
// alone: the store knows its files' names and attributes and where each
// chunk is in the registry's blob, and holds no content yet. It lives in
// lazy/<chain id hex>/, never in layers/: everything that reads layers/
// sees only complete layers, and a full pull of the same image stores
// the layer there as any other (and removes the lazy record).
//
//	ROOT/lazy/<chain id hex>/
//	  lazy.json    LazyLayer: chain, blob, TOC digest, sizes
//	  tail         the blob's end from TailOffset: the compressed TOC and
//	               the footer, exact bytes (opened and verified against
//	               TOCDigest again on every use)
//	  cache/       verified chunks fetched so far

// LazyLayer is the record of a lazily pulled layer.
type LazyLayer struct {
	ID     digest.Digest `json:"id"` // chain ID, as the complete layer will have
	Parent digest.Digest `json:"parent,omitempty"`
	DiffID digest.Digest `json:"diff_id"` // the config's: the complete layer must match it
	// Blob is the eStargz blob in the registry (Repos: where to fetch it).
	Blob       Blob          `json:"blob"`
	TOCDigest  digest.Digest `json:"toc_digest"`
	TailOffset int64         `json:"tail_offset"`
	// Size is the layer's regular file bytes and symlink targets, from the
	// TOC (as Layer.Size).
	Size int64 `json:"size"`
	// Meta of the history entry, as Layer's.
	CreatedBy string `json:"created_by,omitempty"`
	Comment   string `json:"comment,omitempty"`
	// Access is how to reach the registry (TLS, auth file), as
	// image/registry wrote it at the pull; the store does not read it.
	Access json.RawMessage `json:"access,omitempty"`
}

// LazyInput is what Pull needs to register layer i lazily instead of
// fetching it.
type LazyInput struct {
	// Tail is the blob from TailOffset on (TOC and footer), whose TOC the
	// caller verified against TOCDigest.
	Tail       []byte
	TailOffset int64
	TOCDigest  digest.Digest
	Size       int64 // regular file bytes and symlink targets in the TOC
	Access     json.RawMessage
}

func (s *Store) lazyDir(id digest.Digest) string { return s.path("lazy", id.Encoded()) }

// LazyLayer reads the lazy record of layer id.
func (s *Store) LazyLayer(id digest.Digest) (*LazyLayer, error) {
	if id.Validate() != nil {
		return nil, fmt.Errorf("%w: layer %q", image.ErrNotFound, id)
	}
	var l LazyLayer
	if err := readJSON(filepath.Join(s.lazyDir(id), "lazy.json"), &l); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: lazy layer %s", image.ErrNotFound, id)
		}
		return nil, fmt.Errorf("read lazy layer %s: %w", id, err)
	}
	return &l, nil
}

// LazyTail returns the stored end of a lazy layer's blob (LazyInput.Tail).
func (s *Store) LazyTail(id digest.Digest) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.lazyDir(id), "tail"))
}

// LazyDir is the directory of a lazy layer's record, tail and cache.
func (s *Store) LazyDir(id digest.Digest) string { return s.lazyDir(id) }

// lazyMountpoint is where the union daemon of container c serves the
// lazy layer id (a FUSE filesystem made from its TOC): the layer's lower
// directory for that container. Each container's daemon has its own, so
// that no two daemons mount on one directory.
func (s *Store) lazyMountpoint(c *Container, id digest.Digest) string {
	return filepath.Join(s.containerDir(c.ID), "lazy", id.Encoded())
}

// LazyCache is the directory of a lazy layer's cached chunks.
func (s *Store) LazyCache(id digest.Digest) string { return filepath.Join(s.lazyDir(id), "cache") }

// LazyLayers are the layers of img that are not complete in the store
// (bottom first); none for an ordinary image.
func (s *Store) LazyLayers(img *Image) []*LazyLayer {
	var out []*LazyLayer
	for _, id := range img.Layers {
		if s.hasLayer(id) {
			continue
		}
		if l, err := s.LazyLayer(id); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// LazyProgress is how much of img's lazy layers the store holds: the
// file bytes of the cached chunks (uncompressed, each chunk once) and of
// the whole layers (their Size); 0, 0 for an ordinary image.
func (s *Store) LazyProgress(img *Image) (fetched, total int64) {
	for _, l := range s.LazyLayers(img) {
		total += l.Size
		fetched += min(dirBytes(s.LazyCache(l.ID)), l.Size)
	}
	return fetched, total
}

// dirBytes is the bytes of the regular files directly in dir.
func dirBytes(dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

// requireComplete refuses img when some of its layers are lazy: what
// calls it reads layer directories.
func (s *Store) requireComplete(img *Image, what string) error {
	if ls := s.LazyLayers(img); len(ls) > 0 {
		name := short(img.ID)
		if len(img.Names) > 0 {
			name = img.Names[0]
		}
		return fmt.Errorf("%s: %w: %d of the %d layers of %s are not fetched yet (complete it with unionctl pull %s)",
			what, image.ErrLazy, len(ls), len(img.Layers), name, name)
	}
	return nil
}

// putLazyLayer stores the lazy record of layer meta with its TOC. Call
// with the lock held. A record already there is kept.
func (s *Store) putLazyLayer(meta LazyLayer, in LazyInput) error {
	if _, err := os.Stat(s.lazyDir(meta.ID)); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.path("lazy"), 0o700); err != nil {
		return err
	}
	stage, err := s.tempDir("lazy-")
	if err != nil {
		return err
	}
	defer removeAll(stage)
	if err := os.Mkdir(filepath.Join(stage, "cache"), 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(stage, "tail"), in.Tail); err != nil {
		return fmt.Errorf("stage lazy layer: %w", err)
	}
	if err := writeJSON(filepath.Join(stage, "lazy.json"), meta); err != nil {
		return fmt.Errorf("stage lazy layer: %w", err)
	}
	if err := os.Rename(stage, s.lazyDir(meta.ID)); err != nil {
		return fmt.Errorf("store lazy layer %s: %w", meta.ID, err)
	}
	return nil
}

// collectLazy removes the lazy records no image or container uses, and
// those whose layer is complete in layers/. Call with the lock held.
func (s *Store) collectLazy(used map[digest.Digest]bool) error {
	ents, err := os.ReadDir(s.path("lazy"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("list lazy layers: %w", err)
	}
	for _, e := range ents {
		id := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if used[id] && !s.hasLayer(id) {
			continue
		}
		if err := s.discard(s.path("lazy", e.Name())); err != nil {
			return fmt.Errorf("remove lazy layer %s: %w", id, err)
		}
	}
	return nil
}
