package archive

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"runtime"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
)

// Docker media types that OCI layouts made by skopeo or docker may hold.
const (
	DockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	DockerConfig       = "application/vnd.docker.container.image.v1+json"
	DockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	DockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"

	// AnnotationContainerdName is the full image name containerd and
	// docker write beside org.opencontainers.image.ref.name.
	AnnotationContainerdName = "io.containerd.image.name"
)

// Image is one image found in an archive or a layout.
type Image struct {
	Config       []byte        // the config blob, exact bytes
	ConfigDigest digest.Digest // its digest, verified: the image ID
	Names        []string      // NAME:TAG references the archive gives it
	Layers       []Blob        // bottom first
}

// Blob is a layer as the archive stores it, perhaps compressed.
type Blob struct {
	// Digest of the stored bytes, "" when the format does not name it
	// (docker-archive's old layout: the diff_id check covers it).
	Digest    digest.Digest
	Size      int64 // -1 when unknown
	MediaType string
	Name      string // member name, for messages
	open      func() (io.ReadCloser, int64, error)
}

// Open returns the stored bytes. Read them to the end: the digest and size
// are checked there, and a mismatch is the error that ends the stream
// (ErrDigestMismatch, ErrCorrupt) instead of io.EOF.
func (b Blob) Open() (io.ReadCloser, error) {
	r, size, err := b.open()
	if err != nil {
		return nil, err
	}
	if b.Size >= 0 && size != b.Size {
		r.Close()
		return nil, fmt.Errorf("%w: blob %s is %d bytes, the manifest says %d", image.ErrCorrupt, b.Name, size, b.Size)
	}
	v := &verifier{r: r, name: b.Name, want: b.Digest, size: size}
	if b.Digest != "" {
		if err := b.Digest.Validate(); err != nil {
			r.Close()
			return nil, fmt.Errorf("%w: blob %s: %w", image.ErrCorrupt, b.Name, err)
		}
		v.h = b.Digest.Algorithm().Hash()
	}
	return v, nil
}

// verifier checks a blob's size and digest when its end is read.
type verifier struct {
	r    io.ReadCloser
	name string
	h    hash.Hash
	want digest.Digest
	size int64
	n    int64
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	if v.h != nil {
		v.h.Write(p[:n])
	}
	if err == io.EOF {
		if v.n != v.size {
			return n, fmt.Errorf("%w: blob %s: read %d of %d bytes", image.ErrCorrupt, v.name, v.n, v.size)
		}
		if v.h != nil {
			if got := digest.NewDigest(v.want.Algorithm(), v.h); got != v.want {
				return n, fmt.Errorf("%w: blob %s hashes to %s", image.ErrDigestMismatch, v.want, got)
			}
		}
	}
	return n, err
}

func (v *verifier) Close() error { return v.r.Close() }

// Source is an opened archive or layout. Close it when done.
type Source struct {
	Format string // "docker-archive", "oci-archive" or "oci"
	Images []Image
	fs     files
	tmp    string
}

// Close releases the archive and removes any temporary copy.
func (s *Source) Close() error {
	err := s.fs.close()
	if s.tmp != "" {
		os.Remove(s.tmp)
	}
	return err
}

