package store

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/archive"
	"github.com/unionmount/unionmount/image/layer"
)

// transaction remembers the layers an operation created, so that a
// failure removes them again and leaves the store as it was.
type transaction struct {
	s       *Store
	created []digest.Digest // layers
	images  []digest.Digest
	lazy    []digest.Digest // lazy layer records
}

func (t *transaction) rollback() {
	for _, id := range t.images {
		t.s.discard(t.s.imageDir(id))
	}
	for i := len(t.created) - 1; i >= 0; i-- {
		t.s.discard(t.s.layerDir(t.created[i]))
	}
	for _, id := range t.lazy {
		t.s.discard(t.s.lazyDir(id))
	}
}

// Import stores the rootfs tarball r (uncompressed, gzip or zstd) as a
// one-layer image named names. source says where it came from, for the
// history.
func (s *Store) Import(r io.Reader, source string, names []string) (*Image, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	dr, _, err := layer.Decompress(s.progress(r, "importing "+source, -1))
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", source, err)
	}
	defer dr.Close()
	now := time.Now().UTC()
	createdBy := "unionctl import " + source
	tx := &transaction{s: s}
	l, created, err := s.newLayer(dr, "", "", Layer{Created: now, CreatedBy: createdBy})
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", source, err)
	}
	if created {
		tx.created = append(tx.created, l.ID)
	}
	cfg := v1.Image{
		Created:  &now,
		Platform: v1.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{l.DiffID}},
		History:  []v1.History{{Created: &now, CreatedBy: createdBy}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		tx.rollback()
		return nil, err
	}
	img, err := s.putImage(b, []digest.Digest{l.ID}, names)
	if err != nil {
		tx.rollback()
		return nil, fmt.Errorf("import %s: %w", source, err)
	}
	return img, nil
}

// Loaded is an image Load stored, with the names the archive gave it.
type Loaded struct {
	*Image
	ArchiveNames []string
}

// LoadFile loads every image of the archive file p (docker-archive or
// oci-archive, perhaps wholly compressed).
func (s *Store) LoadFile(p string) ([]Loaded, error) {
	return s.loadWith(func(tmp string) (*archive.Source, error) { return archive.Open(p, tmp) })
}

// LoadLayout loads every image of the OCI image layout dir.
func (s *Store) LoadLayout(dir string) ([]Loaded, error) {
	return s.loadWith(func(string) (*archive.Source, error) { return archive.OpenLayout(dir) })
}

// LoadStream loads every image of an archive read from r (it is copied
// to the store's staging area first: archives are read in place).
func (s *Store) LoadStream(r io.Reader) ([]Loaded, error) {
	return s.loadWith(func(tmp string) (*archive.Source, error) {
		f, err := os.CreateTemp(tmp, "stream-*.tar")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if _, err := io.Copy(f, s.progress(r, "reading archive", -1)); err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		return archive.Open(f.Name(), tmp)
	})
}

// loadWith opens an archive under the lock (its temporary files live in
// tmp/, which the lock owns) and loads it.
func (s *Store) loadWith(open func(tmp string) (*archive.Source, error)) ([]Loaded, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	tmp, err := s.tempDir("load-")
	if err != nil {
		return nil, err
	}
	defer removeAll(tmp)
	src, err := open(tmp)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return s.loadLocked(src)
}

// loadLocked stores every image of an opened archive or layout, verifying
// blob digests and sizes, layer diff_ids and config digests. Layers the
// store has already are not read. Image records are written only once
// every layer is in, so on error nothing is stored.
func (s *Store) loadLocked(src *archive.Source) ([]Loaded, error) {
	tx := &transaction{s: s}
	type prepared struct {
		config []byte
		chain  []digest.Digest
		names  []string
	}
	var ready []prepared
	for _, ai := range src.Images {
		chain, names, err := s.loadLayers(tx, ai)
		if err != nil {
			tx.rollback()
			return nil, err
		}
		ready = append(ready, prepared{ai.Config, chain, names})
	}
	var out []Loaded
	for _, p := range ready {
		existed := s.hasImage(digest.FromBytes(p.config))
		img, err := s.putImage(p.config, p.chain, p.names)
		if err != nil {
			tx.rollback()
			return nil, err
		}
		if !existed {
			tx.images = append(tx.images, img.ID)
		}
		out = append(out, Loaded{Image: img, ArchiveNames: p.names})
	}
	return out, nil
}

