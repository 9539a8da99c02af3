package whiteout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testenv"
)

func TestAUFSTarget(t *testing.T) {
	for _, c := range []struct {
		name, target string
		ok           bool
	}{
		{".wh.foo", "foo", true},
		{".wh..hidden", ".hidden", true},
		{".wh..wh..opq", "", false},
		{".wh..wh.plnk", "", false},
		{".wh.", "", false},
		{".wh..", "", false},
		{".wh...", "", false},
		{"foo", "", false},
		{"x.wh.foo", "", false},
	} {
		got, ok := AUFSTarget(c.name)
		if got != c.target || ok != c.ok {
			t.Errorf("AUFSTarget(%q) = %q, %v; want %q, %v", c.name, got, ok, c.target, c.ok)
		}
	}
	for _, n := range []string{".wh..wh..opq", ".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph"} {
		if !IsMeta(n) || !Hidden(n) {
			t.Errorf("%s must be hidden AUFS metadata", n)
		}
	}
}

func TestIsPrivateXattr(t *testing.T) {
	for name, want := range map[string]bool{
		"trusted.overlay.opaque":    true,
		"user.overlay.whiteout":     true,
		"trusted.unionmount.origin": true,
		"user.fuseoverlayfs.opaque": true,
		"user.overlayish":           false,
		"security.capability":       false,
		"user.mime_type":            false,
		"trusted.foo":               false,
		"overlay":                   false,
	} {
		if got := IsPrivateXattr(name); got != want {
			t.Errorf("IsPrivateXattr(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestWriteAndReadBack(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root: mknod 0/0 and trusted.* xattrs")
	}
	dir := t.TempDir()
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	f := Format{}
	if err := f.MakeWhiteout(dfd, "gone"); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "gone"), &st); err != nil || !IsCharWhiteout(&st) {
		t.Fatalf("MakeWhiteout wrote %o rdev %d (%v), want char 0/0", st.Mode, st.Rdev, err)
	}
	for _, rootless := range []bool{false, true} {
		sub := filepath.Join(dir, "d"+map[bool]string{false: "root", true: "user"}[rootless])
		os.Mkdir(sub, 0o755)
		fd, err := unix.Open(sub, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := (Format{Rootless: rootless}).SetOpaque(fd); err != nil {
			t.Fatal(err)
		}
		if got := DirOpacity(fd); got != Opaque {
			t.Errorf("rootless=%v: DirOpacity = %v, want Opaque", rootless, got)
		}
		want := map[bool]string{false: TrustedOpaque, true: UserOpaque}[rootless]
		if v, ok := getxattrPath(sub, want); !ok || v != "y" {
			t.Errorf("rootless=%v: %s = %q, %v; want y", rootless, want, v, ok)
		}
		if HasOpaqueFile(fd) {
			t.Errorf("rootless=%v: wrote .wh..wh..opq as well as the xattr", rootless)
		}
		unix.Close(fd)
	}
	// opaque=x is not opaque; fuse-overlayfs' marker is.
	x := filepath.Join(dir, "x")
	os.Mkdir(x, 0o755)
	unix.Setxattr(x, TrustedOpaque, []byte("x"), 0)
	if got := DirOpacityPath(x); got != XattrWhiteouts {
		t.Errorf("opaque=x: %v, want XattrWhiteouts", got)
	}
	fo := filepath.Join(dir, "fo")
	os.Mkdir(fo, 0o755)
	unix.Setxattr(fo, FuseOverlayfsOpaque, []byte("y"), 0)
	if got := DirOpacityPath(fo); got != Opaque {
		t.Errorf("user.fuseoverlayfs.opaque: %v, want Opaque", got)
	}
}

func FuzzAUFSTarget(f *testing.F) {
	for _, s := range []string{".wh.a", ".wh..wh..opq", ".wh.", "a", ".wh.\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		target, ok := AUFSTarget(name)
		if ok {
			if Prefix+target != name || target == "" || target == "." || target == ".." || IsMeta(name) {
				t.Fatalf("AUFSTarget(%q) = %q", name, target)
			}
		}
		if ok && !Hidden(name) {
			t.Fatalf("%q is a whiteout but not hidden", name)
		}
		if !strings.HasPrefix(name, Prefix) && (ok || Hidden(name)) {
			t.Fatalf("%q has no .wh. prefix", name)
		}
	})
}
