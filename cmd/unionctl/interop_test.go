package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/mountinfo"
	"github.com/unionmount/unionmount/internal/testenv"
)

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skipf(t, "needs %s (make deps installs it)", tool)
		}
	}
}

func sh(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// umociImage builds, with umoci alone, an OCI layout holding "base" (a
// busybox rootfs) and "v2" (base plus a layer that deletes a file,
// replaces a directory, adds files, a hard link, a symlink and an xattr),
// and returns the layout directory.
func umociImage(t *testing.T) string {
	t.Helper()
	requireTools(t, "umoci", "tar")
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	sh(t, dir, "umoci", "init", "--layout", layout)
	sh(t, dir, "umoci", "new", "--image", layout+":base")
	sh(t, dir, "umoci", "unpack", "--image", layout+":base", "b1")
	rootfs := imagetest.WriteFile(t, dir, "rootfs.tar", imagetest.BusyboxTar(t,
		imagetest.Entry{Name: "etc/motd", Body: []byte("welcome\n")},
		imagetest.Entry{Name: "srv/old/a", Body: []byte("a\n")},
		imagetest.Entry{Name: "srv/old/b", Body: []byte("b\n"), UID: 65534, GID: 65534},
	))
	sh(t, dir, "tar", "-C", "b1/rootfs", "-xpf", rootfs)
	sh(t, dir, "umoci", "repack", "--image", layout+":base", "b1")
	sh(t, dir, "umoci", "unpack", "--image", layout+":base", "b2")
	r := filepath.Join(dir, "b2", "rootfs")
	err := fstest.Apply(r,
		fstest.Remove("etc/motd"),
		fstest.Remove("srv/old"),
		fstest.CreateDir("srv/old", 0o750),
		fstest.CreateFile("srv/old/c", []byte("c\n"), 0o640),
		fstest.CreateFile("srv/new", []byte("new\n"), 0o644),
		fstest.Link("srv/new", "srv/new-link"),
		fstest.Symlink("../bin/busybox", "srv/bb"),
		fstest.SetXattr("srv/new", "user.color", []byte("blue")),
		fstest.Chmod("tmp", 0o1777),
	)
	if err != nil {
		t.Fatal(err)
	}
	sh(t, dir, "umoci", "repack", "--image", layout+":v2", "b2")
	return layout
}

// TestUmociImage: an image umoci made loads (as a layout and, through
// skopeo, as an oci-archive), and its merged view through the union
// equals what `umoci unpack` produces.
func TestUmociImage(t *testing.T) {
	fstest.RequireFUSE(t)
	requireTools(t, "skopeo")
	layout := umociImage(t)
	s := imagetest.NewSession(t)
	out := s.Must(nil, "load", "--layout", layout).Stdout
	if n := strings.Count(out, "Loaded image ID: sha256:"); n != 2 {
		t.Fatalf("load --layout printed %q, want two unnamed images (umoci's ref names are tags)", out)
	}
	archivePath := filepath.Join(t.TempDir(), "v2.tar")
	sh(t, "", "skopeo", "copy", "oci:"+layout+":v2", "oci-archive:"+archivePath+":localhost/umoci:v2")
	if out := s.Must(nil, "load", "-i", archivePath).Stdout; out != "Loaded image: localhost/umoci:v2\n" {
		t.Fatalf("load of skopeo's oci-archive printed %q", out)
	}
	var insp []imageInspect
	if err := json.Unmarshal([]byte(s.Must(nil, "inspect", "umoci:v2").Stdout), &insp); err != nil {
		t.Fatal(err)
	}
	if len(insp[0].Layers) != 2 {
		t.Fatalf("umoci:v2 has %d layers, want 2", len(insp[0].Layers))
	}
	if n := len(imagetest.Lines(s.Must(nil, "images", "-q").Stdout)); n != 2 {
		t.Errorf("%d images after loading v2 twice, want 2", n)
	}

	// The image's merged view (its layers alone, read-only) against
	// umoci's unpack of the same tag.
	mnt := t.TempDir()
	fstest.MountUnion(t, strings.Split(insp[0].GraphDriver.Data["LowerDir"], ":"), "", "", mnt)
	want := filepath.Join(t.TempDir(), "ref")
	sh(t, "", "umoci", "unpack", "--image", layout+":v2", want)
	wantTree, err := fstest.Snapshot(filepath.Join(want, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	gotTree, err := fstest.Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	// The root directory's own entry: umoci's bundle makes it.
	delete(wantTree, ".")
	delete(gotTree, ".")
	if d := fstest.Diff(wantTree, gotTree); len(d) > 0 {
		t.Errorf("merged view differs from umoci unpack:\n%s", strings.Join(d, "\n"))
	}
	if _, ok := gotTree["etc/motd"]; ok || gotTree["srv/old/c"].Type != fstest.TypeFile || gotTree["srv/old/a"].Type != "" {
		t.Error("whiteout or opaque directory not applied")
	}
}

// podman runs podman with isolated storage (vfs) and configuration.
type podman struct {
	t    *testing.T
	args []string
	env  []string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	requireTools(t, "podman", "runc")
	dir, err := os.MkdirTemp("", "unionctl-podman-")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "containers.conf")
	// No rlimits: raising them needs CAP_SYS_RESOURCE, which a root in a
	// container may lack.
	os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"), 0o644)
	storage := filepath.Join(dir, "storage.conf")
	os.WriteFile(storage, []byte("[storage]\ndriver = \"vfs\"\ngraphroot = \""+filepath.Join(dir, "root")+
		"\"\nrunroot = \""+filepath.Join(dir, "run")+"\"\n"), 0o644)
	p := &podman{t: t,
		args: []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
			"--storage-driver", "vfs", "--tmpdir", filepath.Join(dir, "tmp")},
		env: []string{"CONTAINERS_CONF=" + conf, "CONTAINERS_STORAGE_CONF=" + storage},
	}
	t.Cleanup(func() {
		p.run("rm", "-af")
		p.run("rmi", "-af")
		unmountUnder(dir)
		os.RemoveAll(dir)
	})
	return p
}

func (p *podman) run(args ...string) (string, error) {
	cmd := exec.Command("podman", append(append([]string{}, p.args...), args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), &podmanError{err: err, stderr: errb.String(), args: args}
	}
	return out.String(), nil
}

type podmanError struct {
	err    error
	stderr string
	args   []string
}

func (e *podmanError) Error() string {
	return "podman " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + e.stderr
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// unmountUnder lazily unmounts whatever is mounted below dir.
func unmountUnder(dir string) {
	mounts, err := mountinfo.Self()
	if err != nil {
		return
	}
	var mnts []string
	for _, m := range mounts {
		if strings.HasPrefix(m.Mountpoint, dir+"/") {
			mnts = append(mnts, m.Mountpoint)
		}
	}
	slices.Reverse(mnts)
	for _, m := range mnts {
		exec.Command("umount", "-l", m).Run()
	}
}

// commitRoundTrip makes "rt:1": busybox:base with a file deleted, a
// directory replaced and a file added, by a container and commit.
func commitRoundTrip(t *testing.T, s *imagetest.Session) string {
	t.Helper()
	s.Must(nil, "run", "--name", "rt", "busybox:base", "sh", "-c",
		"rm /etc/motd && rm -r /srv/old && mkdir /srv/old && echo c > /srv/old/c && echo added > /added")
	return strings.TrimSpace(s.Must(nil, "commit", "-m", "round trip", "rt", "rt:1").Stdout)
}

// rtCheck is a command that prints the round trip image's view.
const rtCheck = "ls /etc/motd 2>&1; ls /srv/old; cat /srv/old/c /added"

const rtWant = "ls: /etc/motd: No such file or directory\nc\nc\nadded\n"

// TestSkopeoAndPodman: what unionctl saves, skopeo inspects and podman
// loads and runs; the commit round trip looks right in podman.
func TestSkopeoAndPodman(t *testing.T) {
	requireTools(t, "skopeo")
	s := session(t)
	id := commitRoundTrip(t, s)
	if out := s.Must(nil, "run", "--rm", "rt:1", "sh", "-c", rtCheck).Stdout; out != rtWant {
		t.Fatalf("rt:1 in unionctl: %q", out)
	}
	dir := t.TempDir()
	for _, format := range []string{"oci-archive", "docker-archive"} {
		p := filepath.Join(dir, format+".tar")
		s.Must(nil, "save", "--format", format, "-o", p, "rt:1")

		// skopeo: the raw config is ours, byte for byte (its digest is
		// the image ID), and the layers are listed.
		cfg := sh(t, "", "skopeo", "inspect", "--config", "--raw", format+":"+p)
		sum := sha256.Sum256([]byte(cfg))
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != id {
			t.Errorf("%s: skopeo's config hashes to %s, want %s", format, got, id)
		}
		var info struct{ Layers []string }
		if err := json.Unmarshal([]byte(sh(t, "", "skopeo", "inspect", format+":"+p)), &info); err != nil {
			t.Fatal(err)
		}
		if len(info.Layers) != 2 {
			t.Errorf("%s: skopeo sees %d layers, want 2", format, len(info.Layers))
		}
	}

	pm := newPodman(t)
	for _, format := range []string{"oci-archive", "docker-archive"} {
		out := pm.must("load", "-i", filepath.Join(dir, format+".tar"))
		if !strings.Contains(out, "rt:1") {
			t.Errorf("podman load of %s: %q", format, out)
		}
		ids := pm.must("images", "--no-trunc", "--format", "{{.ID}}")
		if !strings.Contains(ids, strings.TrimPrefix(id, "sha256:")) {
			t.Errorf("podman has %q after loading %s, want %s", ids, format, id)
		}
		out, err := pm.run("run", "--rm", "--network", "none", "--runtime", "runc", "localhost/rt:1", "sh", "-c", rtCheck)
		if err != nil {
			t.Fatal(err)
		}
		if out != rtWant {
			t.Errorf("rt:1 in podman (%s): %q, want %q", format, out, rtWant)
		}
		pm.must("rmi", "-af")
	}
}

// TestSaveLayoutInterop: an OCI layout written by `save --layout` is read
// by skopeo (inspect; copy to a dir: image and back, which loads with the
// same ID), unpacked by umoci into the tree the container showed when it
// was committed, and loaded and run by podman; the archives `save -o`
// writes unpack, through skopeo and umoci, into the same tree.
func TestSaveLayoutInterop(t *testing.T) {
	requireTools(t, "skopeo", "umoci")
	s := session(t)
	id := commitRoundTrip(t, s)
	dir := t.TempDir()

	// What the committed container showed, less its init layer (the
	// runtime's mount points and /etc files, which a commit leaves out).
	mnt := strings.TrimSpace(s.Must(nil, "mount", "rt").Stdout)
	view, err := fstest.Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	s.Must(nil, "umount", "rt")
	initTree, err := fstest.Snapshot(filepath.Join(s.Root, "containers", containerID(t, s, "rt"), "init"))
	if err != nil {
		t.Fatal(err)
	}
	for p := range initTree {
		delete(view, p)
	}

	layout := filepath.Join(dir, "layout")
	s.Must(nil, "save", "--layout", layout, "rt:1")
	ref := "oci:" + layout + ":rt:1"
	cfg := sh(t, "", "skopeo", "inspect", "--config", "--raw", ref)
	if sum := sha256.Sum256([]byte(cfg)); "sha256:"+hex.EncodeToString(sum[:]) != id {
		t.Errorf("skopeo reads a config that is not the image's (%s)", id)
	}
	var info struct{ Layers []string }
	if err := json.Unmarshal([]byte(sh(t, "", "skopeo", "inspect", ref)), &info); err != nil || len(info.Layers) != 2 {
		t.Errorf("skopeo inspect %s: %v layers, %v; want 2", ref, info.Layers, err)
	}
	// skopeo copies the layout to its dir: format (checking every blob's
	// digest) and back to a layout, which loads with the same image ID.
	sh(t, "", "skopeo", "copy", ref, "dir:"+filepath.Join(dir, "dir"))
	sh(t, "", "skopeo", "copy", "dir:"+filepath.Join(dir, "dir"), "oci:"+filepath.Join(dir, "back")+":rt:1")
	s2 := imagetest.NewSession(t)
	if out := s2.Must(nil, "load", "--layout", filepath.Join(dir, "back")).Stdout; out != "Loaded image: rt:1\n" {
		t.Errorf("load of skopeo's copy printed %q", out)
	}
	if got := strings.TrimSpace(s2.Must(nil, "images", "-q", "--no-trunc").Stdout); got != id {
		t.Errorf("skopeo's copy loads as %q, want %s", got, id)
	}

	// umoci unpacks the layout into what the container showed.
	unpack := func(layoutRef, name string) fstest.Tree {
		t.Helper()
		bundle := filepath.Join(dir, name)
		sh(t, "", "umoci", "unpack", "--image", layoutRef, bundle)
		tree, err := fstest.Snapshot(filepath.Join(bundle, "rootfs"))
		if err != nil {
			t.Fatal(err)
		}
		return tree
	}
	want := unpack(layout+":rt:1", "umoci-layout")
	got := maps.Clone(want)
	for p := range initTree {
		delete(got, p)
	}
	if d := fstest.Diff(view, got, fstest.IgnoreFields(fstest.FieldMtime)); len(d) > 0 {
		t.Errorf("umoci unpack of the saved layout differs from the committed container's view:\n%s", strings.Join(d, "\n"))
	}
	for p, e := range got {
		// A commit keeps whole seconds (tar headers without PAX times).
		if v, ok := view[p]; ok && e.Type != fstest.TypeSymlink && !v.Mtime.Truncate(time.Second).Equal(e.Mtime) {
			t.Errorf("%s: mtime %v after umoci unpack, %v in the container", p, e.Mtime, v.Mtime)
		}
	}
	if _, ok := got["etc/motd"]; ok || got["added"].Type != fstest.TypeFile || got["srv/old/a"].Type != "" {
		t.Error("umoci unpack: the commit's deletion, replaced directory or new file is missing")
	}

	// The archives hold the same image: skopeo turns each into a layout
	// and umoci unpacks it into the same tree.
	for _, format := range []string{"oci-archive", "docker-archive"} {
		archivePath := filepath.Join(dir, format+".tar")
		s.Must(nil, "save", "--format", format, "-o", archivePath, "rt:1")
		to := filepath.Join(dir, format+"-layout")
		sh(t, "", "skopeo", "copy", format+":"+archivePath, "oci:"+to+":rt")
		if d := fstest.Diff(want, unpack(to+":rt", "umoci-"+format)); len(d) > 0 {
			t.Errorf("%s: umoci unpack differs from the layout's:\n%s", format, strings.Join(d, "\n"))
		}
	}

	// podman loads the layout directory with the same image ID, and runs
	// it. (Podman 4.3 names the image after the directory's path and
	// fails on a path with capitals, such as t.TempDir()'s.)
	pm := newPodman(t)
	lower, err := os.MkdirTemp("", "unionctl-layout-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(lower) })
	if err := os.Rename(layout, filepath.Join(lower, "layout")); err != nil {
		t.Fatal(err)
	}
	pm.must("load", "-i", filepath.Join(lower, "layout"))
	if ids := pm.must("images", "--no-trunc", "--format", "{{.ID}}"); strings.TrimSpace(ids) != id {
		t.Errorf("podman has %q after loading the layout, want %s", ids, id)
	}
	out, err := pm.run("run", "--rm", "--network", "none", "--runtime", "runc", strings.TrimPrefix(id, "sha256:"), "sh", "-c", rtCheck)
	if err != nil {
		t.Fatal(err)
	}
	if out != rtWant {
		t.Errorf("the layout's image in podman: %q, want %q", out, rtWant)
	}
}
