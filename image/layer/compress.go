package layer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/unionmount/unionmount/image"
)

// Compression is how a layer blob is compressed.
type Compression int

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
	// Estargz is gzip laid out as eStargz (see estargz.go): a valid gzip
	// layer for every tool, which a lazy pull reads file by file. It is
	// not a stream: BuildEstargz makes it from a whole tar.
	Estargz
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case Estargz:
		return "estargz"
	}
	return "none"
}

// ParseCompression reads "gzip", "zstd", "estargz" or "none".
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "gzip":
		return Gzip, nil
	case "zstd":
		return Zstd, nil
	case "estargz":
		return Estargz, nil
	case "none", "":
		return Uncompressed, nil
	}
	return 0, fmt.Errorf("%w compression %q: use gzip, zstd, estargz or none", image.ErrUnsupported, s)
}

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// Decompress returns the uncompressed stream of r, detecting gzip and zstd
// by their magic numbers; anything else is taken as an uncompressed tar.
// bzip2 and xz are refused with ErrUnsupported.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(6)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, 0, fmt.Errorf("%w: read: %w", image.ErrCorrupt, err)
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: gzip: %w", image.ErrCorrupt, err)
		}
		return zr, Gzip, nil
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, 0, fmt.Errorf("%w: zstd: %w", image.ErrCorrupt, err)
		}
		return zr.IOReadCloser(), Zstd, nil
	case bytes.HasPrefix(head, magicBzip2):
		return nil, 0, fmt.Errorf("%w: bzip2-compressed layer: decompress it first (bunzip2)", image.ErrUnsupported)
	case bytes.HasPrefix(head, magicXz):
		return nil, 0, fmt.Errorf("%w: xz-compressed layer: decompress it first (unxz)", image.ErrUnsupported)
	}
	return io.NopCloser(br), Uncompressed, nil
}

// Compress returns a writer that compresses into w with c. Close it to
// flush; closing does not close w. Estargz is refused: use BuildEstargz.
func Compress(w io.Writer, c Compression) (io.WriteCloser, error) {
	switch c {
	case Estargz:
		return nil, fmt.Errorf("%w: estargz is made from a whole tar (BuildEstargz), not a stream", image.ErrUnsupported)
	case Gzip:
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	case Zstd:
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(2))
	}
	return nopWriteCloser{w}, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
