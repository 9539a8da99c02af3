package podman

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// TarEntry is one entry of a layer tar, in the order the tar holds them.
type TarEntry struct {
	Name     string // relative, no leading slash; a directory needs no trailing slash
	Type     byte   // tar.TypeReg, TypeDir, TypeSymlink
	Mode     int64  // permission bits
	UID, GID int
	Data     []byte // regular files
	Linkname string // symlinks
}

// Dir is a directory entry owned by root.
func Dir(name string, mode int64) TarEntry {
	return TarEntry{Name: name, Type: tar.TypeDir, Mode: mode}
}

// File is a regular file entry owned by root.
func File(name, data string, mode int64) TarEntry {
	return TarEntry{Name: name, Type: tar.TypeReg, Mode: mode, Data: []byte(data)}
}

// Link is a symlink entry owned by root.
func Link(name, target string) TarEntry {
	return TarEntry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// Owned returns e owned by uid:gid.
func (e TarEntry) Owned(uid, gid int) TarEntry { e.UID, e.GID = uid, gid; return e }

// Whiteout is the OCI whiteout of path: an empty file .wh.NAME beside it.
func Whiteout(path string) TarEntry {
	return File(filepath.Join(filepath.Dir(path), ".wh."+filepath.Base(path)), "", 0o644)
}

// OpaqueMarker makes dir opaque in its layer: .wh..wh..opq inside it.
func OpaqueMarker(dir string) TarEntry { return File(dir+"/.wh..wh..opq", "", 0o644) }

// epoch is the fixed time of every entry, so that layers are reproducible.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// LayerTar returns the uncompressed tar of entries.
func LayerTar(entries []TarEntry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			ModTime: epoch, Linkname: e.Linkname, Format: tar.FormatPAX,
		}
		switch e.Type {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			h.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer tar %q: %w", e.Name, err)
		}
		if e.Type == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, fmt.Errorf("layer tar %q: %w", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

// Busybox applets the test images link in /bin.
var applets = []string{
	"sh", "ls", "cat", "echo", "rm", "mkdir", "rmdir", "touch", "stat", "id",
	"find", "test", "mv", "chown", "chmod", "sort", "ln", "readlink", "true",
	"sync", "sed", "grep", "head", "tr", "cut", "wc", "printf",
}

// TestImageLayers are the three layers of the test image, bottom first:
//
//	1  busybox in /bin; /data/{keep,gone,owned}; /dir/{old,sub/old2}; /tmp
//	2  /data/gone whited out; /data/new
//	3  /dir opaque with /dir/fresh; /data/keep rewritten
//
// So the image shows /data/{keep (v2), new, owned} and /dir/fresh only.
// /data/owned belongs to 1000:1000, to see id mappings at work.
func TestImageLayers(busybox []byte) [][]TarEntry {
	base := []TarEntry{
		Dir("bin", 0o755),
		{Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Data: busybox},
	}
	for _, a := range applets {
		base = append(base, Link("bin/"+a, "busybox"))
	}
	base = append(base,
		Dir("etc", 0o755),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n", 0o644),
		File("etc/group", "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n", 0o644),
		Dir("tmp", 0o1777),
		Dir("data", 0o755),
		File("data/keep", "keep v1\n", 0o644),
		File("data/gone", "gone\n", 0o644),
		File("data/owned", "owned\n", 0o644).Owned(1000, 1000),
		Dir("dir", 0o755),
		File("dir/old", "old\n", 0o644),
		Dir("dir/sub", 0o755),
		File("dir/sub/old2", "old2\n", 0o644),
	)
	second := []TarEntry{
		Dir("data", 0o755),
		Whiteout("data/gone"),
		File("data/new", "new\n", 0o644),
	}
	third := []TarEntry{
		Dir("data", 0o755),
		File("data/keep", "keep v2\n", 0o644),
		Dir("dir", 0o755),
		OpaqueMarker("dir"),
		File("dir/fresh", "fresh\n", 0o644),
	}
	return [][]TarEntry{base, second, third}
}

// Media types of an OCI image.
const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// WriteOCIArchive writes an oci-archive (a tar of an OCI image layout) of
// one image made of layers (bottom first) to path, tagged ref (the
// org.opencontainers.image.ref.name annotation, e.g. "latest"). podman load
// and skopeo read it without a network.
func WriteOCIArchive(path, ref string, layers [][]TarEntry) error {
	blobs := map[string][]byte{} // digest -> content
	add := func(b []byte) string {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d
	}
	var layerDescs []descriptor
	var diffIDs []string
	var history []map[string]any
	for i, l := range layers {
		b, err := LayerTar(l)
		if err != nil {
			return err
		}
		d := add(b)
		layerDescs = append(layerDescs, descriptor{MediaType: mediaLayer, Digest: d, Size: int64(len(b))})
		diffIDs = append(diffIDs, d) // uncompressed: the digest is the diff id
		history = append(history, map[string]any{
			"created": epoch.Format(time.RFC3339), "created_by": fmt.Sprintf("unionmount test layer %d", i+1),
		})
	}
	config, err := json.Marshal(map[string]any{
		"created":      epoch.Format(time.RFC3339),
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"/bin/sh"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history":      history,
	})
	if err != nil {
		return err
	}
	cd := add(config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        descriptor{MediaType: mediaConfig, Digest: cd, Size: int64(len(config))},
		"layers":        layerDescs,
	})
	if err != nil {
		return err
	}
	md := add(manifest)
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []descriptor{{
			MediaType: mediaManifest, Digest: md, Size: int64(len(manifest)),
			Annotations: map[string]string{"org.opencontainers.image.ref.name": ref},
		}},
	})
	if err != nil {
		return err
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write oci archive: %w", err)
	}
	tw := tar.NewWriter(f)
	file := func(name string, b []byte) error {
		h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch})
	}
	err = file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err == nil {
			err = dir(d)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(blobs)) {
		if err == nil {
			err = file("blobs/sha256/"+d[len("sha256:"):], blobs[d])
		}
	}
	if err == nil {
		err = file("index.json", index)
	}
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write oci archive %s: %w", path, err)
	}
	return nil
}