// Open reads the archive file at p: a docker save archive (old layout or
// the OCI one of docker 25+) or an oci-archive, uncompressed or wholly
// compressed with gzip or zstd (then decompressed into tmpdir first).
func Open(p, tmpdir string) (*Source, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	s := &Source{}
	head := make([]byte, 6)
	n, _ := io.ReadFull(f, head)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("open archive: %w", err)
	}
	if looksCompressed(head[:n]) {
		plain, err := decompressToTemp(f, tmpdir)
		f.Close()
		if err != nil {
			return nil, err
		}
		f, s.tmp = plain, plain.Name()
	}
	idx, err := indexTar(f)
	if err != nil {
		f.Close()
		if s.tmp != "" {
			os.Remove(s.tmp)
		}
		return nil, err
	}
	s.fs = idx
	if err := s.read(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// OpenLayout reads the OCI image layout directory dir.
func OpenLayout(dir string) (*Source, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open layout: %w", err)
	}
	s := &Source{fs: dirFiles{root}}
	if !s.fs.exists(v1.ImageLayoutFile) {
		s.Close()
		return nil, fmt.Errorf("%w: %s is not an OCI image layout (no oci-layout file)", image.ErrUnsupported, dir)
	}
	if err := s.readOCI("oci"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func looksCompressed(head []byte) bool {
	return len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b ||
		len(head) >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd
}

func decompressToTemp(f *os.File, tmpdir string) (*os.File, error) {
	r, _, err := layer.Decompress(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	defer r.Close()
	tmp, err := os.CreateTemp(tmpdir, "archive-*.tar")
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("%w: decompress archive: %w", image.ErrCorrupt, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("open archive: %w", err)
	}
	return tmp, nil
}

func (s *Source) read() error {
	switch {
	case s.fs.exists("manifest.json"):
		return s.readDocker()
	case s.fs.exists(v1.ImageLayoutFile) && s.fs.exists(v1.ImageIndexFile):
		return s.readOCI("oci-archive")
	}
	return fmt.Errorf("%w: not a docker-archive (no manifest.json) nor an oci-archive (no oci-layout and index.json)", image.ErrUnsupported)
}

// dockerManifest is one entry of a docker save archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func (s *Source) readDocker() error {
	s.Format = "docker-archive"
	b, err := readSmall(s.fs, "manifest.json")
	if err != nil {
		return err
	}
	var ms []dockerManifest
	if err := json.Unmarshal(b, &ms); err != nil {
		return fmt.Errorf("%w: manifest.json: %w", image.ErrCorrupt, err)
	}
	if len(ms) == 0 {
		return fmt.Errorf("%w: manifest.json lists no image", image.ErrCorrupt)
	}
	for _, m := range ms {
		cfg, err := readSmall(s.fs, m.Config)
		if err != nil {
			return err
		}
		d := digest.FromBytes(cfg)
		// Both layouts name the config by its digest: "<hex>.json" (old)
		// or "blobs/sha256/<hex>" (OCI).
		if want, ok := digestFromMember(m.Config); ok && want != d {
			return fmt.Errorf("%w: config %s hashes to %s", image.ErrDigestMismatch, m.Config, d)
		}
		img := Image{Config: cfg, ConfigDigest: d, Names: m.RepoTags}
		for _, l := range m.Layers {
			want, _ := digestFromMember(l)
			if !strings.HasPrefix(cleanMember(l), "blobs/") {
				want = "" // old layout: <v1 id>/layer.tar, named by a legacy ID
			}
			name := l
			img.Layers = append(img.Layers, Blob{
				Digest: want, Size: -1, Name: name,
				open: func() (io.ReadCloser, int64, error) { return s.fs.open(name) },
			})
		}
		s.Images = append(s.Images, img)
	}
	return nil
}

// digestFromMember reads the digest a member's name gives:
// "blobs/sha256/<hex>" or "<hex>.json".
func digestFromMember(name string) (digest.Digest, bool) {
	name = cleanMember(name)
	if strings.HasPrefix(name, "blobs/") {
		parts := strings.Split(name, "/")
		if len(parts) == 3 {
			d := digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[2])
			return d, d.Validate() == nil
		}
		return "", false
	}
	base := strings.TrimSuffix(path.Base(name), ".json")
	d := digest.NewDigestFromEncoded(digest.SHA256, base)
	return d, d.Validate() == nil
}

func blobPath(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// readDescriptor reads the blob d names, checking size and digest.
func (s *Source) readDescriptor(d v1.Descriptor) ([]byte, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: descriptor: %w", image.ErrCorrupt, err)
	}
	b, err := readSmall(s.fs, blobPath(d.Digest))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("%w: blob %s is %d bytes, its descriptor says %d", image.ErrCorrupt, d.Digest, len(b), d.Size)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return nil, fmt.Errorf("%w: blob %s hashes to %s", image.ErrDigestMismatch, d.Digest, got)
	}
	return b, nil
}

