package layer

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/unionmount/unionmount/image"
)

// FuzzDecompress feeds arbitrary bytes, and gzip and zstd streams, to the
// layer decompressor: it must never panic, and Decompress must fail only
// with the error kinds it documents.
func FuzzDecompress(f *testing.F) {
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(bytes.Repeat([]byte("a"), 1<<16))
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(bytes.Repeat([]byte("b"), 1<<16))
	zw.Close()
	for _, s := range [][]byte{nil, {}, gz.Bytes(), zs.Bytes(), gz.Bytes()[:20], zs.Bytes()[:10],
		[]byte("BZh91AY"), {0xfd, '7', 'z', 'X', 'Z', 0}, []byte("plain tar bytes")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc, _, err := Decompress(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, image.ErrCorrupt) && !errors.Is(err, image.ErrUnsupported) {
				t.Fatalf("Decompress: error %v is neither ErrCorrupt nor ErrUnsupported", err)
			}
			return
		}
		defer rc.Close()
		// A bomb is read in bounded pieces; the stream must end or fail
		// without a panic, whatever it claims.
		io.Copy(io.Discard, io.LimitReader(rc, 8<<20))
	})
}
