package xattr

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testenv"
)

func TestSplit(t *testing.T) {
	for in, want := range map[string][]string{
		"":                     nil,
		"\x00":                 nil,
		"user.b\x00user.a\x00": {"user.a", "user.b"},
		"user.a\x00\x00user.b": {"user.a", "user.b"},
		"user.only":            {"user.only"},
	} {
		if got := Split([]byte(in)); !reflect.DeepEqual(got, want) {
			t.Errorf("Split(%q) = %q; want %q", in, got, want)
		}
	}
}

// setUser sets user.NAME on p, or skips when the filesystem has no user
// xattrs.
func setUser(t *testing.T, p, name string, value []byte) {
	t.Helper()
	if err := unix.Lsetxattr(p, "user."+name, value, 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			testenv.Skipf(t, "%s: no user xattrs on this filesystem", filepath.Dir(p))
		}
		t.Fatal(err)
	}
}

func TestList(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if names, err := List(p); err != nil || len(names) != 0 {
		t.Errorf("List(file without user xattrs) = %q, %v", names, err)
	}
	// More names than the first buffer holds: the list must grow.
	var want []string
	for i := range 40 {
		n := fmt.Sprintf("a-rather-long-attribute-name-%02d", i)
		setUser(t, p, n, []byte("v"))
		want = append(want, "user."+n)
	}
	got, err := List(p)
	if err != nil {
		t.Fatal(err)
	}
	var user []string
	for _, n := range got {
		if len(n) > 5 && n[:5] == "user." {
			user = append(user, n)
		}
	}
	if !reflect.DeepEqual(user, want) {
		t.Errorf("List = %q; want %q", user, want)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if byFd, err := ListFd(int(f.Fd())); err != nil || !reflect.DeepEqual(byFd, got) {
		t.Errorf("ListFd = %q, %v; want %q", byFd, err, got)
	}
	if _, err := List(filepath.Join(filepath.Dir(p), "missing")); err != unix.ENOENT {
		t.Errorf("List(missing) error %v; want the bare errno ENOENT", err)
	}
}

// TestListDoesNotFollow: a symlink's own names are listed, not its
// target's.
func TestListDoesNotFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	setUser(t, target, "t", []byte("1"))
	link := filepath.Join(dir, "link")
	if err := os.Symlink("target", link); err != nil {
		t.Fatal(err)
	}
	names, err := List(link)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == "user.t" {
			t.Errorf("List(symlink) shows its target's user.t: %q", names)
		}
	}
}