func (s *Source) readOCI(format string) error {
	s.Format = format
	b, err := readSmall(s.fs, v1.ImageLayoutFile)
	if err != nil {
		return err
	}
	var lay v1.ImageLayout
	if err := json.Unmarshal(b, &lay); err != nil || lay.Version == "" {
		return fmt.Errorf("%w: oci-layout: %v", image.ErrCorrupt, err)
	}
	b, err = readSmall(s.fs, v1.ImageIndexFile)
	if err != nil {
		return err
	}
	var idx v1.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("%w: index.json: %w", image.ErrCorrupt, err)
	}
	byDigest := map[digest.Digest]int{}
	for _, d := range idx.Manifests {
		m, err := s.resolveManifest(d, 0)
		if err != nil {
			return err
		}
		img, err := s.ociImage(m)
		if err != nil {
			return err
		}
		if name := refName(d.Annotations); name != "" {
			img.Names = append(img.Names, name)
		}
		if i, ok := byDigest[img.ConfigDigest]; ok {
			s.Images[i].Names = append(s.Images[i].Names, img.Names...)
			continue
		}
		byDigest[img.ConfigDigest] = len(s.Images)
		s.Images = append(s.Images, img)
	}
	if len(s.Images) == 0 {
		return fmt.Errorf("%w: index.json lists no image", image.ErrCorrupt)
	}
	return nil
}

// refName turns an index entry's annotations into NAME:TAG, "" when they
// give only a tag (umoci's "latest") or nothing.
func refName(a map[string]string) string {
	for _, k := range []string{AnnotationContainerdName, v1.AnnotationRefName} {
		if v := a[k]; v != "" {
			if r, err := image.ParseReference(v); err == nil && (strings.ContainsAny(v, ":/") || k == AnnotationContainerdName) {
				return r.String()
			}
		}
	}
	return ""
}

// resolveManifest follows indexes down to the image manifest for this
// machine's platform.
func (s *Source) resolveManifest(d v1.Descriptor, depth int) (v1.Manifest, error) {
	if depth > 4 {
		return v1.Manifest{}, fmt.Errorf("%w: indexes nested too deep", image.ErrCorrupt)
	}
	b, err := s.readDescriptor(d)
	if err != nil {
		return v1.Manifest{}, err
	}
	switch d.MediaType {
	case v1.MediaTypeImageManifest, DockerManifest:
		var m v1.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			return m, fmt.Errorf("%w: manifest %s: %w", image.ErrCorrupt, d.Digest, err)
		}
		return m, nil
	case v1.MediaTypeImageIndex, DockerManifestList:
		var idx v1.Index
		if err := json.Unmarshal(b, &idx); err != nil {
			return v1.Manifest{}, fmt.Errorf("%w: index %s: %w", image.ErrCorrupt, d.Digest, err)
		}
		var pick *v1.Descriptor
		for i, m := range idx.Manifests {
			if m.Platform == nil || m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH {
				pick = &idx.Manifests[i]
				break
			}
		}
		if pick == nil {
			return v1.Manifest{}, fmt.Errorf("%w: index %s has no manifest for linux/%s", image.ErrUnsupported, d.Digest, runtime.GOARCH)
		}
		return s.resolveManifest(*pick, depth+1)
	}
	return v1.Manifest{}, fmt.Errorf("%w manifest media type %q", image.ErrUnsupported, d.MediaType)
}

func (s *Source) ociImage(m v1.Manifest) (Image, error) {
	switch m.Config.MediaType {
	case v1.MediaTypeImageConfig, DockerConfig:
	default:
		return Image{}, fmt.Errorf("%w config media type %q (not a container image)", image.ErrUnsupported, m.Config.MediaType)
	}
	cfg, err := s.readDescriptor(m.Config)
	if err != nil {
		return Image{}, err
	}
	img := Image{Config: cfg, ConfigDigest: m.Config.Digest}
	for _, l := range m.Layers {
		if !layerMediaType(l.MediaType) {
			return Image{}, fmt.Errorf("%w layer media type %q", image.ErrUnsupported, l.MediaType)
		}
		if err := l.Digest.Validate(); err != nil {
			return Image{}, fmt.Errorf("%w: layer descriptor: %w", image.ErrCorrupt, err)
		}
		p := blobPath(l.Digest)
		img.Layers = append(img.Layers, Blob{
			Digest: l.Digest, Size: l.Size, MediaType: l.MediaType, Name: l.Digest.String(),
			open: func() (io.ReadCloser, int64, error) { return s.fs.open(p) },
		})
	}
	return img, nil
}

func layerMediaType(t string) bool {
	switch t {
	case v1.MediaTypeImageLayer, v1.MediaTypeImageLayerGzip, v1.MediaTypeImageLayerZstd,
		v1.MediaTypeImageLayerNonDistributable, v1.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck
		v1.MediaTypeImageLayerNonDistributableZstd, //nolint:staticcheck
		DockerLayer, DockerLayerGzip:
		return true
	}
	return false
}
