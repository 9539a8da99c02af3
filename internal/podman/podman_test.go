package podman

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/mountinfo"
	"github.com/unionmount/unionmount/internal/rootless"
	"github.com/unionmount/unionmount/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fstest.RemoveBinary()
	if testImage.dir != "" {
		os.RemoveAll(testImage.dir)
	}
	os.Exit(code)
}

// testImageRef is the name the test image loads as.
const testImageRef = "localhost/unionmount-test:latest"

// testImage is the oci-archive of the test image, built once per process
// in a directory every user can read.
var testImage struct {
	once      sync.Once
	dir, path string
	err       error
}

func imageArchive(t *testing.T) string {
	t.Helper()
	testImage.once.Do(func() {
		bb, err := os.ReadFile(busyboxPath())
		if err != nil {
			testImage.err = fmt.Errorf("read busybox: %w", err)
			return
		}
		if testImage.dir, err = os.MkdirTemp("", "unionmount-podman-image-"); err == nil {
			err = os.Chmod(testImage.dir, 0o755)
		}
		if err != nil {
			testImage.err = err
			return
		}
		testImage.path = filepath.Join(testImage.dir, "image.tar")
		testImage.err = WriteOCIArchive(testImage.path, testImageRef, TestImageLayers(bb))
	})
	if testImage.err != nil {
		t.Fatalf("build the test image: %v", testImage.err)
	}
	return testImage.path
}

// busyboxPath is the busybox the image runs: it must be static (Debian's
// busybox-static), the image has no libc.
func busyboxPath() string {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/bin/busybox"
}

// requirePodman skips unless podman, runc, newuidmap (rootless) and a
// busybox for the test image are there.
func requirePodman(t *testing.T) {
	t.Helper()
	fstest.RequireFUSE(t)
	for _, tool := range []string{"podman", "runc", "newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skipf(t, "needs %s: %v (apt-get install podman runc uidmap)", tool, err)
		}
	}
	if _, err := os.Stat(busyboxPath()); err != nil {
		testenv.Skipf(t, "needs a static busybox for the test image (apt-get install busybox-static)")
	}
}

