package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/internal/fstest"
)

// FuzzApply feeds arbitrary bytes to the applier as a layer tar. Whatever
// the input, nothing outside the target directory may change, the error
// (if any) must be one of the kinds Apply documents, and a complete
// tar-split record must reassemble to the input.
//
//	go test ./image/layer -run '^$' -fuzz FuzzApply -fuzztime 5m -fuzzminimizetime 10s
//
// (Each run builds and snapshots a sandbox, a few milliseconds: Go's
// default minimization of every new input takes a while at that speed.)
func FuzzApply(f *testing.F) {
	seeds := [][]ent{
		everyKindUnprivileged(),
		{file("../victim", "x")},
		{symlink("a", ".."), file("a/victim", "x")},
		{symlink("a", "/"), dir("a/etc")},
		{hardlink("h", "../victim")},
		{symlink("s", "../outside"), hardlink("h", "s/secret")},
		{file("a", "1"), file("a", "2")},
		{file(".wh.a", ""), file("a/b", "")},
		{dir("d"), file("d/.wh..wh..opq", ""), file("d/.wh.x", "")},
		{{name: "c", typ: tar.TypeChar, major: 1, minor: 3, uid: os.Getuid(), gid: os.Getgid()}},
		{{name: "w", typ: tar.TypeChar, uid: os.Getuid(), gid: os.Getgid()}},
	}
	for _, s := range seeds {
		f.Add(mkTar(f, s...))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		s := newSandbox(t)
		before := s.outside(t)
		var split bytes.Buffer
		st, err := Apply(s.target, bytes.NewReader(data), ApplyOptions{Split: &split})
		if d := fstest.Diff(before, s.outside(t)); len(d) > 0 {
			t.Fatalf("outside of the target changed:\n%s", strings.Join(d, "\n"))
		}
		if err != nil {
			for _, known := range []error{image.ErrUnsafePath, image.ErrDuplicateEntry, image.ErrDeviceNode,
				image.ErrUnsupported, image.ErrCorrupt} {
				if errors.Is(err, known) {
					return
				}
			}
			var pe *os.PathError
			var le *os.LinkError
			if errors.As(err, &pe) || errors.As(err, &le) || errors.Is(err, unix.EPERM) {
				return // the kernel refused something (name too long, chown as non-root, ...)
			}
			if strings.Contains(err.Error(), "invalid argument") || strings.Contains(err.Error(), "file name too long") {
				return
			}
			t.Fatalf("unexpected kind of error: %v", err)
		}
		if st.Split {
			var out bytes.Buffer
			if err := Reassemble(s.target, &split, &out); err != nil {
				t.Fatalf("reassemble: %v", err)
			}
			if !bytes.Equal(out.Bytes(), data[:min(len(data), out.Len())]) || int64(out.Len()) != st.TarSize {
				t.Fatalf("reassembled stream differs from the input")
			}
		}
	})
}

// everyKindUnprivileged is everyKind without owners other than the caller.
func everyKindUnprivileged() []ent {
	var out []ent
	for _, e := range everyKind() {
		e.uid, e.gid = os.Getuid(), os.Getgid()
		out = append(out, e)
	}
	return out
}
