package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
)

// Image is the record of one image (images/<id hex>/image.json); its
// config is config.json beside it.
type Image struct {
	ID     digest.Digest   `json:"id"`    // sha256 of config.json: the image ID
	Names  []string        `json:"names"` // NAME:TAG, each on one image only
	Layers []digest.Digest `json:"layers"`
	Stored time.Time       `json:"stored"` // when it entered this store
	// RepoDigests are REGISTRY/PATH@DIGEST: the manifests registries
	// serve the image as (one per repository, the last pulled or
	// pushed). Each manifest is kept beside the record,
	// manifest-<digest hex>.json, so a push reproduces it.
	RepoDigests []string `json:"repo_digests,omitempty"`
}

func (s *Store) imageDir(id digest.Digest) string { return s.path("images", id.Encoded()) }

// ImageByID reads an image record.
func (s *Store) ImageByID(id digest.Digest) (*Image, error) {
	var img Image
	if err := readJSON(filepath.Join(s.imageDir(id), "image.json"), &img); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: image %s", image.ErrNotFound, id)
		}
		return nil, fmt.Errorf("read image %s: %w", id, err)
	}
	return &img, nil
}

func (s *Store) hasImage(id digest.Digest) bool {
	_, err := os.Stat(filepath.Join(s.imageDir(id), "image.json"))
	return err == nil
}

// Images lists the stored images, newest first.
func (s *Store) Images() ([]*Image, error) {
	ents, err := os.ReadDir(s.path("images"))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []*Image
	for _, e := range ents {
		img, err := s.ImageByID(digest.NewDigestFromEncoded(digest.SHA256, e.Name()))
		if err != nil {
			continue
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stored.After(out[j].Stored) })
	return out, nil
}

// Config returns the image's config, parsed, and its exact bytes.
func (s *Store) Config(img *Image) (*v1.Image, []byte, error) {
	b, err := os.ReadFile(filepath.Join(s.imageDir(img.ID), "config.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("read config of %s: %w", img.ID, err)
	}
	var c v1.Image
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, nil, fmt.Errorf("%w: config of %s: %w", image.ErrCorrupt, img.ID, err)
	}
	return &c, b, nil
}

// LookupImage finds an image by NAME[:TAG] (also by its short form:
// "busybox" finds "docker.io/library/busybox:latest"), by ID, or by a
// unique ID prefix.
func (s *Store) LookupImage(ref string) (*Image, error) {
	imgs, err := s.Images()
	if err != nil {
		return nil, err
	}
	if r, err := image.ParseReference(ref); err == nil {
		want := r.String()
		for _, img := range imgs {
			for _, n := range img.Names {
				if n == want {
					return img, nil
				}
			}
		}
		var found []*Image
		for _, img := range imgs {
			for _, n := range img.Names {
				if nr, err := image.ParseReference(n); err == nil && nr.Familiar() == r.Familiar() {
					found = append(found, img)
					break
				}
			}
		}
		if len(found) == 1 {
			return found[0], nil
		}
	}
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) >= 1 && isHex(hex) {
		var found []*Image
		for _, img := range imgs {
			if strings.HasPrefix(img.ID.Encoded(), hex) {
				found = append(found, img)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
		default:
			return nil, fmt.Errorf("%w %q: matches %d images; give more of the ID", image.ErrAmbiguous, ref, len(found))
		}
	}
	return nil, fmt.Errorf("%w: no image %q (see unionctl images)", image.ErrNotFound, ref)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// putImage stores an image record for config over layers (chain IDs,
// bottom first) and gives it names, taking them from any other image.
// An image already stored keeps its record and gains the names. A new
// image's record has its names from the start: a crash after its rename
// must not leave it nameless. Call with the lock held.
func (s *Store) putImage(config []byte, layers []digest.Digest, names []string) (*Image, error) {
	return s.putImageWith(config, layers, names, nil)
}

// putImageWith is putImage that also writes extra files (name -> bytes)
// into a new image's directory before it lands.
func (s *Store) putImageWith(config []byte, layers []digest.Digest, names []string, extra map[string][]byte) (*Image, error) {
	id := digest.FromBytes(config)
	img, err := s.ImageByID(id)
	if err != nil && !errors.Is(err, image.ErrNotFound) {
		return nil, err
	}
	if img == nil {
		stage, err := s.tempDir("image-")
		if err != nil {
			return nil, err
		}
		defer removeAll(stage)
		img = &Image{ID: id, Names: []string{}, Layers: layers, Stored: time.Now().UTC()}
		for _, n := range names {
			if r, err := image.ParseReference(n); err == nil && indexOf(img.Names, r.String()) < 0 {
				img.Names = append(img.Names, r.String())
			}
		}
		if err := writeFileAtomic(filepath.Join(stage, "config.json"), config); err != nil {
			return nil, fmt.Errorf("stage image: %w", err)
		}
		if err := writeJSON(filepath.Join(stage, "image.json"), img); err != nil {
			return nil, fmt.Errorf("stage image: %w", err)
		}
		for name, b := range extra {
			if err := writeFileAtomic(filepath.Join(stage, name), b); err != nil {
				return nil, fmt.Errorf("stage image: %w", err)
			}
		}
		if err := os.Rename(stage, s.imageDir(id)); err != nil {
			return nil, fmt.Errorf("store image %s: %w", id, err)
		}
	}
	for _, n := range names {
		if err := s.tagLocked(img, n); err != nil {
			return img, err
		}
	}
	return img, nil
}

// Tag gives the image the name NAME[:TAG], taking it from any other image.
func (s *Store) Tag(img *Image, name string) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := s.ImageByID(img.ID)
	if err != nil {
		return err
	}
	return s.tagLocked(cur, name)
}