// publicDir returns a new directory every user can traverse: containers
// with a user namespace reach their root filesystem through it.
func publicDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// shortDir returns a new directory with a short path, owned by user if
// not nil, every user can traverse, removed after the test. Podman's
// storage must have a short path: with a run root much longer than
// /tmp/TestName1234567890/001, every container run waits 20 s for conmon
// (conmon's sockets and fifos live below it).
func shortDir(t *testing.T, user *rootless.User) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ump-")
	if err == nil {
		err = os.Chmod(d, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if user != nil {
		user.Chown(t, d)
	}
	return d
}

// programs returns unionmount (built for the test, copied where every
// user can run it) and, when installed, fuse-overlayfs, the reference.
func programs(t *testing.T) []Program {
	t.Helper()
	bin := filepath.Join(publicDir(t), "unionmount")
	b, err := os.ReadFile(fstest.Binary(t))
	if err == nil {
		err = os.WriteFile(bin, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	progs := []Program{{Name: "unionmount", Path: bin, FsType: "fuse.unionmount"}}
	if p, err := exec.LookPath("fuse-overlayfs"); err == nil {
		progs = append(progs, Program{Name: "fuse-overlayfs", Path: p, FsType: "fuse.fuse-overlayfs"})
	} else {
		t.Logf("fuse-overlayfs not installed: no reference run (apt-get install fuse-overlayfs)")
	}
	return progs
}

// outcome is one scenario's result for one program and mode.
type outcome struct {
	ok    bool
	notes []string
}

// report collects outcomes for the closing table.
type report struct {
	mu    sync.Mutex
	cells map[string]map[string]*outcome // scenario -> "mode program" -> outcome
	order []string                       // scenarios in the order they ran
	cols  []string
}

func (r *report) add(scenario, col string, o *outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cells == nil {
		r.cells = map[string]map[string]*outcome{}
	}
	if r.cells[scenario] == nil {
		r.cells[scenario] = map[string]*outcome{}
		r.order = append(r.order, scenario)
	}
	if !contains(r.cols, col) {
		r.cols = append(r.cols, col)
	}
	r.cells[scenario][col] = o
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (r *report) String() string {
	var b strings.Builder
	for _, s := range r.order {
		fmt.Fprintf(&b, "%s\n", s)
		for _, c := range r.cols {
			o := r.cells[s][c]
			if o == nil {
				fmt.Fprintf(&b, "    %-28s not run\n", c)
				continue
			}
			verdict := "ok"
			if !o.ok {
				verdict = "FAILED"
			}
			fmt.Fprintf(&b, "    %-28s %s\n", c, verdict)
			for _, n := range o.notes {
				fmt.Fprintf(&b, "        %s\n", n)
			}
		}
	}
	return b.String()
}

// check is the verdict of one scenario for one program. For unionmount
// an unmet expectation fails the test; for the reference it is recorded
// as a difference and reported.
type check struct {
	t      *testing.T
	strict bool
	out    outcome
}

func (c *check) expect(ok bool, format string, args ...any) bool {
	c.t.Helper()
	if !ok {
		c.out.ok = false
		msg := fmt.Sprintf(format, args...)
		c.out.notes = append(c.out.notes, "unexpected: "+msg)
		if c.strict {
			c.t.Errorf("%s", msg)
		} else {
			c.t.Logf("reference differs: %s", msg)
		}
	}
	return ok
}

func (c *check) note(format string, args ...any) {
	c.out.notes = append(c.out.notes, fmt.Sprintf(format, args...))
}

// podman runs podman and expects it to succeed; it returns its stdout.
func (c *check) podman(e *Env, args ...string) (string, bool) {
	c.t.Helper()
	r := e.Podman(c.t, args...)
	short := args
	if len(short) > 4 {
		short = short[:4]
	}
	if !c.expect(r.Err == nil, "podman %s: exit %d: %s", strings.Join(short, " "), r.ExitCode(), lastLines(r.Stderr, 3)) {
		return r.Stdout, false
	}
	return r.Stdout, true
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// field returns the value of the first output line "key: value".
func field(out, key string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "<no " + key + " line>"
}

// mode is root or rootless podman.
type mode struct {
	name string
	user *rootless.User // nil for root
	// uidmap is a --uidmap/--gidmap range for the uidmapping= scenario,
	// squash one that maps a single id (squash_to_uid=/squash_to_gid=).
	uidmap, squash string
	// uidmapOpts and squashOpts are the id options containers-storage
	// sends the mount program for them.
	uidmapOpts, squashOpts string
}

// hostUID is the host id the upper stores for layer id id.
func (m mode) hostUID(id int) int {
	if m.user == nil {
		return id
	}
	return m.user.HostUID(id)
}

func (m mode) hostGID(id int) int {
	if m.user == nil {
		return id
	}
	return m.user.HostGID(id)
}

// TestPodman runs podman end to end with unionmount as the overlay
// driver's mount_program, as root and as a rootless user, and runs the same
// scenarios with fuse-overlayfs for reference: the closing log lists each
// scenario's result for both, and how they differ.
func TestPodman(t *testing.T) {
	requirePodman(t)
	archive := imageArchive(t)
	progs := programs(t)
	u := rootless.NewUser(t)
	modes := []mode{
		{name: "root", uidmap: "0:200000:65536", squash: "0:200000:1",
			uidmapOpts: "uidmapping=:0:200000:65536,gidmapping=:0:200000:65536",
			squashOpts: "squash_to_uid=200000,squash_to_gid=200000"},
		{name: "rootless", user: u, uidmap: "0:1:65536", squash: "0:0:1",
			uidmapOpts: "uidmapping=:0:1:65536,gidmapping=:0:1:65536",
			squashOpts: "squash_to_uid=0,squash_to_gid=0"},
	}
	var rep report
	for _, m := range modes {
		for _, p := range progs {
			col := m.name + " " + p.Name
			t.Run(m.name+"/"+p.Name, func(t *testing.T) {
				e := NewEnv(t, shortDir(t, m.user), p, m.user)
				c := &check{t: t, strict: p.Name == "unionmount", out: outcome{ok: true}}
				if _, ok := c.podman(e, "load", "--quiet", "--input", archive); !ok {
					t.Fatalf("podman load failed")
				}
				for _, s := range scenarios {
					c := &check{t: t, strict: p.Name == "unionmount", out: outcome{ok: true}}
					t.Run(s.name, func(t *testing.T) {
						c.t = t
						s.run(c, e, m)
					})
					rep.add(s.name, col, &c.out)
				}
			})
		}
	}
	t.Logf("podman end to end, unionmount and fuse-overlayfs as mount_program:\n%s", rep.String())
}

var scenarios = []struct {
	name string
	run  func(c *check, e *Env, m mode)
}{
	{"image layers unpacked for a mount_program: AUFS .wh. files", unpackedLayers},
	{"run --rm: read, write, delete; whiteout and opaque dir of the image", runRm},
	{"commit of a container that deleted a file and replaced a dir", commit},
	{"--uidmap (uidmapping=/gidmapping=)", uidmap},
	{"--uidmap of one id (squash_to_uid=/squash_to_gid=)", squash},
	{"podman image mount (lowerdir only, read-only)", imageMount},
}

// fsLine prints the root filesystem's type inside a container.
const fsLine = `echo "fs: $(grep ' / / ' /proc/self/mountinfo | head -1 | sed 's/.* - \([^ ]*\) .*/\1/')"` + "\n"

func runRm(c *check, e *Env, m mode) {
	out, ok := c.podman(e, "run", "--rm", "--network", "none", testImageRef, "sh", "-euc", fsLine+`
echo "keep: $(cat /data/keep)"
echo "data: $(ls /data | tr '\n' ' ')"
echo "dir: $(ls -A /dir | tr '\n' ' ')"
test ! -e /data/gone && echo "gone: absent"
echo w > /data/w
rm /data/keep
mkdir /dir/sub2
rm /dir/fresh
echo "after: $(ls /data | tr '\n' ' ')| $(ls -A /dir | tr '\n' ' ')"
echo "w: $(cat /data/w)"
`)
	if !ok {
		return
	}
	c.expect(field(out, "fs") == e.Program.FsType, "root filesystem is %q, want %q (is mount_program used?)", field(out, "fs"), e.Program.FsType)
	c.expect(field(out, "keep") == "keep v2", "/data/keep reads %q, want the top layer's %q", field(out, "keep"), "keep v2")
	c.expect(field(out, "data") == "keep new owned", "ls /data = %q, want %q (gone whited out)", field(out, "data"), "keep new owned")
	c.expect(field(out, "dir") == "fresh", "ls -A /dir = %q, want %q (opaque in the top layer)", field(out, "dir"), "fresh")
	c.expect(field(out, "gone") == "absent", "/data/gone visible")
	c.expect(field(out, "after") == "new owned w | sub2", "after the writes: %q, want %q", field(out, "after"), "new owned w | sub2")
	c.expect(field(out, "w") == "w", "/data/w reads %q", field(out, "w"))
}

// upperMarkers describes how an upper dir holds a whiteout at p and an
// opaque directory at d.
func upperMarkers(upper, p, d string) (wh, opq string) {
	var st unix.Stat_t
	switch {
	case unix.Lstat(filepath.Join(upper, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0:
		wh = "char 0/0"
	case unix.Lstat(filepath.Join(upper, filepath.Dir(p), ".wh."+filepath.Base(p)), &st) == nil:
		wh = ".wh. file"
	default:
		wh = "none"
	}
	var found []string
	for _, x := range []string{"trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque"} {
		buf := make([]byte, 16)
		if n, err := unix.Lgetxattr(filepath.Join(upper, d), x, buf); err == nil {
			found = append(found, x+"="+string(buf[:n]))
		}
	}
	if unix.Lstat(filepath.Join(upper, d, ".wh..wh..opq"), &st) == nil {
		found = append(found, ".wh..wh..opq")
	}
	if len(found) == 0 {
		return wh, "none"
	}
	return wh, strings.Join(found, " ")
}

func commit(c *check, e *Env, m mode) {
	if _, ok := c.podman(e, "run", "--name", "c1", "--network", "none", testImageRef, "sh", "-euc", `
rm /data/keep
rm -r /dir
mkdir /dir
echo mine > /dir/mine
echo x > /data/x
`); !ok {
		return
	}
	defer e.Podman(c.t, "rm", "--force", "c1")
	upper, ok := c.podman(e, "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", "c1")
	if !ok {
		return
	}
	wh, opq := upperMarkers(strings.TrimSpace(upper), "data/keep", "dir")
	c.note("container upper: whiteout %s; replaced dir: %s", wh, opq)
	wantOpq := "trusted.overlay.opaque=y"
	if m.user != nil {
		wantOpq = "user.overlay.opaque=y"
	}
	if c.strict {
		c.expect(wh == "char 0/0", "whiteout of /data/keep in the upper is %s, want char 0/0", wh)
		c.expect(opq == wantOpq, "replaced /dir in the upper is marked %s, want %s", opq, wantOpq)
	}

	if _, ok := c.podman(e, "commit", "--quiet", "c1", "localhost/committed:latest"); !ok {
		return
	}
	defer e.Podman(c.t, "rmi", "--force", "localhost/committed:latest")
	checkCommittedLayer(c, e)
	out, ok := c.podman(e, "run", "--rm", "--network", "none", "localhost/committed:latest", "sh", "-euc", `
echo "data: $(ls -A /data | tr '\n' ' ')"
echo "dir: $(ls -A /dir | tr '\n' ' ')"
echo "mine: $(cat /dir/mine)"
`)
	if !ok {
		return
	}
	c.expect(field(out, "data") == "new owned x", "committed image: ls -A /data = %q, want %q", field(out, "data"), "new owned x")
	c.expect(field(out, "dir") == "mine", "committed image: ls -A /dir = %q, want %q (the replaced dir stays opaque)", field(out, "dir"), "mine")
	c.expect(field(out, "mine") == "mine", "committed image: /dir/mine reads %q", field(out, "mine"))
}

// checkCommittedLayer saves the committed image as an OCI layout and
// checks its top layer, the one podman commit made. With a mount_program
// containers-storage makes that layer by comparing the container's merged
// tree with its image's (its "naive diff"), not from the upper's markers:
// the deleted /data/keep becomes data/.wh.keep, and the replaced /dir is
// not an opaque dir (no .wh..wh..opq) but a dir whose old entry is
// whited out (dir/.wh.fresh) beside the new one. Either way the image
// shows what the container showed (the run below checks that).
func checkCommittedLayer(c *check, e *Env) {
	saved := filepath.Join(e.Dir, fmt.Sprintf("saved-%d", len(e.MountProgramCalls(c.t))))
	if _, ok := c.podman(e, "save", "--format", "oci-dir", "--output", saved, "localhost/committed:latest"); !ok {
		return
	}
	defer os.RemoveAll(saved)
	entries, err := topLayerEntries(saved)
	if !c.expect(err == nil, "read the committed layer: %v", err) {
		return
	}
	for _, want := range []string{"data/.wh.keep file", "data/x file", "dir/.wh.fresh file", "dir/mine file"} {
		c.expect(contains(entries, want), "committed layer lacks %q: %q", want, entries)
	}
	for _, bad := range []string{"data/keep file", "dir/fresh file", "dir/.wh..wh..opq file"} {
		c.expect(!contains(entries, bad), "committed layer holds %q: %q", bad, entries)
	}
	c.note("committed layer: %s", strings.Join(entries, ", "))
}

// topLayerEntries lists the entries of the top layer of the one image in
// the OCI layout dir, as "NAME TYPE" (file, dir, symlink, char, other).
func topLayerEntries(dir string) ([]string, error) {
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	var manifest struct {
		Layers []descriptor `json:"layers"`
	}
	blob := func(digest string) string {
		return filepath.Join(dir, "blobs", strings.Replace(digest, ":", "/", 1))
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err == nil {
		err = json.Unmarshal(b, &index)
	}
	if err == nil && len(index.Manifests) != 1 {
		err = fmt.Errorf("index.json lists %d manifests, want 1", len(index.Manifests))
	}
	if err == nil {
		b, err = os.ReadFile(blob(index.Manifests[0].Digest))
	}
	if err == nil {
		err = json.Unmarshal(b, &manifest)
	}
	if err == nil && len(manifest.Layers) == 0 {
		err = errors.New("the manifest lists no layers")
	}
	if err != nil {
		return nil, err
	}
	f, err := os.Open(blob(manifest.Layers[len(manifest.Layers)-1].Digest))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		defer gz.Close()
		r = gz
	}
	var out []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		kind := "other"
		switch h.Typeflag {
		case tar.TypeReg:
			kind = "file"
		case tar.TypeDir:
			kind = "dir"
		case tar.TypeSymlink:
			kind = "symlink"
		case tar.TypeChar:
			kind = "char"
		}
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")+" "+kind)
	}
	return out, nil
}

// unpackedLayers checks how containers-storage unpacked the test image's
// layers, which the mount program gets as its lowers: with a mount_program
// configured it keeps the OCI whiteouts as they are in the tar (AUFS .wh.
// files), where the kernel driver would make char 0/0 devices and opaque
// xattrs. runRm checks that the mount shows them right.
func unpackedLayers(c *check, e *Env, m mode) {
	out, ok := c.podman(e, "image", "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}:{{.GraphDriver.Data.LowerDir}}", testImageRef)
	if !ok {
		return
	}
	dirs := strings.Split(strings.TrimSpace(out), ":") // top first
	if !c.expect(len(dirs) == 3, "the image has layer dirs %q, want 3", dirs) {
		return
	}
	top, middle := dirs[0], dirs[1]
	for _, x := range []struct{ root, rel, want string }{
		{middle, "data/.wh.gone", "file 0 bytes"},
		{middle, "data/gone", "missing"},
		{top, "dir/.wh..wh..opq", "file 0 bytes"},
		{top, "dir", "dir, no overlay xattr"},
	} {
		got := describeEntry(x.root, x.rel)
		c.expect(got == x.want, "layer %s: %s is %s, want %s", filepath.Base(filepath.Dir(x.root)), x.rel, got, x.want)
	}
	c.note("layer 2: data/.wh.gone %s; layer 3: dir/.wh..wh..opq %s", describeEntry(middle, "data/.wh.gone"), describeEntry(top, "dir/.wh..wh..opq"))
}

// describeEntry says what root/rel is on disk: "missing", "file N bytes",
// "char MAJOR/MINOR", or "dir" with the overlay xattrs it carries.
func describeEntry(root, rel string) string {
	p := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "missing"
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return fmt.Sprintf("file %d bytes", st.Size)
	case unix.S_IFCHR:
		return fmt.Sprintf("char %d/%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFDIR:
		buf := make([]byte, 4096)
		n, _ := unix.Llistxattr(p, buf)
		var xs []string
		for _, x := range strings.Split(string(buf[:n]), "\x00") {
			if strings.Contains(x, "overlay") {
				xs = append(xs, x)
			}
		}
		if len(xs) == 0 {
			return "dir, no overlay xattr"
		}
		return "dir with " + strings.Join(xs, " ")
	}
	return fmt.Sprintf("mode %o", st.Mode)
}

// ownerScript changes owners in a container and prints them.
const ownerScript = `
echo "map: $(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //' | tr '\n' ';')"
echo "before: $(stat -c '%n=%u:%g' /data/keep /data/owned | tr '\n' ' ')"
echo y > /data/y
chown 1000:1000 /data/y
echo z > /data/z
chown 1000:1000 /data/keep
echo "after: $(stat -c '%n=%u:%g' /data/y /data/z /data/keep /data/owned | tr '\n' ' ')"
`

// upperOwners reads the owners of names in a container's upper on the host.
func upperOwners(upper string, names ...string) string {
	var out []string
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(upper, n), &st); err != nil {
			out = append(out, n+"=missing")
			continue
		}
		out = append(out, fmt.Sprintf("%s=%d:%d", n, st.Uid, st.Gid))
	}
	return strings.Join(out, " ")
}

// mountOptions returns the -o strings of the mount program's calls after
// the first skip.
func mountOptions(e *Env, t *testing.T, skip int) []string {
	var opts []string
	calls := e.MountProgramCalls(t)
	if skip > len(calls) {
		skip = len(calls)
	}
	for _, call := range calls[skip:] {
		for i := 0; i+1 < len(call); i++ {
			if call[i] == "-o" {
				opts = append(opts, call[i+1])
			}
		}
	}
	return opts
}

// idOptions keeps the id options of an -o string, in order.
func idOptions(o string) string {
	var out []string
	for _, x := range strings.Split(o, ",") {
		for _, p := range []string{"uidmapping=", "gidmapping=", "squash_to_"} {
			if strings.HasPrefix(x, p) {
				out = append(out, x)
			}
		}
	}
	return strings.Join(out, ",")
}

// checkIDOptions checks that containers-storage ran the mount program,
// since call skip, with a writable mount (upperdir=) whose id options
// are want.
func checkIDOptions(c *check, e *Env, skip int, want string) {
	opts := mountOptions(e, c.t, skip)
	var got []string
	for _, o := range opts {
		if strings.Contains(o, "upperdir=") {
			got = append(got, idOptions(o))
		}
	}
	c.expect(len(got) == 1 && got[0] == want, "id options podman sent the mount program: %q, want [%q]; its -o strings: %q", got, want, opts)
	c.note("id options podman sent: %q", got)
}

func uidmap(c *check, e *Env, m mode) {
	calls := len(e.MountProgramCalls(c.t))
	out, ok := c.podman(e, "run", "--name", "c2", "--network", "none",
		"--uidmap", m.uidmap, "--gidmap", m.uidmap, testImageRef, "sh", "-euc", fsLine+ownerScript)
	defer e.Podman(c.t, "rm", "--force", "c2")
	// Checked first: the mount comes before what may fail in the run.
	checkIDOptions(c, e, calls, m.uidmapOpts)
	if !ok {
		return
	}
	c.expect(field(out, "fs") == e.Program.FsType, "root filesystem is %q, want %q", field(out, "fs"), e.Program.FsType)
	c.expect(field(out, "before") == "/data/keep=0:0 /data/owned=1000:1000",
		"owners in the container: %q, want the image's (keep 0:0, owned 1000:1000)", field(out, "before"))
	c.expect(field(out, "after") == "/data/y=1000:1000 /data/z=0:0 /data/keep=1000:1000 /data/owned=1000:1000",
		"owners after create and chown: %q", field(out, "after"))
	upper, ok := c.podman(e, "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", "c2")
	if !ok {
		return
	}
	// With a mount_program, containers-storage keeps the layers in the
	// image's ids and the program shifts them; the upper holds unshifted
	// ids (for a rootless user, ids of its user namespace).
	got := upperOwners(strings.TrimSpace(upper), "data/y", "data/z", "data/keep")
	want := fmt.Sprintf("data/y=%d:%d data/z=%d:%d data/keep=%d:%d",
		m.hostUID(1000), m.hostGID(1000), m.hostUID(0), m.hostGID(0), m.hostUID(1000), m.hostGID(1000))
	c.expect(got == want, "owners in the upper on the host: %s, want %s", got, want)
	c.note("upper on the host: %s", got)
}

func squash(c *check, e *Env, m mode) {
	calls := len(e.MountProgramCalls(c.t))
	out, ok := c.podman(e, "run", "--rm", "--network", "none",
		"--uidmap", m.squash, "--gidmap", m.squash, testImageRef, "sh", "-euc", fsLine+`
echo "owners: $(stat -c '%n=%u:%g' /data/keep /data/owned | tr '\n' ' ')"
echo w > /data/w
echo "w: $(stat -c '%u:%g' /data/w) $(cat /data/w)"
`)
	if !ok {
		return
	}
	c.expect(field(out, "fs") == e.Program.FsType, "root filesystem is %q, want %q", field(out, "fs"), e.Program.FsType)
	c.expect(field(out, "owners") == "/data/keep=0:0 /data/owned=0:0",
		"owners with one id mapped: %q, want everything squashed to 0:0", field(out, "owners"))
	c.expect(field(out, "w") == "0:0 w", "new file: %q", field(out, "w"))
	checkIDOptions(c, e, calls, m.squashOpts)
}

func imageMount(c *check, e *Env, m mode) {
	script := `p=$(podman image mount ` + testImageRef + `)
echo "data: $(ls -A "$p/data" | tr '\n' ' ')"
echo "dir: $(ls -A "$p/dir" | tr '\n' ' ')"
echo "keep: $(cat "$p/data/keep")"
echo "mount: $(grep " $p " /proc/self/mountinfo)"
if touch "$p/x" 2>/dev/null; then echo "write: allowed"; else echo "write: refused"; fi
podman image unmount ` + testImageRef + `
`
	var r rootless.Result
	if m.user != nil {
		r = e.Run(c.t, "podman", "unshare", "sh", "-euc", script)
	} else {
		r = e.Run(c.t, "sh", "-euc", script)
	}
	if !c.expect(r.Err == nil, "podman image mount: exit %d: %s", r.ExitCode(), lastLines(r.Stderr, 3)) {
		return
	}
	out := r.Stdout
	c.expect(field(out, "data") == "keep new owned", "image mount: ls -A data = %q", field(out, "data"))
	c.expect(field(out, "dir") == "fresh", "image mount: ls -A dir = %q", field(out, "dir"))
	c.expect(field(out, "keep") == "keep v2", "image mount: data/keep reads %q", field(out, "keep"))
	mnt := describeMount(field(out, "mount"))
	c.expect(strings.HasPrefix(mnt, e.Program.FsType+" "), "image mount: %q, want a %s mount", mnt, e.Program.FsType)
	c.expect(field(out, "write") == "refused", "image mount: a write was %s", field(out, "write"))
	c.note("mount (type, mount options, superblock options): %s", mnt)
}

// describeMount turns a /proc/self/mountinfo line into "TYPE MOUNT-OPTIONS
// SUPER-OPTIONS".
func describeMount(line string) string {
	mounts, _ := mountinfo.Parse(strings.NewReader(line))
	if len(mounts) != 1 || mounts[0].FSType == "" {
		return line
	}
	m := mounts[0]
	return m.FSType + " " + m.Options + " " + m.SuperOptions
}

// TestPodmanHostErrors takes away what rootless podman needs of the host,
// one thing at a time, and checks what the user is told (the messages
// docs/rootless.md quotes).
func TestPodmanHostErrors(t *testing.T) {
	requirePodman(t)
	archive := imageArchive(t)
	um := programs(t)[0]

	t.Run("dev fuse 0600", func(t *testing.T) {
		u := rootless.NewUser(t)
		e := NewEnv(t, shortDir(t, u), um, u)
		e.FuseMode = 0o600
		if r := e.Podman(t, "load", "--quiet", "--input", archive); r.Err != nil {
			t.Fatalf("podman load:\n%s", r)
		}
		r := e.Podman(t, "run", "--rm", "--network", "none", testImageRef, "true")
		want := "unionmount: cannot open /dev/fuse (permission denied): make it mode 0666"
		if r.Err == nil || !strings.Contains(r.Stderr, want) {
			t.Fatalf("want podman run to fail with %q:\n%s", want, r)
		}
		t.Logf("podman says:\n%s", r.Stderr)
	})

	t.Run("no subordinate ids", func(t *testing.T) {
		u := rootless.NewUser(t)
		u.DropSubIDs(t)
		e := NewEnv(t, shortDir(t, u), um, u)
		r := e.Podman(t, "load", "--quiet", "--input", archive)
		for _, want := range []string{
			`no subuid ranges found for user \"` + u.Name + `\" in /etc/subuid`, // logrus escapes the quotes
			"potentially insufficient UIDs or GIDs available in user namespace (requested 1000:1000 for /data/owned)",
		} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("want podman load to say %q:\n%s", want, r)
			}
		}
		t.Logf("podman says (exit %d):\n%s", r.ExitCode(), r.Stderr)
	})
}
