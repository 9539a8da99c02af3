package store

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
)

// Diff lists the container's changes from its upper alone (docker diff).
func (s *Store) Diff(c *Container) ([]layer.Change, error) {
	return layer.Changes(s.Upper(c), s.Lowers(c))
}

// Size returns the container's writable layer size (disk usage of the
// upper, as du -s reports it) and its virtual size (that plus the image).
func (s *Store) Size(c *Container) (rw, virtual int64, err error) {
	u, err := layer.DiskUsage(s.Upper(c))
	if err != nil {
		return 0, 0, err
	}
	var img int64
	for _, id := range c.Layers {
		if l, err := s.Layer(id); err == nil {
			img += l.Size
		} else if ll, err := s.LazyLayer(id); err == nil {
			img += ll.Size // still lazy: its size from the TOC
		}
	}
	return u.Disk, img + u.Disk, nil
}

// CommitOptions adds to the new image's config and history.
type CommitOptions struct {
	Message string
	Author  string
}

// Commit makes an image of the container: its upper, written as an OCI
// layer tar (layer.WriteTar) and unpacked as a new layer over the image's,
// plus a config with the new diff_id and a history entry. Only the upper is
// read, so the cost follows the size of the change. A running container is
// read as it is at that moment.
func (s *Store) Commit(c *Container, names []string, opts CommitOptions) (*Image, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	img, err := s.ImageByID(c.Image)
	if err != nil {
		return nil, err
	}
	_, config, err := s.Config(img)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(layer.WriteTar(pw, s.Upper(c))) }()
	var parent digest.Digest
	if n := len(c.Layers); n > 0 {
		parent = c.Layers[n-1]
	}
	now := time.Now().UTC()
	createdBy := strings.Join(c.Config.Args, " ")
	l, created, err := s.newLayer(s.progress(pr, "committing "+c.Name, -1), parent, "",
		Layer{Created: now, CreatedBy: createdBy, Comment: opts.Message})
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", c.Name, err)
	}
	newConfig, err := appendLayer(config, l.DiffID, v1.History{Created: &now, CreatedBy: createdBy, Comment: opts.Message, Author: opts.Author}, opts.Author, now)
	if err == nil {
		var out *Image
		out, err = s.putImage(newConfig, append(append([]digest.Digest{}, c.Layers...), l.ID), names)
		if err == nil {
			return out, nil
		}
	}
	if created {
		s.discard(s.layerDir(l.ID))
	}
	return nil, fmt.Errorf("commit %s: %w", c.Name, err)
}

// appendLayer returns config with one more layer: diff_id appended to
// rootfs.diff_ids, h to history, created (and author) set. Fields unionctl
// does not know are kept.
func appendLayer(config []byte, diffID digest.Digest, h v1.History, author string, now time.Time) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(config, &m); err != nil {
		return nil, fmt.Errorf("%w: config: %w", image.ErrCorrupt, err)
	}
	var cfg v1.Image
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("%w: config: %w", image.ErrCorrupt, err)
	}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
	cfg.History = append(cfg.History, h)
	set := func(k string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		m[k] = b
		return nil
	}
	if err := set("rootfs", cfg.RootFS); err != nil {
		return nil, err
	}
	if err := set("history", cfg.History); err != nil {
		return nil, err
	}
	if err := set("created", now); err != nil {
		return nil, err
	}
	if author != "" {
		if err := set("author", author); err != nil {
			return nil, err
		}
	}
	return json.Marshal(m)
}
