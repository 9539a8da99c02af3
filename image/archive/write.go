package archive

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
)

// SaveLayer is a layer ready to be written: its blob in a file.
type SaveLayer struct {
	Path      string        // the blob
	Digest    digest.Digest // of the blob
	Size      int64         // of the blob
	MediaType string        // OCI layer media type of the blob
	DiffID    digest.Digest // of the uncompressed tar
	// Annotations of the layer's descriptor in the manifest (the TOC
	// digest of an eStargz blob).
	Annotations map[string]string
}

// SaveImage is an image to write.
type SaveImage struct {
	Config []byte
	Names  []string // NAME:TAG
	Layers []SaveLayer
}

// ConfigDigest is the image ID.
func (s SaveImage) ConfigDigest() digest.Digest { return digest.FromBytes(s.Config) }

type blob struct {
	d    digest.Digest
	size int64
	data []byte // small blobs in memory
	path string // or a file
}

// ociBlobs returns the manifest per image and every blob of the layout:
// configs, manifests, layers (each once).
func ociBlobs(imgs []SaveImage) (v1.Index, []blob, error) {
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex}
	var blobs []blob
	seen := map[digest.Digest]bool{}
	add := func(b blob) {
		if !seen[b.d] {
			seen[b.d] = true
			blobs = append(blobs, b)
		}
	}
	for _, img := range imgs {
		cd := img.ConfigDigest()
		add(blob{d: cd, size: int64(len(img.Config)), data: img.Config})
		m := v1.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: v1.MediaTypeImageManifest,
			Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cd, Size: int64(len(img.Config))},
			Layers:    []v1.Descriptor{},
		}
		for _, l := range img.Layers {
			m.Layers = append(m.Layers, v1.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size, Annotations: l.Annotations})
			add(blob{d: l.Digest, size: l.Size, path: l.Path})
		}
		mb, err := json.Marshal(m)
		if err != nil {
			return idx, nil, err
		}
		md := digest.FromBytes(mb)
		add(blob{d: md, size: int64(len(mb)), data: mb})
		desc := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: md, Size: int64(len(mb))}
		names := img.Names
		if len(names) == 0 {
			names = []string{""}
		}
		for _, n := range names {
			d := desc
			if n != "" {
				// The full name, as skopeo and podman write it; docker and
				// containerd also read io.containerd.image.name.
				d.Annotations = map[string]string{v1.AnnotationRefName: n, AnnotationContainerdName: n}
			}
			idx.Manifests = append(idx.Manifests, d)
		}
	}
	return idx, blobs, nil
}

// WriteOCILayout writes imgs as an OCI image layout in dir, creating it if
// needed. Blobs already there are kept; index.json is replaced by one that
// lists imgs and the entries of the old index under other names.
func WriteOCILayout(dir string, imgs []SaveImage) error {
	idx, blobs, err := ociBlobs(imgs)
	if err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	for _, b := range blobs {
		dst := filepath.Join(dir, filepath.FromSlash(blobPath(b.d)))
		if st, err := os.Stat(dst); err == nil && st.Size() == b.size {
			continue
		}
		if err := writeBlobFile(dst, b); err != nil {
			return fmt.Errorf("write layout: %w", err)
		}
	}
	if old, err := os.ReadFile(filepath.Join(dir, v1.ImageIndexFile)); err == nil {
		var prev v1.Index
		if json.Unmarshal(old, &prev) == nil {
			taken := map[string]bool{}
			for _, m := range idx.Manifests {
				taken[m.Annotations[v1.AnnotationRefName]] = true
			}
			for _, m := range prev.Manifests {
				if n := m.Annotations[v1.AnnotationRefName]; n == "" || !taken[n] {
					idx.Manifests = append(idx.Manifests, m)
				}
			}
		}
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	lb, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err := writeFileAtomic(filepath.Join(dir, v1.ImageLayoutFile), lb); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, v1.ImageIndexFile), ib); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	return nil
}

