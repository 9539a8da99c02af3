package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/unionmount/unionmount/image"
)

// Volume is a named volume: a directory of the store that containers bind
// at a path. It outlives the containers using it.
type Volume struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Mountpoint is the directory holding the volume's data.
	Mountpoint string `json:"mountpoint"`
}

var volumeRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// VolumePath is the data directory of the named volume.
func (s *Store) VolumePath(name string) string { return s.path("volumes", name, "_data") }

// CreateVolume creates the named volume, or returns it if it exists.
func (s *Store) CreateVolume(name string) (*Volume, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.createVolumeLocked(name)
}

func (s *Store) createVolumeLocked(name string) (*Volume, error) {
	if !volumeRE.MatchString(name) {
		return nil, fmt.Errorf("volume name %q: use letters, digits, '_', '.', '-' (first a letter or digit); host paths start with /", name)
	}
	if v, err := s.Volume(name); err == nil {
		return v, nil
	}
	stage, err := s.tempDir("volume-")
	if err != nil {
		return nil, err
	}
	defer removeAll(stage)
	v := &Volume{Name: name, Created: time.Now().UTC(), Mountpoint: s.VolumePath(name)}
	if err := os.Mkdir(filepath.Join(stage, "_data"), 0o755); err != nil {
		return nil, fmt.Errorf("create volume: %w", err)
	}
	if err := writeJSON(filepath.Join(stage, "volume.json"), v); err != nil {
		return nil, fmt.Errorf("create volume: %w", err)
	}
	os.Chmod(stage, 0o711)
	if err := os.Rename(stage, s.path("volumes", name)); err != nil {
		return nil, fmt.Errorf("create volume: %w", err)
	}
	return v, nil
}

// Volume reads the named volume's record.
func (s *Store) Volume(name string) (*Volume, error) {
	if !volumeRE.MatchString(name) {
		return nil, fmt.Errorf("%w: no volume %q", image.ErrNotFound, name)
	}
	var v Volume
	if err := readJSON(s.path("volumes", name, "volume.json"), &v); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: no volume %q (see unionctl volume ls)", image.ErrNotFound, name)
		}
		return nil, err
	}
	v.Mountpoint = s.VolumePath(name)
	return &v, nil
}

// Volumes lists the named volumes by name.
func (s *Store) Volumes() ([]*Volume, error) {
	ents, err := os.ReadDir(s.path("volumes"))
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var out []*Volume
	for _, e := range ents {
		if v, err := s.Volume(e.Name()); err == nil {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveVolume removes a volume no container uses, with its data.
func (s *Store) RemoveVolume(name string) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.Volume(name); err != nil {
		return err
	}
	cs, err := s.Containers()
	if err != nil {
		return err
	}
	for _, c := range cs {
		for _, m := range c.Mounts {
			if m.Type == "volume" && m.Source == name {
				return fmt.Errorf("%w: volume %s is used by container %s: remove the container first", image.ErrInUse, name, c.Name)
			}
		}
	}
	return s.discard(s.path("volumes", name))
}