// loadLayers stores the layers of one archive image the store lacks and
// returns its chain IDs and names.
func (s *Store) loadLayers(tx *transaction, ai archive.Image) ([]digest.Digest, []string, error) {
	var cfg v1.Image
	if err := json.Unmarshal(ai.Config, &cfg); err != nil {
		return nil, nil, fmt.Errorf("%w: image config %s: %w", image.ErrCorrupt, ai.ConfigDigest, err)
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return nil, nil, fmt.Errorf("%w: image %s is for %s, not linux", image.ErrUnsupported, short(ai.ConfigDigest), cfg.OS)
	}
	diffIDs := cfg.RootFS.DiffIDs
	if len(diffIDs) != len(ai.Layers) {
		return nil, nil, fmt.Errorf("%w: image %s has %d layers but its config lists %d diff_ids",
			image.ErrCorrupt, short(ai.ConfigDigest), len(ai.Layers), len(diffIDs))
	}
	for _, d := range diffIDs {
		if err := d.Validate(); err != nil {
			return nil, nil, fmt.Errorf("%w: image config diff_id %q: %w", image.ErrCorrupt, d, err)
		}
	}
	var hist []v1.History
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			hist = append(hist, h)
		}
	}
	chain := ChainIDs(diffIDs)
	for i, b := range ai.Layers {
		if s.hasLayer(chain[i]) {
			continue
		}
		var parent digest.Digest
		if i > 0 {
			parent = chain[i-1]
		}
		meta := Layer{}
		if i < len(hist) {
			meta.CreatedBy, meta.Comment = hist[i].CreatedBy, hist[i].Comment
			if hist[i].Created != nil {
				meta.Created = hist[i].Created.UTC()
			}
		}
		what := fmt.Sprintf("loading layer %d/%d %s", i+1, len(ai.Layers), short(diffIDs[i]))
		l, created, err := s.loadLayer(b, parent, diffIDs[i], meta, what)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d/%d (%s): %w", i+1, len(ai.Layers), b.Name, err)
		}
		if created {
			tx.created = append(tx.created, l.ID)
		}
	}
	var names []string
	for _, n := range ai.Names {
		if r, err := image.ParseReference(n); err == nil {
			names = append(names, r.String())
		}
	}
	return chain, names, nil
}

func short(d digest.Digest) string {
	if e := d.Encoded(); len(e) > 12 {
		return e[:12]
	}
	return d.String()
}

func (s *Store) loadLayer(b archive.Blob, parent, diffID digest.Digest, meta Layer, what string) (*Layer, bool, error) {
	raw, err := b.Open()
	if err != nil {
		return nil, false, err
	}
	defer raw.Close()
	dr, _, err := layer.Decompress(s.progress(raw, what, b.Size))
	if err != nil {
		return nil, false, err
	}
	defer dr.Close()
	l, created, err := s.newLayer(dr, parent, diffID, meta)
	if err != nil {
		return nil, false, err
	}
	// The blob's digest is checked at its end: read what the
	// decompressor left (padding, a second gzip member).
	if _, err := io.Copy(io.Discard, raw); err != nil {
		if created {
			s.discard(s.layerDir(l.ID))
		}
		return nil, false, err
	}
	return l, created, nil
}

// Save formats.
const (
	FormatDockerArchive = "docker-archive"
	FormatOCIArchive    = "oci-archive"
	FormatOCILayout     = "oci"
)

// SaveOptions configures Save.
type SaveOptions struct {
	Format      string            // FormatDockerArchive, FormatOCIArchive or FormatOCILayout
	Compression layer.Compression // of layers in OCI formats; docker-archive layers are never compressed
	// Names, when set, replaces the names written for each image (by
	// image ID): the names the user asked for.
	Names map[digest.Digest][]string
}

