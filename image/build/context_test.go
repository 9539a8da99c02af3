package build

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
)

// contextFixture is a build context with a .dockerignore that excludes
// logs (but one), a directory (but a file in it) and backups anywhere,
// and symlinks that stay in the context and that leave it.
func contextFixture(t *testing.T) *Context {
	t.Helper()
	dir := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600)
	err := fstest.Apply(dir,
		fstest.CreateFile(".dockerignore", []byte("*.log\n!keep.log\nsecret/\n!secret/public\n**/*.bak\n"), 0o644),
		fstest.CreateFile("a.log", []byte("a"), 0o644),
		fstest.CreateFile("keep.log", []byte("k"), 0o644),
		fstest.CreateDir("secret", 0o755),
		fstest.CreateFile("secret/key", []byte("key"), 0o600),
		fstest.CreateFile("secret/public", []byte("pub"), 0o644),
		fstest.CreateDir("src", 0o755),
		fstest.CreateDir("src/deep", 0o755),
		fstest.CreateFile("src/main.c", []byte("main"), 0o644),
		fstest.CreateFile("src/deep/old.bak", []byte("old"), 0o644),
		fstest.CreateFile("src/deep/x.c", []byte("x"), 0o644),
		fstest.CreateFile("one.md", []byte("1"), 0o644),
		fstest.CreateFile("two.md", []byte("2"), 0o644),
		fstest.Symlink("src/main.c", "inside"),
		fstest.Symlink(filepath.Join(outside, "secret"), "leaves"),
		fstest.Symlink("../"+filepath.Base(outside)+"/secret", "leaves-relative"),
	)
	if err != nil {
		t.Fatal(err)
	}
	c, err := OpenContext(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func entryNames(m *match) []string {
	var out []string
	for _, e := range m.entries {
		out = append(out, e.rel)
	}
	return out
}

// TestContextResolve: what a COPY source names in a context, after
// .dockerignore with ! exceptions, globs and symlinks.
func TestContextResolve(t *testing.T) {
	c := contextFixture(t)
	src := &source{root: c.Dir, ctx: c, beneath: true}

	ms, err := src.resolve(".")
	if err != nil || len(ms) != 1 || !ms[0].isDir {
		t.Fatalf(". resolves to %v, %v", ms, err)
	}
	got := entryNames(ms[0])
	want := []string{".dockerignore", "inside", "keep.log", "leaves", "leaves-relative", "one.md",
		"secret/public", "src", "src/deep", "src/deep/x.c", "src/main.c", "two.md"}
	if !slices.Equal(got, want) {
		t.Errorf("the context copies\n%q\nwant\n%q", got, want)
	}

	ms, err = src.resolve("*.md")
	if err != nil || len(ms) != 2 || ms[0].name != "one.md" || ms[1].name != "two.md" {
		t.Errorf("*.md: %v %v", ms, err)
	}
	if ms, err := src.resolve("inside"); err != nil || ms[0].rel != "src/main.c" || ms[0].name != "inside" {
		t.Errorf("a symlink inside the context is followed: %+v %v", ms, err)
	}
	for _, bad := range []string{"../x", "src/../../x", "leaves", "leaves-relative"} {
		if _, err := src.resolve(bad); !errors.Is(err, ErrOutsideContext) {
			t.Errorf("%s: %v, want ErrOutsideContext", bad, err)
		}
	}
	for _, ignored := range []string{"a.log", "secret/key"} {
		if _, err := src.resolve(ignored); err == nil || !strings.Contains(err.Error(), "excluded by .dockerignore") {
			t.Errorf("%s: %v, want excluded", ignored, err)
		}
	}
	if ms, err := src.resolve("/secret/public"); err != nil || ms[0].rel != "secret/public" {
		t.Errorf("an exception of .dockerignore: %v %v", ms, err)
	}
}

// TestChecksum: a step's checksum changes with a file's content, mode or
// name, not with its mtime (docker's cache ignores mtimes too) nor with
// a file .dockerignore excludes.
func TestChecksum(t *testing.T) {
	c := contextFixture(t)
	src := &source{root: c.Dir, ctx: c, beneath: true}
	sum := func() string {
		ms, err := src.resolve("src")
		if err != nil {
			t.Fatal(err)
		}
		s, err := checksum(ms)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := sum()
	p := filepath.Join(c.Dir, "src", "main.c")
	old := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(p, old, old)
	if sum() != first {
		t.Error("an mtime changed the checksum")
	}
	os.WriteFile(filepath.Join(c.Dir, "src", "deep", "old.bak"), []byte("ignored"), 0o644)
	if sum() != first {
		t.Error("a file .dockerignore excludes changed the checksum")
	}
	for _, change := range []func(){
		func() { os.WriteFile(p, []byte("MAIN"), 0o644) },
		func() { os.Chmod(p, 0o755) },
		func() { os.Rename(p, p+"2") },
	} {
		before := sum()
		change()
		if after := sum(); after == before {
			t.Error("a change did not change the checksum")
		}
	}
}
