package dirent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// record builds one linux_dirent64 record as the kernel lays it out,
// padded to 8 bytes.
func record(ino uint64, typ uint8, name string) []byte {
	n := (nameOff + len(name) + 1 + 7) &^ 7
	b := make([]byte, n)
	binary.NativeEndian.PutUint64(b[0:8], ino)
	binary.NativeEndian.PutUint64(b[8:16], 12345)
	binary.NativeEndian.PutUint16(b[16:18], uint16(n))
	b[18] = typ
	copy(b[nameOff:], name)
	return b
}

func TestParse(t *testing.T) {
	var buf []byte
	buf = append(buf, record(2, unix.DT_DIR, ".")...)
	buf = append(buf, record(1, unix.DT_DIR, "..")...)
	buf = append(buf, record(7, unix.DT_REG, "file")...)
	buf = append(buf, record(1<<40, unix.DT_LNK, "a-name-of-exactly-21-b")...)
	buf = append(buf, record(9, unix.DT_UNKNOWN, "x")...)
	var got []Entry
	if err := Parse(buf, func(e Entry) { got = append(got, e) }); err != nil {
		t.Fatal(err)
	}
	want := []Entry{{"file", 7, unix.DT_REG}, {"a-name-of-exactly-21-b", 1 << 40, unix.DT_LNK}, {"x", 9, unix.DT_UNKNOWN}}
	if !slices.Equal(got, want) {
		t.Errorf("Parse = %+v; want %+v", got, want)
	}
}

func TestParseRefusesBadRecords(t *testing.T) {
	good := record(7, unix.DT_REG, "file")
	short := slices.Clone(good)
	binary.NativeEndian.PutUint16(short[16:18], 3)
	long := slices.Clone(good)
	binary.NativeEndian.PutUint16(long[16:18], uint16(len(good)+8))
	for name, buf := range map[string][]byte{
		"truncated header": good[:10],
		"length too short": short,
		"length past end":  long,
	} {
		if err := Parse(buf, func(Entry) {}); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: Parse error %v; want ErrBadRecord", name, err)
		}
	}
}

func TestReadAll(t *testing.T) {
	dir := t.TempDir()
	var want []string
	for i := range 2000 { // more than one 64 KiB getdents buffer
		name := fmt.Sprintf("%s-%04d", strings.Repeat("n", 40), i)
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	want = append(want, "sub")
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ents, err := ReadAll(fd)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, e.Name), &st); err != nil {
			t.Fatal(err)
		}
		if e.Ino != st.Ino {
			t.Errorf("%s: d_ino %d, lstat %d", e.Name, e.Ino, st.Ino)
		}
		if wantType := map[bool]uint8{true: unix.DT_DIR, false: unix.DT_REG}[e.Name == "sub"]; e.Type != wantType && e.Type != unix.DT_UNKNOWN {
			t.Errorf("%s: d_type %d; want %d", e.Name, e.Type, wantType)
		}
		names = append(names, e.Name)
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("ReadAll listed %d names; want %d", len(names), len(want))
	}
}

// FuzzParse: any buffer parses or fails with ErrBadRecord, never
// panicking or reading past a record; records built as the kernel builds
// them come back as they went in.
func FuzzParse(f *testing.F) {
	f.Add([]byte{}, uint64(1), uint8(unix.DT_REG), "name")
	f.Add(record(3, unix.DT_DIR, "d"), uint64(0), uint8(0), ".")
	f.Add(record(3, unix.DT_DIR, "d")[:20], uint64(1<<63), uint8(255), "a\x00b")
	f.Fuzz(func(t *testing.T, raw []byte, ino uint64, typ uint8, name string) {
		n := 0
		if err := Parse(raw, func(e Entry) { n++ }); err != nil && !errors.Is(err, ErrBadRecord) {
			t.Fatalf("Parse error %v; want nil or ErrBadRecord", err)
		}
		if n > len(raw)/nameOff {
			t.Fatalf("%d entries from %d bytes", n, len(raw))
		}
		if name == "" || name == "." || name == ".." || strings.ContainsRune(name, 0) || len(name) > 255 {
			return
		}
		var got []Entry
		err := Parse(append(record(ino, typ, name), record(1, unix.DT_DIR, "..")...), func(e Entry) { got = append(got, e) })
		if want := (Entry{name, ino, typ}); err != nil || len(got) != 1 || got[0] != want {
			t.Fatalf("Parse(record %+v) = %+v, %v", want, got, err)
		}
	})
}
