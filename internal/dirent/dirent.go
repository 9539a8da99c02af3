// Package dirent reads directories as getdents64(2) returns them, which
// gives what os.ReadDir does not: each entry's d_ino and d_type as the
// filesystem reports them, without a stat per entry. A buffer holds
// records of this layout, in native byte order:
//
//	struct linux_dirent64 {
//		u64  d_ino;
//		s64  d_off;     // for lseek; unused here
//		u16  d_reclen;  // length of this record, padding included
//		u8   d_type;    // DT_*
//		char d_name[];  // NUL-terminated, then padding
//	};
package dirent

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Entry is one directory entry.
type Entry struct {
	Name string
	Ino  uint64 // d_ino
	Type uint8  // d_type (unix.DT_*); DT_UNKNOWN when the filesystem does not say
}

// nameOff is the offset of d_name in a record.
const nameOff = 19

// ErrBadRecord means a getdents64 buffer holds a record that does not fit
// it; the kernel writes none.
var ErrBadRecord = errors.New("malformed getdents64 record")

// Parse calls f for each record in buf, the bytes one getdents64 call
// filled, in order, leaving out "." and "..".
func Parse(buf []byte, f func(Entry)) error {
	for b := buf; len(b) > 0; {
		if len(b) < nameOff {
			return fmt.Errorf("%w: %d bytes left, shorter than a header", ErrBadRecord, len(b))
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < nameOff || reclen > len(b) {
			return fmt.Errorf("%w: length %d with %d bytes left", ErrBadRecord, reclen, len(b))
		}
		name := b[nameOff:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		if s := string(name); s != "." && s != ".." {
			f(Entry{Name: s, Ino: binary.NativeEndian.Uint64(b[0:8]), Type: b[18]})
		}
		b = b[reclen:]
	}
	return nil
}

// Read calls f for each entry of the directory open at fd, from its
// current offset to its end, in the order the filesystem gives them,
// leaving out "." and "..". Errors are getdents64's errno, unwrapped, or
// ErrBadRecord.
func Read(fd int, f func(Entry)) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		if err := Parse(buf[:n], f); err != nil {
			return err
		}
	}
}

// ReadAll returns what Read gives, as a slice.
func ReadAll(fd int) ([]Entry, error) {
	var out []Entry
	err := Read(fd, func(e Entry) { out = append(out, e) })
	return out, err
}