func (s *Store) tagLocked(img *Image, name string) error {
	r, err := image.ParseReference(name)
	if err != nil {
		return err
	}
	name = r.String()
	imgs, err := s.Images()
	if err != nil {
		return err
	}
	for _, other := range imgs {
		if other.ID == img.ID {
			continue
		}
		if i := indexOf(other.Names, name); i >= 0 {
			other.Names = append(other.Names[:i], other.Names[i+1:]...)
			if err := writeJSON(filepath.Join(s.imageDir(other.ID), "image.json"), other); err != nil {
				return fmt.Errorf("untag %s: %w", other.ID, err)
			}
		}
	}
	if indexOf(img.Names, name) < 0 {
		img.Names = append(img.Names, name)
		if err := writeJSON(filepath.Join(s.imageDir(img.ID), "image.json"), img); err != nil {
			return fmt.Errorf("tag %s: %w", img.ID, err)
		}
	}
	return nil
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// RemoveResult says what RemoveImage did, in docker's words.
type RemoveResult struct {
	Untagged []string
	Deleted  []digest.Digest // the image, then the layers no image uses any more
}

// RemoveImage removes ref: a name is untagged, and the image goes with
// its last name; an ID removes the image (force is needed when it still
// has several names). Layers go when no image or container uses them. An
// image a container uses stays (ErrInUse).
func (s *Store) RemoveImage(ref string, force bool) (RemoveResult, error) {
	var res RemoveResult
	unlock, err := s.Lock()
	if err != nil {
		return res, err
	}
	defer unlock()
	img, err := s.LookupImage(ref)
	if err != nil {
		return res, err
	}
	byName := ""
	if r, err := image.ParseReference(ref); err == nil {
		for _, n := range img.Names {
			if nr, _ := image.ParseReference(n); n == r.String() || nr.Familiar() == r.Familiar() {
				byName = n
			}
		}
	}
	if byName != "" && len(img.Names) > 1 {
		img.Names = append(img.Names[:indexOf(img.Names, byName)], img.Names[indexOf(img.Names, byName)+1:]...)
		if err := writeJSON(filepath.Join(s.imageDir(img.ID), "image.json"), img); err != nil {
			return res, fmt.Errorf("untag %s: %w", byName, err)
		}
		res.Untagged = append(res.Untagged, byName)
		return res, nil
	}
	if byName == "" && len(img.Names) > 1 && !force {
		return res, fmt.Errorf("%w: image %s has the names %s: remove them one by one or use --force",
			image.ErrInUse, img.ID.Encoded()[:12], strings.Join(img.Names, ", "))
	}
	cs, err := s.Containers()
	if err != nil {
		return res, err
	}
	for _, c := range cs {
		if c.Image == img.ID {
			return res, fmt.Errorf("%w: image %s is used by container %s (%s): remove the container first (unionctl rm %s)",
				image.ErrInUse, img.ID.Encoded()[:12], c.ID[:12], c.Name, c.Name)
		}
	}
	res.Untagged = append(res.Untagged, img.Names...)
	rec, _ := s.buildRecord(img.ID)
	if err := s.discard(s.imageDir(img.ID)); err != nil {
		return res, fmt.Errorf("remove image %s: %w", img.ID, err)
	}
	res.Deleted = append(res.Deleted, img.ID)
	// The build steps it was made by: the build cache goes with it.
	ancestors, err := s.removeBuildAncestors(img.ID, rec, cs)
	res.Deleted = append(res.Deleted, ancestors...)
	if err != nil {
		return res, err
	}
	layers, err := s.collectLayers()
	res.Deleted = append(res.Deleted, layers...)
	return res, err
}

// ImageSize is the sum of the image's layer sizes (what docker images
// shows as SIZE).
func (s *Store) ImageSize(img *Image) int64 {
	var n int64
	for _, id := range img.Layers {
		if l, err := s.Layer(id); err == nil {
			n += l.Size
		} else if ll, err := s.LazyLayer(id); err == nil {
			n += ll.Size
		}
	}
	return n
}

// HistoryEntry is one line of `unionctl history`.
type HistoryEntry struct {
	Layer     digest.Digest `json:"layer,omitempty"` // chain ID; "" for an empty_layer entry
	Created   time.Time     `json:"created"`
	CreatedBy string        `json:"created_by"`
	Size      int64         `json:"size"`
	Comment   string        `json:"comment,omitempty"`
}

// History pairs the config's history with the image's layers, newest
// first. Entries marked empty_layer have no layer and size 0. Layers the
// history does not describe (an image made by a tool that writes none)
// get entries of their own.
func (s *Store) History(img *Image) ([]HistoryEntry, error) {
	cfg, _, err := s.Config(img)
	if err != nil {
		return nil, err
	}
	var out []HistoryEntry
	li := 0
	for _, h := range cfg.History {
		e := HistoryEntry{CreatedBy: h.CreatedBy, Comment: h.Comment}
		if h.Created != nil {
			e.Created = *h.Created
		}
		if !h.EmptyLayer && li < len(img.Layers) {
			e.Layer = img.Layers[li]
			if l, err := s.Layer(e.Layer); err == nil {
				e.Size = l.Size
			} else if ll, err := s.LazyLayer(e.Layer); err == nil {
				e.Size = ll.Size
			}
			li++
		}
		out = append(out, e)
	}
	for ; li < len(img.Layers); li++ {
		e := HistoryEntry{Layer: img.Layers[li]}
		if l, err := s.Layer(e.Layer); err == nil {
			e.Size, e.Created, e.CreatedBy, e.Comment = l.Size, l.Created, l.CreatedBy, l.Comment
		}
		out = append(out, e)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
