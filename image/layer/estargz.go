package layer

import (
	"fmt"
	"io"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// eStargz (containerd's stargz-snapshotter, "extended seekable tar.gz")
// is a gzip layer made of one gzip member per file (and per chunk of a
// big file), ending with a TOC entry, stargz.index.json, that lists every
// file with the offset of its chunks in the blob, and a footer that says
// where the TOC starts. Every gzip reader reads it as the ordinary tar it
// is; a lazy reader fetches the footer and the TOC by HTTP Range and then
// only the chunks a container reads. The format code is the standalone
// estargz module's, not ours.
//
// The tar inside is not the layer's original tar: entries are reordered
// (prioritized files first, then the prefetch landmark), the landmark
// file and the TOC entry are added. So an eStargz blob has its own
// diff_id, and an image pushed or saved with it gets a new config.

// Annotations of an eStargz layer's descriptor in a manifest.
const (
	// AnnotationTOCDigest is the digest of the uncompressed TOC JSON; a
	// lazy pull checks the TOC it fetched against it.
	AnnotationTOCDigest = estargz.TOCJSONDigestAnnotation
	// AnnotationUncompressedSize is the size of the uncompressed blob.
	AnnotationUncompressedSize = estargz.StoreUncompressedSizeAnnotation
)

// estargzWorkers fixes how Build splits the tar, and so the chunk
// boundaries: the same tar gives the same blob on every machine.
const estargzWorkers = 4

// EstargzBlob is what BuildEstargz wrote.
type EstargzBlob struct {
	Digest           digest.Digest // of the blob
	Size             int64         // of the blob
	DiffID           digest.Digest // of the uncompressed blob (a new tar)
	TOCDigest        digest.Digest
	UncompressedSize int64
}

// Annotations are the descriptor annotations of the blob.
func (b EstargzBlob) Annotations() map[string]string {
	return map[string]string{
		AnnotationTOCDigest:        b.TOCDigest.String(),
		AnnotationUncompressedSize: strconv.FormatInt(b.UncompressedSize, 10),
	}
}

// BuildEstargz writes the eStargz form of the uncompressed layer tar to
// w. prioritized names files (as in the tar, e.g. "bin/sh") to put
// before the prefetch landmark; names the tar lacks are skipped.
func BuildEstargz(tar *io.SectionReader, w io.Writer, prioritized []string) (EstargzBlob, error) {
	var missed []string
	opts := []estargz.Option{
		estargz.WithCompressionLevel(gzip.DefaultCompression),
		estargz.WithParallelism(estargzWorkers),
	}
	if len(prioritized) > 0 {
		opts = append(opts, estargz.WithPrioritizedFiles(prioritized), estargz.WithAllowPrioritizeNotFound(&missed))
	}
	blob, err := estargz.Build(tar, opts...)
	if err != nil {
		return EstargzBlob{}, fmt.Errorf("estargz: %w", err)
	}
	defer blob.Close()
	h := digest.SHA256.Digester()
	n, err := io.Copy(io.MultiWriter(w, h.Hash()), blob)
	if err != nil {
		return EstargzBlob{}, fmt.Errorf("estargz: %w", err)
	}
	size, err := blob.UncompressedSize()
	if err != nil {
		return EstargzBlob{}, fmt.Errorf("estargz: %w", err)
	}
	return EstargzBlob{Digest: h.Digest(), Size: n, DiffID: blob.DiffID(), TOCDigest: blob.TOCDigest(), UncompressedSize: size}, nil
}
