package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/internal/fstest"
)

// corpusDir holds the Dockerfiles both builders build: one directory
// each, the build context, with an optional "flags" file of extra build
// flags (one line, split at spaces).
const corpusDir = "testdata/build"

// copyTree copies the build context src to dst (files, dirs, symlinks,
// modes).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
}

// buildFixtures adds what a corpus context cannot hold in git: tar
// archives for ADD, made here.
func buildFixtures(t *testing.T, name, dir string) {
	t.Helper()
	if name == "18-hardlinks" {
		// Git keeps no hard links: the test makes them.
		os.Link(filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt"))
		os.Link(filepath.Join(dir, "a.txt"), filepath.Join(dir, "dir", "c.txt"))
		return
	}
	if name != "09-add" {
		return
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1234, Gid: 5678, ModTime: imagetest.T0},
		{Name: "top/file", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1234, Gid: 5678, Size: 5, ModTime: imagetest.T0},
		{Name: "top/link", Typeflag: tar.TypeSymlink, Linkname: "file", Mode: 0o777, ModTime: imagetest.T0},
		{Name: "root-file", Typeflag: tar.TypeReg, Mode: 0o600, Size: 5, ModTime: imagetest.T0},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("data\n"))
		}
	}
	tw.Close()
	os.WriteFile(filepath.Join(dir, "archive.tar"), buf.Bytes(), 0o644)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(buf.Bytes())
	zw.Close()
	os.WriteFile(filepath.Join(dir, "archive.tar.gz"), gz.Bytes(), 0o644)
}

// corpusCase is one Dockerfile of the corpus, ready to build.
type corpusCase struct {
	name  string
	ctx   string
	flags []string
}

func corpus(t *testing.T) []corpusCase {
	t.Helper()
	ents, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []corpusCase
	for _, e := range ents {
		c := corpusCase{name: e.Name(), ctx: t.TempDir()}
		copyTree(t, filepath.Join(corpusDir, e.Name()), c.ctx)
		buildFixtures(t, c.name, c.ctx)
		if b, err := os.ReadFile(filepath.Join(c.ctx, "flags")); err == nil {
			c.flags = strings.Fields(string(b))
			os.Remove(filepath.Join(c.ctx, "flags"))
		}
		out = append(out, c)
	}
	if len(out) < 15 {
		t.Fatalf("the corpus has %d Dockerfiles, want at least 15", len(out))
	}
	return out
}

