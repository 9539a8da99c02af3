package layer

// Tar-split records: the exact bytes of a layer tar, back from the unpacked
// layer directory.
//
// A layer is stored unpacked, but an image's config names each layer by the
// sha256 of its tar (the diff_id). To save an image unchanged, unionctl
// must produce those exact bytes again. While the applier reads a tar, the
// recorder below keeps every byte that is not the content of a regular
// file written to disk (headers, PAX records, padding, the end blocks, the
// content of entries that were not written as files); the content of
// written files is replaced by a reference (path, size). Reassemble
// interleaves the two again. containers/storage keeps the same kind of
// record (vbatts/tar-split); this one is smaller and only ever read back by
// unionctl.
//
// Format (gzip-compressed): the magic line "unionctl-tarsplit 1\n", then
// records, each a tag byte:
//
//	'r' uvarint(n) n bytes        raw bytes of the tar stream
//	'f' uvarint(n) n bytes path   followed by uvarint(size): the next size
//	                              bytes of the stream are the content of
//	                              the regular file at path in the layer
//	'e'                           end of the stream
//
// A tar whose raw content bytes are not what the tar reader returns (GNU or
// PAX sparse files) cannot be recorded this way; such a layer has no
// record and save writes a fresh tar for it instead.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"

	"github.com/unionmount/unionmount/image"
)

const splitMagic = "unionctl-tarsplit 1\n"

// recorder sits between the (decompressed) layer stream and the tar
// reader. In the header phase it copies every byte read into the record;
// in the content phase it only counts them, and the applier says which
// file they went to.
type recorder struct {
	r io.Reader

	out   *bufio.Writer // nil: count only
	zw    *gzip.Writer
	raw   []byte // raw bytes not yet written as a record
	valid bool   // false once a byte went unaccounted (sparse file)

	header  bool  // in the header phase (tar.Reader.Next)
	content int64 // content-phase bytes read since the last file record

	// The bytes read in the current header phase, to tell the end of an
	// archive (two zero blocks) from a stream that just stops.
	headerN    int64
	headerTail [1024]byte
}

func newRecorder(r io.Reader, w io.Writer) *recorder {
	c := &recorder{r: r, header: true, valid: w != nil}
	if w != nil {
		c.zw = gzip.NewWriter(w)
		c.out = bufio.NewWriterSize(c.zw, 64<<10)
		c.out.WriteString(splitMagic)
	}
	return c
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.header {
		c.headerN += int64(n)
		if n >= len(c.headerTail) {
			copy(c.headerTail[:], p[n-len(c.headerTail):n])
		} else {
			copy(c.headerTail[:], c.headerTail[n:])
			copy(c.headerTail[len(c.headerTail)-n:], p[:n])
		}
		if c.valid {
			c.raw = append(c.raw, p[:n]...)
			if len(c.raw) >= 64<<10 {
				c.flushRaw()
			}
		}
	} else {
		c.content += int64(n)
	}
	return n, err
}

// beginHeader is called before tar.Reader.Next. Content bytes read since
// the last file record that no file claimed make the record invalid.
func (c *recorder) beginHeader() {
	if c.content != 0 {
		c.invalidate()
	}
	c.header = true
	c.headerN = 0
	c.headerTail = [1024]byte{}
}

// sawEnd reports whether the header phase that just ended read the
// end-of-archive marker: at least two blocks, the last two all zeros. Go's
// tar reader also reports io.EOF for a stream that stops between entries.
func (c *recorder) sawEnd() bool {
	if c.headerN < int64(len(c.headerTail)) {
		return false
	}
	for _, b := range c.headerTail {
		if b != 0 {
			return false
		}
	}
	return true
}

// beginContent is called after tar.Reader.Next returned an entry.
func (c *recorder) beginContent() {
	c.header = false
	c.content = 0
}

// file records that the content bytes read since beginContent are the n
// bytes of the regular file at path.
func (c *recorder) file(path string, n int64) {
	if !c.valid {
		return
	}
	if c.content != n {
		c.invalidate() // sparse: the tar reader returned more than it read
		return
	}
	c.content = 0
	c.flushRaw()
	c.out.WriteByte('f')
	c.writeBytes([]byte(path))
	c.writeUvarint(uint64(n))
}

func (c *recorder) invalidate() {
	c.valid = false
	c.raw = nil
}

func (c *recorder) flushRaw() {
	if len(c.raw) == 0 || !c.valid {
		return
	}
	c.out.WriteByte('r')
	c.writeBytes(c.raw)
	c.raw = c.raw[:0]
}

func (c *recorder) writeUvarint(v uint64) {
	var b [binary.MaxVarintLen64]byte
	c.out.Write(b[:binary.PutUvarint(b[:], v)])
}

func (c *recorder) writeBytes(b []byte) {
	c.writeUvarint(uint64(len(b)))
	c.out.Write(b)
}

// finish ends the record. It reports whether the record is complete.
func (c *recorder) finish() (bool, error) {
	if c.out == nil {
		return false, nil
	}
	if c.content != 0 {
		c.invalidate()
	}
	if c.valid {
		c.flushRaw()
		c.out.WriteByte('e')
	}
	if err := c.out.Flush(); err != nil {
		return false, fmt.Errorf("write tar-split record: %w", err)
	}
	if err := c.zw.Close(); err != nil {
		return false, fmt.Errorf("write tar-split record: %w", err)
	}
	return c.valid, nil
}

// Reassemble writes to w the tar stream recorded in split, taking file
// contents from the layer directory dir. The caller checks the result's
// digest against the layer's diff_id.
func Reassemble(dir string, split io.Reader, w io.Writer) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("reassemble layer: %w", err)
	}
	defer root.Close()
	zr, err := gzip.NewReader(split)
	if err != nil {
		return fmt.Errorf("%w: tar-split record: %w", image.ErrCorrupt, err)
	}
	br := bufio.NewReaderSize(zr, 64<<10)
	magic := make([]byte, len(splitMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != splitMagic {
		return fmt.Errorf("%w: tar-split record: bad magic", image.ErrCorrupt)
	}
	bad := func(err error) error {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: tar-split record: %w", image.ErrCorrupt, err)
	}
	for {
		tag, err := br.ReadByte()
		if err != nil {
			return bad(err)
		}
		switch tag {
		case 'e':
			return nil
		case 'r':
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return bad(err)
			}
			if _, err := io.CopyN(w, br, int64(n)); err != nil {
				return bad(err)
			}
		case 'f':
			n, err := binary.ReadUvarint(br)
			if err != nil || n > 1<<20 {
				return bad(fmt.Errorf("path length: %v", err))
			}
			p := make([]byte, n)
			if _, err := io.ReadFull(br, p); err != nil {
				return bad(err)
			}
			size, err := binary.ReadUvarint(br)
			if err != nil {
				return bad(err)
			}
			if err := copyFile(root, string(p), int64(size), w); err != nil {
				return err
			}
		default:
			return bad(fmt.Errorf("unknown record %q", tag))
		}
	}
}

func copyFile(root *os.Root, name string, size int64, w io.Writer) error {
	fi, err := root.Lstat(name)
	if err != nil {
		return fmt.Errorf("reassemble layer: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != size {
		return fmt.Errorf("%w: reassemble layer: %q changed since it was unpacked", image.ErrCorrupt, name)
	}
	f, err := root.Open(name)
	if err != nil {
		return fmt.Errorf("reassemble layer: %w", err)
	}
	defer f.Close()
	if _, err := io.CopyN(w, f, size); err != nil {
		return fmt.Errorf("reassemble layer: read %q: %w", name, err)
	}
	return nil
}