// Save writes images to w (archives) or to the directory dir (OCI layout).
// Layers are reassembled to their exact original tar; the archive then
// names every image by its stored ID. It returns the IDs written, which
// differ from the stored ones only for images with a layer that had to be
// written afresh (see Layer.TarSplit).
func (s *Store) Save(imgs []*Image, w io.Writer, dir string, opts SaveOptions) ([]digest.Digest, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	work, err := s.tempDir("save-")
	if err != nil {
		return nil, err
	}
	defer removeAll(work)
	comp := opts.Compression
	if opts.Format == FormatDockerArchive {
		comp = layer.Uncompressed
	}
	blobs := map[digest.Digest]archive.SaveLayer{}
	var out []archive.SaveImage
	var ids []digest.Digest
	for _, img := range imgs {
		_, config, err := s.Config(img)
		if err != nil {
			return nil, err
		}
		if err := s.requireComplete(img, "save"); err != nil {
			return nil, err
		}
		si := archive.SaveImage{Config: config, Names: img.Names}
		if n, ok := opts.Names[img.ID]; ok {
			si.Names = n
		}
		var diffIDs []digest.Digest
		changed := false
		for i, id := range img.Layers {
			sl, ok := blobs[id]
			if !ok {
				l, err := s.Layer(id)
				if err != nil {
					return nil, err
				}
				what := fmt.Sprintf("saving layer %d/%d %s", i+1, len(img.Layers), short(l.DiffID))
				sl, err = s.layerBlob(l, work, comp, what)
				if err != nil {
					return nil, err
				}
				blobs[id] = sl
			}
			si.Layers = append(si.Layers, sl)
			diffIDs = append(diffIDs, sl.DiffID)
			if l, err := s.Layer(id); err == nil && l.DiffID != sl.DiffID {
				changed = true
			}
		}
		if changed {
			if si.Config, err = replaceDiffIDs(config, diffIDs); err != nil {
				return nil, err
			}
		}
		ids = append(ids, si.ConfigDigest())
		out = append(out, si)
	}
	switch opts.Format {
	case FormatDockerArchive:
		err = archive.WriteDockerArchive(w, out)
	case FormatOCIArchive:
		err = archive.WriteOCIArchive(w, out)
	case FormatOCILayout:
		err = archive.WriteOCILayout(dir, out)
	default:
		err = fmt.Errorf("%w save format %q: use oci-archive, docker-archive or --layout", image.ErrUnsupported, opts.Format)
	}
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// layerBlob writes the layer's tar, compressed with c, to a file in work.
func (s *Store) layerBlob(l *Layer, work string, c layer.Compression, what string) (archive.SaveLayer, error) {
	if c == layer.Estargz {
		path, eb, err := s.estargzBlob(l, work, what)
		if err != nil {
			return archive.SaveLayer{}, fmt.Errorf("save: %w", err)
		}
		return archive.SaveLayer{Path: path, Digest: eb.Digest, Size: eb.Size, MediaType: v1.MediaTypeImageLayerGzip,
			DiffID: eb.DiffID, Annotations: eb.Annotations()}, nil
	}
	f, err := os.CreateTemp(work, "blob-")
	if err != nil {
		return archive.SaveLayer{}, fmt.Errorf("save: %w", err)
	}
	defer f.Close()
	bw := &countWriter{w: f}
	h := digest.SHA256.Digester()
	zw, err := layer.Compress(io.MultiWriter(bw, h.Hash()), c)
	if err != nil {
		return archive.SaveLayer{}, err
	}
	var dst io.Writer = zw
	if s.opts.Progress != nil {
		dst = &progressWriter{w: zw, what: what, total: l.TarSize, p: s.opts.Progress}
	}
	diffID, _, err := s.LayerTar(l, dst)
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return archive.SaveLayer{}, fmt.Errorf("save: %w", err)
	}
	mt := v1.MediaTypeImageLayer
	switch c {
	case layer.Gzip:
		mt = v1.MediaTypeImageLayerGzip
	case layer.Zstd:
		mt = v1.MediaTypeImageLayerZstd
	}
	return archive.SaveLayer{Path: f.Name(), Digest: h.Digest(), Size: bw.n, MediaType: mt, DiffID: diffID}, nil
}

type progressWriter struct {
	w     io.Writer
	what  string
	done  int64
	total int64
	p     Progress
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	p.p(p.what, p.done, p.total)
	return n, err
}

// estargzBlob writes the eStargz form of l to a file in work (see
// layer.BuildEstargz): the layer's tar goes to a file first, since the
// builder reads it twice.
func (s *Store) estargzBlob(l *Layer, work, what string) (string, layer.EstargzBlob, error) {
	t, err := os.CreateTemp(work, "tar-")
	if err != nil {
		return "", layer.EstargzBlob{}, err
	}
	defer func() { t.Close(); os.Remove(t.Name()) }()
	var dst io.Writer = t
	if s.opts.Progress != nil {
		dst = &progressWriter{w: t, what: what, total: l.TarSize, p: s.opts.Progress}
	}
	_, n, err := s.LayerTar(l, dst)
	if err != nil {
		return "", layer.EstargzBlob{}, fmt.Errorf("layer %s: %w", short(l.ID), err)
	}
	f, err := os.CreateTemp(work, "blob-")
	if err != nil {
		return "", layer.EstargzBlob{}, err
	}
	defer f.Close()
	eb, err := layer.BuildEstargz(io.NewSectionReader(t, 0, n), f, nil)
	if err != nil {
		return "", layer.EstargzBlob{}, fmt.Errorf("layer %s: %w", short(l.ID), err)
	}
	return f.Name(), eb, nil
}

// replaceDiffIDs returns config with rootfs.diff_ids replaced, every
// other field kept as it was.
func replaceDiffIDs(config []byte, diffIDs []digest.Digest) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(config, &m); err != nil {
		return nil, fmt.Errorf("%w: config: %w", image.ErrCorrupt, err)
	}
	rootfs, err := json.Marshal(v1.RootFS{Type: "layers", DiffIDs: diffIDs})
	if err != nil {
		return nil, err
	}
	m["rootfs"] = rootfs
	return json.Marshal(m)
}

// SaveToFile runs Save into a file that appears only when complete.
func (s *Store) SaveToFile(imgs []*Image, path string, opts SaveOptions) ([]digest.Digest, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".partial-")
	if err != nil {
		return nil, fmt.Errorf("save: %w", err)
	}
	ids, err := s.Save(imgs, f, "", opts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), abs)
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	return ids, nil
}
