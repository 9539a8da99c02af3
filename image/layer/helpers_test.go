package layer

import (
	"archive/tar"
	"bytes"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
)

var t0 = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

// ent is a tar entry declared as data.
type ent struct {
	name   string
	typ    byte
	body   string
	link   string
	mode   int64
	uid    int
	gid    int
	major  int64
	minor  int64
	xattrs map[string]string
}

func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, link: target, mode: 0o644}
}

// mkTar builds an uncompressed tar of ents, in order. Run by a user other
// than root, every entry is owned by that user (chown to others fails).
func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		if !isRoot() {
			e.uid, e.gid = os.Getuid(), os.Getgid()
		}
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, ModTime: t0, Devmajor: e.major, Devminor: e.minor,
			Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sandbox is a directory holding an empty target and, beside it, content
// that a hostile layer might try to reach.
type sandbox struct {
	root, target string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	root := t.TempDir()
	s := sandbox{root: root, target: filepath.Join(root, "target")}
	err := fstest.Apply(root,
		fstest.CreateDir("target", 0o755),
		fstest.CreateDir("outside", 0o755),
		fstest.CreateFile("outside/secret", []byte("secret\n"), 0o600),
		fstest.Symlink("../outside", "outside/loop"),
		fstest.CreateFile("victim", []byte("victim\n"), 0o644),
	)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// outside snapshots everything in the sandbox but the target (which is
// not read: a layer may leave files there its caller cannot open).
func (s sandbox) outside(t testing.TB) fstest.Tree {
	t.Helper()
	ents, err := os.ReadDir(s.root)
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.Tree{}
	for _, e := range ents {
		if e.Name() == "target" {
			continue
		}
		tree, err := fstest.Snapshot(filepath.Join(s.root, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for p, ent := range tree {
			p = path.Join(e.Name(), p)
			ent.Path, ent.InoClass = p, ""
			out[p] = ent
		}
	}
	return out
}

func isRoot() bool { return os.Geteuid() == 0 }