func writeBlobFile(dst string, b blob) error {
	tmp := dst + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if b.data != nil {
		_, err = f.Write(b.data)
	} else {
		err = copyFrom(f, b.path)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func copyFrom(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func writeFileAtomic(p string, b []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// tarOut writes archive members with fixed metadata.
type tarOut struct {
	tw   *tar.Writer
	when time.Time
	dirs map[string]bool
}

func newTarOut(w io.Writer) *tarOut {
	return &tarOut{tw: tar.NewWriter(w), when: time.Unix(0, 0), dirs: map[string]bool{}}
}

func (t *tarOut) dir(name string) error {
	if t.dirs[name] {
		return nil
	}
	t.dirs[name] = true
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: t.when})
}

func (t *tarOut) file(name string, size int64, content func(io.Writer) error) error {
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: t.when}); err != nil {
		return err
	}
	return content(t.tw)
}

func (t *tarOut) bytes(name string, b []byte) error {
	return t.file(name, int64(len(b)), func(w io.Writer) error { _, err := w.Write(b); return err })
}

func (t *tarOut) blob(name string, b blob) error {
	if b.data != nil {
		return t.bytes(name, b.data)
	}
	return t.file(name, b.size, func(w io.Writer) error { return copyFrom(w, b.path) })
}

// WriteOCIArchive writes imgs as an oci-archive: a tar of an OCI layout.
func WriteOCIArchive(w io.Writer, imgs []SaveImage) error {
	idx, blobs, err := ociBlobs(imgs)
	if err != nil {
		return fmt.Errorf("write oci-archive: %w", err)
	}
	t := newTarOut(w)
	lb, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	ib, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("write oci-archive: %w", err)
	}
	err = errors.Join(t.bytes(v1.ImageLayoutFile, lb), t.bytes(v1.ImageIndexFile, ib), t.dir("blobs"), t.dir("blobs/sha256"))
	for _, b := range blobs {
		if err != nil {
			break
		}
		err = t.blob(blobPath(b.d), b)
	}
	if err == nil {
		err = t.tw.Close()
	}
	if err != nil {
		return fmt.Errorf("write oci-archive: %w", err)
	}
	return nil
}

// WriteDockerArchive writes imgs as a docker save archive in the layout
// docker wrote before version 25 and skopeo writes: manifest.json,
// "<config hex>.json", one "<diff_id hex>.tar" per layer. Layers must be
// uncompressed.
func WriteDockerArchive(w io.Writer, imgs []SaveImage) error {
	t := newTarOut(w)
	var manifest []dockerManifest
	seen := map[string]bool{}
	var err error
	for _, img := range imgs {
		cd := img.ConfigDigest()
		m := dockerManifest{Config: cd.Encoded() + ".json", RepoTags: img.Names, Layers: []string{}}
		if m.RepoTags == nil {
			m.RepoTags = []string{}
		}
		if !seen[m.Config] {
			seen[m.Config] = true
			err = errors.Join(err, t.bytes(m.Config, img.Config))
		}
		for _, l := range img.Layers {
			if l.MediaType != v1.MediaTypeImageLayer {
				return fmt.Errorf("write docker-archive: %w: layer %s is compressed (%s)", image.ErrUnsupported, l.DiffID, l.MediaType)
			}
			name := l.DiffID.Encoded() + ".tar"
			m.Layers = append(m.Layers, name)
			if !seen[name] {
				seen[name] = true
				err = errors.Join(err, t.blob(name, blob{d: l.Digest, size: l.Size, path: l.Path}))
			}
		}
		manifest = append(manifest, m)
	}
	mb, merr := json.Marshal(manifest)
	err = errors.Join(err, merr)
	if err == nil {
		err = t.bytes("manifest.json", mb)
	}
	if err == nil {
		err = t.tw.Close()
	}
	if err != nil {
		return fmt.Errorf("write docker-archive: %w", err)
	}
	return nil
}
