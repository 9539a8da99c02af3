package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
)

// The builder (image/build) keeps one image per build step, as docker's
// classic builder does: each step's image is the next one's parent, and
// the steps' images are the build cache. An image made by a step has a
// build record beside its config:
//
//	images/<id>/build.json   {"parent": "<image id>", "cache_key": "sha256:..."}
//
// A step is cached when an image with the same parent and cache key
// exists. rmi of an image also removes its unnamed build ancestors that
// nothing else uses, so the cache goes with the images that hold it.

// buildRecord is images/<id>/build.json.
type buildRecord struct {
	Parent digest.Digest `json:"parent,omitempty"`
	Key    string        `json:"cache_key"`
}

func (s *Store) buildRecordPath(id digest.Digest) string {
	return filepath.Join(s.imageDir(id), "build.json")
}

func (s *Store) buildRecord(id digest.Digest) (buildRecord, bool) {
	var r buildRecord
	if err := readJSON(s.buildRecordPath(id), &r); err != nil {
		return r, false
	}
	return r, true
}

// StepOptions is the result of one build step.
type StepOptions struct {
	// Parent is the image the step started from.
	Parent *Image
	// Container, when set, ran the step: its upper becomes the step's
	// layer, as Commit makes it. Nil for a step that changed no file.
	Container *Container
	// Config returns the new image's config given the diff_id of the
	// step's layer ("" when there is none).
	Config func(diffID digest.Digest) ([]byte, error)
	// CreatedBy is the layer record's created_by.
	CreatedBy string
	// CacheKey identifies the step for the cache (see CachedStep).
	CacheKey string
}

// PutStep stores the image a build step made: the container's upper as a
// new layer over the parent's (if there is a container), the config, and
// the build record, which lands in the image's directory with it. On
// error nothing is left of it.
func (s *Store) PutStep(o StepOptions) (*Image, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	layers := append([]digest.Digest{}, o.Parent.Layers...)
	var diffID digest.Digest
	var created digest.Digest
	if o.Container != nil {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(layer.WriteTar(pw, s.Upper(o.Container))) }()
		var parent digest.Digest
		if n := len(layers); n > 0 {
			parent = layers[n-1]
		}
		l, isNew, err := s.newLayer(pr, parent, "", Layer{CreatedBy: o.CreatedBy})
		pr.CloseWithError(io.ErrClosedPipe)
		if err != nil {
			return nil, fmt.Errorf("store step layer: %w", err)
		}
		if isNew {
			created = l.ID
		}
		diffID = l.DiffID
		layers = append(layers, l.ID)
	}
	fail := func(err error) (*Image, error) {
		if created != "" {
			s.discard(s.layerDir(created))
		}
		return nil, err
	}
	config, err := o.Config(diffID)
	if err != nil {
		return fail(err)
	}
	// The build record lands with the image, never after it.
	rec, err := json.MarshalIndent(buildRecord{Parent: o.Parent.ID, Key: o.CacheKey}, "", "  ")
	if err != nil {
		return fail(err)
	}
	img, err := s.putImageWith(config, layers, nil, map[string][]byte{"build.json": append(rec, '\n')})
	if err != nil {
		return fail(err)
	}
	return img, nil
}

// CachedStep finds the image an earlier step with this parent and cache
// key made, or returns nil.
func (s *Store) CachedStep(parent digest.Digest, key string) *Image {
	imgs, err := s.Images()
	if err != nil {
		return nil
	}
	for _, img := range imgs {
		if r, ok := s.buildRecord(img.ID); ok && r.Parent == parent && r.Key == key {
			return img
		}
	}
	return nil
}

// BuildParent returns the image a build step started from, "" for an
// image no build step made.
func (s *Store) BuildParent(img *Image) digest.Digest {
	r, _ := s.buildRecord(img.ID)
	return r.Parent
}

// Scratch returns the empty image that FROM scratch starts from: no
// layer, an empty config. It is stored unnamed, and goes with the last
// image built on it.
func (s *Store) Scratch() (*Image, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	cfg := v1.Image{
		Platform: v1.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return s.putImage(b, []digest.Digest{}, nil)
}

// removeBuildAncestors removes, after the image removed was, its build
// ancestors that have no name, no other child and no container, and
// returns their IDs. Call with the lock held.
func (s *Store) removeBuildAncestors(removed digest.Digest, rec buildRecord, cs []*Container) ([]digest.Digest, error) {
	var out []digest.Digest
	for p := rec.Parent; p != ""; {
		img, err := s.ImageByID(p)
		if errors.Is(err, image.ErrNotFound) {
			break
		}
		if err != nil {
			return out, err
		}
		if len(img.Names) > 0 || s.hasBuildChild(p) {
			break
		}
		for _, c := range cs {
			if c.Image == p {
				return out, nil
			}
		}
		next, _ := s.buildRecord(p)
		if err := s.discard(s.imageDir(p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return out, fmt.Errorf("remove image %s: %w", p, err)
		}
		out = append(out, p)
		p = next.Parent
	}
	return out, nil
}

// hasBuildChild reports whether a stored image was built on id.
func (s *Store) hasBuildChild(id digest.Digest) bool {
	ents, err := os.ReadDir(s.path("images"))
	if err != nil {
		return true // in doubt, keep it
	}
	for _, e := range ents {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if r, ok := s.buildRecord(d); ok && r.Parent == id {
			return true
		}
	}
	return false
}
