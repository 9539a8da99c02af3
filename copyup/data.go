package copyup

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// dataMethod is a way to copy file data, in the order they are tried.
type dataMethod int

const (
	// methodClone shares the source's extents (FICLONE): instant, needs
	// both files on one reflink-capable filesystem (btrfs, xfs).
	methodClone dataMethod = iota
	// methodCopyRange copies each data segment with copy_file_range; the
	// kernel copies in-kernel, or offloads (NFS, reflink on xfs).
	methodCopyRange
	// methodReadWrite copies each data segment with pread/pwrite.
	methodReadWrite
)

func (m dataMethod) String() string {
	switch m {
	case methodClone:
		return "clone"
	case methodCopyRange:
		return "copy_file_range"
	case methodReadWrite:
		return "read/write"
	}
	return fmt.Sprintf("method %d", int(m))
}

const (
	// maxCopyRange bounds one copy_file_range call (the kernel caps a call
	// near 2 GiB anyway).
	maxCopyRange = 1 << 30
	// rwBufSize is the read/write buffer, at most.
	rwBufSize = 1 << 20
)

// errShrank reports a source that ended before its size.
var errShrank = errors.New("source file shrank during copy-up")

// copyFileData copies the first size bytes of src into the empty file dst,
// trying method first and then the later ones when the filesystems refuse.
// Holes in src stay holes in dst. It returns the method that did the work.
func copyFileData(dst, src int, size int64, first dataMethod) (dataMethod, error) {
	if size == 0 {
		return first, nil
	}
	m := first
	if m == methodClone {
		err := unix.IoctlFileClone(dst, src)
		if err == nil {
			return methodClone, nil
		}
		if !refused(err) {
			return m, fmt.Errorf("clone: %w", err)
		}
		m = methodCopyRange
	}
	c := &segmentCopier{dst: dst, src: src, method: m, size: size}
	if err := forEachData(src, size, c.copy); err != nil {
		return c.method, err
	}
	// Extend to the full size: a trailing hole was not written.
	if err := unix.Ftruncate(dst, size); err != nil {
		return c.method, fmt.Errorf("truncate to %d: %w", size, err)
	}
	return c.method, nil
}

// refused reports an error that means "this filesystem pair or kernel does
// not do that", after which the next method may well work: EXDEV between
// filesystems, EOPNOTSUPP/ENOTTY/EINVAL where unsupported, ENOSYS on old
// kernels, EPERM from a seccomp filter, EIO from some network filesystems.
// A real I/O error reappears with the next method.
func refused(err error) bool {
	switch err {
	case unix.EXDEV, unix.EOPNOTSUPP, unix.ENOTTY, unix.EINVAL, unix.ENOSYS, unix.EPERM, unix.EIO:
		return true
	}
	return false
}

// forEachData calls fn for each data segment of fd's first size bytes, in
// order, skipping holes (SEEK_DATA/SEEK_HOLE). A filesystem without hole
// reporting reports one segment: the whole file.
func forEachData(fd int, size int64, fn func(off, n int64) error) error {
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case err == unix.ENXIO: // nothing but a hole up to EOF
			return nil
		case err == unix.EINVAL || err == unix.EOPNOTSUPP:
			return fn(off, size-off)
		case err != nil:
			return fmt.Errorf("seek data at %d: %w", off, err)
		}
		if data >= size {
			return nil
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole at %d: %w", data, err)
		}
		hole = min(hole, size)
		if err := fn(data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// segmentCopier copies segments at equal offsets, with copy_file_range
// until the kernel refuses it, then with pread/pwrite.
type segmentCopier struct {
	dst, src int
	method   dataMethod
	size     int64
	buf      []byte
}

func (c *segmentCopier) copy(off, n int64) error {
	for n > 0 {
		var k int64
		var err error
		if c.method == methodCopyRange {
			k, err = c.copyRange(off, n)
			if err != nil && refused(err) {
				c.method = methodReadWrite
				continue
			}
			if err != nil && err != errShrank {
				err = fmt.Errorf("copy_file_range at %d: %w", off, err)
			}
		} else {
			k, err = c.readWrite(off, n)
		}
		if err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// copyRange copies what one copy_file_range call copies; errors are the
// bare errno, for refused.
func (c *segmentCopier) copyRange(off, n int64) (int64, error) {
	roff, woff := off, off
	k, err := unix.CopyFileRange(c.src, &roff, c.dst, &woff, int(min(n, maxCopyRange)), 0)
	if err == unix.EINTR {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if k == 0 {
		return 0, errShrank
	}
	return int64(k), nil
}

func (c *segmentCopier) readWrite(off, n int64) (int64, error) {
	if c.buf == nil {
		c.buf = make([]byte, min(c.size, rwBufSize))
	}
	k, err := unix.Pread(c.src, c.buf[:min(n, int64(len(c.buf)))], off)
	if err == unix.EINTR {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read at %d: %w", off, err)
	}
	if k == 0 {
		return 0, errShrank
	}
	for w := 0; w < k; {
		m, err := unix.Pwrite(c.dst, c.buf[w:k], off+int64(w))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("write at %d: %w", off+int64(w), err)
		}
		w += m
	}
	return int64(k), nil
}
