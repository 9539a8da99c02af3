// Package imagetest is the test kit of unionctl: it builds the binary,
// makes busybox root filesystems and image tarballs in Go (no network),
// and runs unionctl sessions against a store in the test's temporary
// directory.
package imagetest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Unionctl returns the path of a unionctl binary: $UNIONCTL_BIN when set,
// else ./cmd/unionctl built once per test process. The binary is built
// with -race only when the tests run with it and $UNIONCTL_RACE=1: the
// packages themselves run under -race in the test process, and a race
// build of the binary makes every container test several times slower.
func Unionctl(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("UNIONCTL_BIN"); p != "" {
		return p
	}
	build.once.Do(func() {
		root, err := fstest.ModuleRoot()
		if err != nil {
			build.err = err
			return
		}
		dir, err := os.MkdirTemp("", "unionctl-test-bin-")
		if err != nil {
			build.err = err
			return
		}
		os.Chmod(dir, 0o755) // the rootless test runs it as another user
		build.dir = dir
		out := filepath.Join(dir, "unionctl")
		args := []string{"build", "-o", out}
		if raceEnabled && os.Getenv("UNIONCTL_RACE") == "1" {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/unionctl")...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/unionctl: %w\n%s", err, b)
			return
		}
		build.path = out
	})
	if build.err != nil {
		t.Fatalf("%v", build.err)
	}
	return build.path
}

// Cleanup removes what Unionctl built and what fstest.Binary built. Call
// it from TestMain after m.Run.
func Cleanup() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	fstest.RemoveBinary()
}

// Busybox is the static busybox binary the test images are made of.
const Busybox = "/bin/busybox"

// RequireBusybox skips the test unless a static busybox is installed.
func RequireBusybox(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Busybox); err != nil {
		testenv.Skipf(t, "needs busybox-static (%s): %v", Busybox, err)
	}
	if out, err := exec.Command("ldd", Busybox).CombinedOutput(); err == nil && !bytes.Contains(out, []byte("not a dynamic")) {
		testenv.Skipf(t, "%s is dynamically linked: install busybox-static", Busybox)
	}
}

// Applets linked to busybox in the test rootfs.
var Applets = []string{"sh", "ls", "cat", "echo", "mkdir", "rm", "touch", "id", "hostname", "ps", "sleep",
	"stat", "wc", "true", "false", "test", "env", "pwd", "ln", "mv", "cp", "chmod", "sync", "head", "du"}

// Entry is one member of a tarball made by Tar.
type Entry struct {
	Name   string
	Type   byte // tar.TypeReg by default
	Body   []byte
	Link   string
	Mode   int64
	UID    int
	GID    int
	Xattrs map[string]string
}

// T0 is the mtime of every test tarball entry.
var T0 = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Tar builds an uncompressed tar of entries, in order.
func Tar(t testing.TB, entries []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.Mode
		if mode == 0 {
			mode = map[byte]int64{tar.TypeDir: 0o755, tar.TypeSymlink: 0o777}[typ]
			if mode == 0 {
				mode = 0o644
			}
		}
		hdr := &tar.Header{Name: e.Name, Typeflag: typ, Linkname: e.Link, Mode: mode, Uid: e.UID, Gid: e.GID,
			ModTime: T0, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		for k, v := range e.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar %q: %v", e.Name, err)
		}
		if typ == tar.TypeReg {
			tw.Write(e.Body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// BusyboxEntries is a minimal root filesystem: busybox with its applets,
// /etc/passwd and /etc/group (root and nobody), and extra files on top.
func BusyboxEntries(t testing.TB, extra ...Entry) []Entry {
	t.Helper()
	RequireBusybox(t)
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		t.Fatal(err)
	}
	es := []Entry{
		{Name: "bin/", Type: tar.TypeDir},
		{Name: "bin/busybox", Body: bb, Mode: 0o755},
	}
	for _, a := range Applets {
		es = append(es, Entry{Name: "bin/" + a, Type: tar.TypeSymlink, Link: "busybox"})
	}
	es = append(es,
		Entry{Name: "etc/", Type: tar.TypeDir},
		Entry{Name: "etc/passwd", Body: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")},
		Entry{Name: "etc/group", Body: []byte("root:x:0:\nnogroup:x:65534:\n")},
		Entry{Name: "root/", Type: tar.TypeDir, Mode: 0o700},
		Entry{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
	)
	return append(es, extra...)
}

// BusyboxTar is Tar of BusyboxEntries.
func BusyboxTar(t testing.TB, extra ...Entry) []byte {
	t.Helper()
	return Tar(t, BusyboxEntries(t, extra...))
}

// WriteFile writes b to dir/name and returns the path.
func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Result is what a unionctl run printed and how it ended.
type Result struct {
	Args   []string
	Stdout string
	Stderr string
	Code   int
}

func (r Result) String() string {
	return fmt.Sprintf("unionctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// Session runs unionctl against one store.
type Session struct {
	T          testing.TB
	Bin        string
	Root       string
	Unionmount string
	// Wrap, when set, turns the command line into another (to run it as
	// another user, in another namespace).
	Wrap func(argv []string) []string
	Env  []string
}

// NewSession makes a store in a temporary directory. The containers of
// the store are removed at cleanup (which unmounts their unions).
func NewSession(t testing.TB) *Session {
	t.Helper()
	s := &Session{T: t, Bin: Unionctl(t), Root: t.TempDir(), Unionmount: fstest.Binary(t)}
	t.Cleanup(func() { s.removeContainers() })
	return s
}

func (s *Session) removeContainers() {
	r := s.Run(nil, "ps", "-a", "-q", "--no-trunc")
	for _, id := range strings.Fields(r.Stdout) {
		s.Run(nil, "rm", "-f", id)
	}
}

// Run runs unionctl with args and stdin (nil: none).
func (s *Session) Run(stdin []byte, args ...string) Result {
	s.T.Helper()
	argv := append([]string{s.Bin, "--root", s.Root, "--unionmount", s.Unionmount}, args...)
	if s.Wrap != nil {
		argv = s.Wrap(argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Env = append(os.Environ(), s.Env...)
	err := cmd.Run()
	r := Result{Args: args, Stdout: out.String(), Stderr: errb.String()}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			r.Code = ee.ExitCode()
		} else {
			s.T.Fatalf("unionctl %s: %v", strings.Join(args, " "), err)
		}
	}
	return r
}

// Must runs unionctl and fails the test unless it exits 0.
func (s *Session) Must(stdin []byte, args ...string) Result {
	s.T.Helper()
	r := s.Run(stdin, args...)
	if r.Code != 0 {
		s.T.Fatalf("%v", r)
	}
	return r
}

// Lines splits output into trimmed non-empty lines.
func Lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " \t"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// StoreFiles lists every path under root (for "the store is unchanged"
// checks), with tmp/ and the lock file left out.
func StoreFiles(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "tmp" || strings.HasPrefix(rel, "tmp/") {
			if d.IsDir() && rel != "tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		if rel != "lock" {
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// CopyFile copies src to dst.
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