// unpackLayout unpacks tag of the OCI layout with umoci and returns the
// root filesystem's tree and the image config.
func unpackLayout(t *testing.T, layout, tag string) (fstest.Tree, v1.Image) {
	t.Helper()
	bundle := filepath.Join(t.TempDir(), "bundle")
	sh(t, "", "umoci", "unpack", "--image", layout+":"+tag, bundle)
	tree, err := fstest.Snapshot(filepath.Join(bundle, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	delete(tree, ".")
	return tree, layoutConfig(t, layout, tag)
}

// layoutConfig reads the config of tag in an OCI layout.
func layoutConfig(t *testing.T, layout, tag string) v1.Image {
	t.Helper()
	blob := func(d digest.Digest, v any) {
		b, err := os.ReadFile(filepath.Join(layout, "blobs", d.Algorithm().String(), d.Encoded()))
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil {
			t.Fatalf("layout %s: %v", layout, err)
		}
	}
	var index v1.Index
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err == nil {
		err = json.Unmarshal(b, &index)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range index.Manifests {
		if m.Annotations[v1.AnnotationRefName] != tag {
			continue
		}
		var man v1.Manifest
		blob(m.Digest, &man)
		var cfg v1.Image
		blob(man.Config.Digest, &cfg)
		return cfg
	}
	t.Fatalf("layout %s has no %s", layout, tag)
	return v1.Image{}
}

// buildahOnly are the mount points buildah leaves in an image after a
// RUN (empty directories and an empty /etc/hostname) that docker's
// builders do not write.
var buildahOnly = []string{"dev", "proc", "sys", "run", "etc/hostname"}

// dropBuildahMountPoints removes from podman's tree the mount points
// buildah leaves, where unionctl's image has nothing there.
func dropBuildahMountPoints(theirs, ours fstest.Tree) {
	for _, p := range buildahOnly {
		e, ok := theirs[p]
		if _, inOurs := ours[p]; !ok || inOurs {
			continue
		}
		empty := e.Type == fstest.TypeFile && e.Size == 0
		if e.Type == fstest.TypeDir {
			empty = true
			for q := range theirs {
				if strings.HasPrefix(q, p+"/") {
					empty = false
				}
			}
		}
		if empty {
			delete(theirs, p)
		}
	}
}

// configDiffs lists how two image configs differ in what a Dockerfile
// sets.
func configDiffs(want, got v1.ImageConfig) []string {
	var d []string
	check := func(what string, equal bool, w, g any) {
		if !equal {
			d = append(d, what+": podman "+jsonString(w)+", unionctl "+jsonString(g))
		}
	}
	check("Env", slices.Equal(want.Env, got.Env), want.Env, got.Env)
	check("Cmd", slices.Equal(want.Cmd, got.Cmd), want.Cmd, got.Cmd)
	check("Entrypoint", slices.Equal(want.Entrypoint, got.Entrypoint), want.Entrypoint, got.Entrypoint)
	check("WorkingDir", want.WorkingDir == got.WorkingDir, want.WorkingDir, got.WorkingDir)
	check("User", want.User == got.User, want.User, got.User)
	check("ExposedPorts", maps.Equal(want.ExposedPorts, got.ExposedPorts), want.ExposedPorts, got.ExposedPorts)
	check("Volumes", maps.Equal(want.Volumes, got.Volumes), want.Volumes, got.Volumes)
	wl := maps.Clone(want.Labels)
	delete(wl, "io.buildah.version") // the builder's own
	if len(wl) == 0 {
		wl = nil
	}
	gl := got.Labels
	if len(gl) == 0 {
		gl = nil
	}
	check("Labels", maps.Equal(wl, gl), wl, gl)
	check("StopSignal", want.StopSignal == got.StopSignal, want.StopSignal, got.StopSignal)
	return d
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// plainSession is session with unionctl and unionmount built without
// -race when make test provides them ($UNIONMOUNT_PLAIN_BIN and the
// unionctl beside it): the corpus compares builders, and under -race its
// 80 steps take minutes instead of seconds. The race builds run the
// other build tests.
func plainSession(t testing.TB) *imagetest.Session {
	t.Helper()
	s := session(t)
	if p := os.Getenv("UNIONMOUNT_PLAIN_BIN"); p != "" {
		s.Unionmount = p
		if ctl := filepath.Join(filepath.Dir(p), "unionctl"); fileExists(ctl) {
			s.Bin = ctl
		}
	}
	return s
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// TestBuildMatchesPodman: podman build (buildah) and unionctl build make
// the same root filesystems (type, mode, owner, size, link target,
// content, xattrs) and configs from every Dockerfile of the corpus, and
// podman runs the images unionctl built as it runs its own.
func TestBuildMatchesPodman(t *testing.T) {
	requireBuild(t, "podman", "runc", "skopeo", "umoci")
	s := plainSession(t)
	pm := newPodman(t)
	base := filepath.Join(t.TempDir(), "base.tar")
	s.Must(nil, "save", "-o", base, "busybox:base")
	pm.must("load", "-i", base)
	cases := corpus(t)
	// Every Dockerfile once per builder, both builders at once; then
	// compare. (Podman's intermediate layers are not compared:
	// --layers=false saves it a commit per step.)
	t0 := time.Now()
	podmanDone := make(chan error, 1)
	go func() {
		for _, c := range cases {
			if c.name == "17-onbuild-base" {
				continue // podman's OCI images drop ONBUILD: TestBuildOnbuild checks triggers
			}
			out, err := pm.run(append(append([]string{"build", "-q", "--layers=false", "--network", "none", "--runtime", "runc",
				"--pull=never", "-t", "theirs/" + c.name}, c.flags...), c.ctx)...)
			if err != nil {
				podmanDone <- fmt.Errorf("%s: podman build: %w\n%s", c.name, err, out)
				return
			}
		}
		podmanDone <- nil
	}()
	var names []string
	for _, c := range cases {
		s.Must(nil, append(append([]string{"build", "-q", "-t", "ours/" + c.name}, c.flags...), c.ctx)...)
		names = append(names, "ours/"+c.name)
	}
	t.Logf("unionctl built the corpus in %v", time.Since(t0))
	if err := <-podmanDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("both built the corpus in %v", time.Since(t0))
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours")
	theirs := filepath.Join(dir, "theirs")
	s.Must(nil, append([]string{"save", "--layout", ours}, names...)...)
	for _, c := range cases {
		if c.name == "17-onbuild-base" {
			continue
		}
		pm.must("push", "theirs/"+c.name, "oci:"+theirs+":"+c.name)
		wantTree, wantCfg := unpackLayout(t, theirs, c.name)
		gotTree, gotCfg := unpackLayout(t, ours, "ours/"+c.name+":latest")
		dropBuildahMountPoints(wantTree, gotTree)
		if d := fstest.Diff(wantTree, gotTree, fstest.IgnoreFields(fstest.FieldMtime|fstest.FieldAtime|fstest.FieldNlink|fstest.FieldDirNlink)); len(d) > 0 {
			t.Errorf("%s: root filesystems differ (podman's first):\n%s", c.name, strings.Join(d, "\n"))
		}
		if d := configDiffs(wantCfg.Config, gotCfg.Config); len(d) > 0 {
			t.Errorf("%s: configs differ:\n%s", c.name, strings.Join(d, "\n"))
		}
	}
	t.Logf("built and compared in %v", time.Since(t0))

	// Podman loads and runs what unionctl built, as it runs its own.
	all := filepath.Join(dir, "ours.tar")
	s.Must(nil, append([]string{"save", "--format", "docker-archive", "-o", all}, names...)...)
	pm.must("load", "-i", all)
	for _, name := range []string{"05-multistage", "10-config", "12-scratch"} {
		want := pm.must("run", "--rm", "--network", "none", "--runtime", "runc", "theirs/"+name)
		got, err := pm.run("run", "--rm", "--network", "none", "--runtime", "runc", "ours/"+name)
		if err != nil || got != want || want == "" {
			t.Errorf("%s in podman: unionctl's image prints %q (%v), podman's %q", name, got, err, want)
		}
	}
}
