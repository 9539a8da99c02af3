package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/unionmount/unionmount/image"
)

// files is read access to the members of an archive or a layout directory.
type files interface {
	// open returns the member name and its size.
	open(name string) (io.ReadCloser, int64, error)
	exists(name string) bool
	close() error
}

// tarFiles reads members of an uncompressed tar file in place: one pass
// records where each member's content starts, then members are read with
// ReadAt, several at a time if need be.
type tarFiles struct {
	f       *os.File
	entries map[string]tarEntry
}

type tarEntry struct {
	off, size int64
	link      string // symlink target, resolved relative to the member's directory
	hardlink  string
}

// posReader tracks the offset in f so the index knows where content
// starts; Seek lets the tar reader skip content without reading it.
type posReader struct {
	f   *os.File
	pos int64
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *posReader) Seek(off int64, whence int) (int64, error) {
	n, err := p.f.Seek(off, whence)
	if err == nil {
		p.pos = n
	}
	return n, err
}

func indexTar(f *os.File) (*tarFiles, error) {
	pr := &posReader{f: f}
	tr := tar.NewReader(pr)
	t := &tarFiles{f: f, entries: map[string]tarEntry{}}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: read archive: %w", image.ErrCorrupt, err)
		}
		name := cleanMember(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			t.entries[name] = tarEntry{off: pr.pos, size: hdr.Size}
		case tar.TypeSymlink:
			t.entries[name] = tarEntry{link: path.Join(path.Dir(name), hdr.Linkname)}
		case tar.TypeLink:
			t.entries[name] = tarEntry{hardlink: cleanMember(hdr.Linkname)}
		}
	}
	if st, err := f.Stat(); err == nil {
		for name, e := range t.entries {
			if e.link == "" && e.hardlink == "" && e.off+e.size > st.Size() {
				return nil, fmt.Errorf("%w: archive member %q is cut off", image.ErrCorrupt, name)
			}
		}
	}
	return t, nil
}

func cleanMember(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (t *tarFiles) resolve(name string) (tarEntry, error) {
	name = cleanMember(name)
	for range 8 {
		e, ok := t.entries[name]
		if !ok {
			return tarEntry{}, fmt.Errorf("%w: archive has no member %q", image.ErrCorrupt, name)
		}
		switch {
		case e.link != "":
			name = cleanMember(e.link)
		case e.hardlink != "":
			name = e.hardlink
		default:
			return e, nil
		}
	}
	return tarEntry{}, fmt.Errorf("%w: archive member %q: too many links", image.ErrCorrupt, name)
}

func (t *tarFiles) open(name string) (io.ReadCloser, int64, error) {
	e, err := t.resolve(name)
	if err != nil {
		return nil, 0, err
	}
	return io.NopCloser(io.NewSectionReader(t.f, e.off, e.size)), e.size, nil
}

func (t *tarFiles) exists(name string) bool {
	_, err := t.resolve(name)
	return err == nil
}

func (t *tarFiles) close() error { return t.f.Close() }

// dirFiles reads an OCI layout directory through its os.Root: a member
// may not name anything outside the directory.
type dirFiles struct{ root *os.Root }

func (d dirFiles) open(name string) (io.ReadCloser, int64, error) {
	f, err := d.root.Open(cleanMember(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("%w: layout has no %q", image.ErrCorrupt, name)
		}
		return nil, 0, fmt.Errorf("read layout: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("read layout: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: layout member %q is not a regular file", image.ErrCorrupt, name)
	}
	return f, st.Size(), nil
}

func (d dirFiles) exists(name string) bool {
	_, err := d.root.Stat(cleanMember(name))
	return err == nil
}

func (d dirFiles) close() error { return d.root.Close() }

// readSmall reads a member that must be small (JSON).
func readSmall(fs files, name string) ([]byte, error) {
	r, size, err := fs.open(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if size > 32<<20 {
		return nil, fmt.Errorf("%w: %q is %d bytes, too big for metadata", image.ErrCorrupt, name, size)
	}
	b, err := io.ReadAll(io.LimitReader(r, size))
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", name, err)
	}
	return b, nil
}
