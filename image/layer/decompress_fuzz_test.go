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
// layer decompressor: it must never panic, never hand out more than the
// reader asks for (a bomb is read in bounded pieces), and fail only with
// the error kinds Decompress documents or a read error of the stream.
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
		const limit = 8 << 20
		n, _ := io.Copy(io.Discard, io.LimitReader(rc, limit))
		if n > limit {
			t.Fatalf("read %d bytes through a %d-byte limit", n, limit)
		}
	})
}
