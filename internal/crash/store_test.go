// Crash consistency of the image store: `unionctl load` and
// `unionctl commit` are killed with SIGKILL at seeded points, and at the
// moments they create their staging directory and rename a layer or an
// image into place (found with inotify). Right after each kill the store
// must be in the state from before the operation or after it: `unionctl
// images` lists no such image, or the complete one (every layer there,
// with the content of an uninterrupted run's), and no half-written layer
// or image directory is in sight. Then the same command runs again and
// must succeed, after which the store must equal a reference store that
// ran it once without interruption: same images, history and inspect
// output, same layer contents, same files, and nothing temporary or
// orphaned left anywhere.
//
// The default run uses 12 seeded kill points per command; the long mode:
//
//	go test ./internal/crash -run 'TestKill.*(Load|Commit)' -crash.storepoints 200 -timeout 1h
package crash

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image/archive"
	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/internal/fstest"
)

var storePoints = flag.Int("crash.storepoints", 12, "seeded kill points per unionctl command (load, commit); the long mode uses 200")

// The names the test archive gives its image, and the name commits get.
var (
	archiveNames  = []string{"crash/store:1", "crash/store:latest"}
	committedName = "crash/committed:1"
)

// TestKillDuringLoad kills `unionctl load -i ARCHIVE` into an empty store.
func TestKillDuringLoad(t *testing.T) {
	fstest.RequireFUSE(t)
	base := tempDir(t)
	arch := buildArchive(t, base)

	refRoot := filepath.Join(base, "ref")
	start := time.Now()
	refOut := ctl(t, refRoot).Must(nil, "load", "-i", arch).Stdout
	normal := time.Since(start)
	// The first run fills the page cache: time a second one too, and
	// spread the kill points over the shorter.
	start = time.Now()
	ctl(t, filepath.Join(base, "timing")).Must(nil, "load", "-i", arch)
	normal = min(normal, time.Since(start))
	os.RemoveAll(filepath.Join(base, "timing"))
	ref := newReference(t, refRoot, "")
	if len(ref.images) != 1 {
		t.Fatalf("reference store: %d images after the load, want 1: %v", len(ref.images), ref.images)
	}
	img := ref.images[0]
	if !slices.Equal(ref.names[img], sorted(archiveNames)) || len(ref.layerIDs(img)) != 4 {
		t.Fatalf("reference store: image %s named %q with %d layers, want the names %q and 4 layers",
			img, ref.names[img], len(ref.layerIDs(img)), archiveNames)
	}
	t.Logf("an uninterrupted load of the %d-layer archive takes %v", len(ref.layerIDs(img)), normal.Round(time.Millisecond))

	tally := map[string]int{}
	check := func(t *testing.T, root string, k killed) {
		v := viewStore(t, root)
		phase := k.phase(v, storeView{}, len(ref.layerIDs(img)))
		tally[phase]++
		t.Logf("%s: %s", k.what, phase)

		// Right after the kill: before or after, nothing in between.
		ref.checkKilledStore(t, root, v, nil)
		listed := listImages(t, root)
		switch names, ok := listed[img]; {
		case len(listed) == 0: // before
		case len(listed) == 1 && ok:
			ref.checkImage(t, root, img, img, names, ref.names[img], &v)
		default:
			t.Errorf("after the kill `unionctl images` lists %v; want nothing or the image %s alone", listed, shortHex(img))
		}

		// The next run cleans up and completes.
		if out := ctl(t, root).Must(nil, "load", "-i", arch).Stdout; out != refOut {
			t.Errorf("second load printed %q, want %q as an uninterrupted load", out, refOut)
		}
		listed = listImages(t, root)
		if len(listed) != 1 || listed[img] == nil {
			t.Fatalf("after the second load `unionctl images` lists %v; want exactly the image %s", listed, shortHex(img))
		}
		ref.checkImage(t, root, img, img, listed[img], ref.names[img], nil)
		ref.checkClean(t, root, ref.images)
	}

	rng := rand.New(rand.NewPCG(*seed, 20))
	for i := 0; i < *storePoints; i++ {
		delay := time.Duration(rng.Int64N(int64(normal)))
		t.Run(fmt.Sprintf("delay-%02d", i), func(t *testing.T) {
			root := filepath.Join(base, fmt.Sprintf("delay-%02d", i))
			check(t, root, runKilled(t, root, []string{"load", "-i", arch}, afterDelay(delay)))
			os.RemoveAll(root)
		})
	}
	for _, ev := range loadEvents(len(ref.layerIDs(img))) {
		t.Run(ev.name(), func(t *testing.T) {
			root := filepath.Join(base, ev.name())
			ctl(t, root).Must(nil, "images") // the store's directories, to watch
			check(t, root, runKilled(t, root, []string{"load", "-i", arch}, atEvent(t, root, ev)))
			os.RemoveAll(root)
		})
	}
	logTally(t, "load", tally)
}

// TestKillDuringCommit kills `unionctl commit` of a container whose upper
// holds a few MiB of new files, a copied-up file, a deleted lower file
// and a replaced directory.
func TestKillDuringCommit(t *testing.T) {
	fstest.RequireFUSE(t)
	base := tempDir(t)
	arch := buildArchive(t, base)
	um := fstest.Binary(t)

	// The template: the image loaded, a container changed through its
	// mounted union, unmounted again. Every kill point works on a copy.
	tmpl := filepath.Join(base, "template")
	s := ctl(t, tmpl)
	s.Unionmount = um
	s.Must(nil, "load", "-q", "-i", arch)
	s.Must(nil, "create", "--name", "c1", archiveNames[0])
	mnt := strings.TrimSpace(s.Must(nil, "mount", "c1").Stdout)
	changeContainer(t, mnt)
	s.Must(nil, "umount", "c1")
	if ok, _ := fstest.IsMountpoint(mnt); ok {
		t.Fatalf("%s still mounted after unionctl umount", mnt)
	}
	c1 := containerID(t, tmpl, "c1") // the same in every copy
	upperTree := snapshot(t, filepath.Join(tmpl, "containers", c1, "upper"))
	baseImg := onlyImage(t, tmpl)
	pre := viewStore(t, tmpl)

	refRoot := filepath.Join(base, "ref")
	normal := time.Duration(1<<63 - 1)
	for _, root := range []string{filepath.Join(base, "timing"), refRoot} {
		copyStore(t, tmpl, root)
		start := time.Now()
		ctl(t, root).Must(nil, "commit", "-m", "crash test", "c1", committedName)
		normal = min(normal, time.Since(start))
	}
	os.RemoveAll(filepath.Join(base, "timing"))
	ref := newReference(t, refRoot, baseImg)
	var newImg string
	for _, id := range ref.images {
		if id != baseImg {
			newImg = id
		}
	}
	if len(ref.images) != 2 || newImg == "" || !slices.Equal(ref.names[newImg], []string{committedName}) ||
		len(ref.layerIDs(newImg)) != len(ref.layerIDs(baseImg))+1 {
		t.Fatalf("reference store after the commit: images %v; want %s and a new image named %s with one more layer",
			ref.names, shortHex(baseImg), committedName)
	}
	top := ref.layerIDs(newImg)[len(ref.layerIDs(newImg))-1]
	t.Logf("an uninterrupted commit of the container (new layer %s, %d bytes) takes %v",
		shortHex(top), ref.layerSize(top), normal.Round(time.Millisecond))

	tally := map[string]int{}
	check := func(t *testing.T, root string, k killed) {
		v := viewStore(t, root)
		phase := k.phase(v, pre, 1)
		tally[phase]++
		t.Logf("%s: %s", k.what, phase)

		ref.checkKilledStore(t, root, v, []string{baseImg})
		listed := listImages(t, root)
		if !slices.Equal(listed[baseImg], ref.names[baseImg]) {
			t.Errorf("after the kill the image %s is listed with the names %q; want %q (a commit must not touch it)",
				shortHex(baseImg), listed[baseImg], ref.names[baseImg])
		}
		var earlier string
		for id, names := range listed {
			switch {
			case id == baseImg:
			case earlier != "":
				t.Errorf("after the kill `unionctl images` lists %v; want %s and at most one new image", listed, shortHex(baseImg))
			default:
				earlier = id
				ref.checkImage(t, root, newImg, id, names, []string{committedName}, &v)
			}
		}
		if d := fstest.Diff(upperTree, snapshot(t, filepath.Join(root, "containers", c1, "upper"))); len(d) > 0 {
			t.Errorf("the killed commit changed the container's upper:\n%s", strings.Join(d, "\n"))
		}

		out := strings.TrimSpace(ctl(t, root).Must(nil, "commit", "-m", "crash test", "c1", committedName).Stdout)
		listed = listImages(t, root)
		id := digest.Digest(out).Encoded()
		if !slices.Equal(listed[id], []string{committedName}) {
			t.Fatalf("the second commit printed %q, and `unionctl images` lists %v; want that image named %s",
				out, listed, committedName)
		}
		ref.checkImage(t, root, newImg, id, listed[id], []string{committedName}, nil)
		want := map[string]bool{baseImg: true, id: true}
		if earlier != "" {
			// The first commit completed: the second made another
			// image and took the name from it, as docker does.
			want[earlier] = true
			ref.checkImage(t, root, newImg, earlier, listed[earlier], nil, nil)
		}
		if len(listed) != len(want) {
			t.Errorf("after the second commit `unionctl images` lists %v; want %d images (%s, %s and the one the killed commit finished, if any)",
				listed, len(want), shortHex(baseImg), shortHex(id))
		}
		ref.checkClean(t, root, slices.Sorted(maps.Keys(want)))
	}

	rng := rand.New(rand.NewPCG(*seed, 21))
	for i := 0; i < *storePoints; i++ {
		delay := time.Duration(rng.Int64N(int64(normal)))
		t.Run(fmt.Sprintf("delay-%02d", i), func(t *testing.T) {
			root := filepath.Join(base, fmt.Sprintf("delay-%02d", i))
			copyStore(t, tmpl, root)
			check(t, root, runKilled(t, root, []string{"commit", "-m", "crash test", "c1", committedName}, afterDelay(delay)))
			os.RemoveAll(root)
		})
	}
	for _, ev := range commitEvents() {
		t.Run(ev.name(), func(t *testing.T) {
			root := filepath.Join(base, ev.name())
			copyStore(t, tmpl, root)
			check(t, root, runKilled(t, root, []string{"commit", "-m", "crash test", "c1", committedName}, atEvent(t, root, ev)))
			os.RemoveAll(root)
		})
	}
	logTally(t, "commit", tally)
}

// tempDir is t.TempDir, with a cleanup (which runs before the directory
// is removed) that unmounts whatever a failed test left mounted in it.
func tempDir(t *testing.T) string {
	dir := t.TempDir()
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	t.Cleanup(func() {
		for _, mp := range fstest.MountsUnder(dir) {
			t.Logf("%s left mounted: unmounting it", mp)
			if out, err := exec.Command("fusermount3", "-u", mp).CombinedOutput(); err != nil {
				t.Logf("fusermount3 -u %s: %v %s; detaching it", mp, err, bytes.TrimSpace(out))
				if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
					t.Errorf("umount -l %s: %v", mp, err)
				}
			}
		}
	})
	return dir
}

func ctl(t *testing.T, root string) *imagetest.Session {
	return &imagetest.Session{T: t, Bin: imagetest.Unionctl(t), Root: root}
}

// buildArchive writes an oci-archive of a four-layer image, about 12 MiB:
// gzip and plain layers, regular files of many sizes, a hard link, a
// symlink, a FIFO, setuid and private files, an xattr, whiteouts of a file
// and of a directory, and an opaque directory.
func buildArchive(t *testing.T, dir string) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(*seed, 22))
	random := func(n int) []byte {
		b := make([]byte, n+8)
		for i := 0; i < n; i += 8 {
			binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
		}
		return b[:n]
	}
	type E = imagetest.Entry
	l1 := []E{
		{Name: "bin/", Type: tar.TypeDir},
		{Name: "bin/tool", Body: []byte("#!/bin/sh\necho tool\n"), Mode: 0o755},
		{Name: "bin/suid", Body: []byte("suid"), Mode: 0o4755},
		{Name: "bin/sh", Type: tar.TypeSymlink, Link: "tool"},
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/passwd", Body: []byte("root:x:0:0::/root:/bin/sh\n")},
		{Name: "etc/motd", Body: []byte("hello\n")},
		{Name: "etc/secret", Body: []byte("secret\n"), Mode: 0o600, UID: 1000, GID: 1000},
		{Name: "run/", Type: tar.TypeDir},
		{Name: "run/fifo", Type: tar.TypeFifo},
		{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		{Name: "data/", Type: tar.TypeDir},
		{Name: "data/big1", Body: random(4 << 20)},
		{Name: "data/hard", Type: tar.TypeLink, Link: "data/big1"},
		{Name: "data/gone/", Type: tar.TypeDir},
		{Name: "data/gone/x", Body: []byte("x")},
		{Name: "data/many/", Type: tar.TypeDir},
		{Name: "srv/", Type: tar.TypeDir},
		{Name: "srv/old/", Type: tar.TypeDir},
		{Name: "srv/old/a", Body: []byte("a\n")},
		{Name: "srv/old/b", Body: []byte("b\n")},
	}
	for i := 0; i < 300; i++ {
		l1 = append(l1, E{Name: fmt.Sprintf("data/many/f%03d", i), Body: random(rng.IntN(8 << 10))})
	}
	l2 := []E{
		{Name: "data/", Type: tar.TypeDir},
		{Name: "data/big2", Body: random(4 << 20)},
		{Name: "data/tagged", Body: []byte("tagged"), Xattrs: map[string]string{"user.crash": "yes"}},
		{Name: "data/.wh.gone"},
		{Name: "data/many/", Type: tar.TypeDir},
		{Name: "data/many/.wh.f007"},
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/.wh.motd"},
	}
	l3 := []E{
		{Name: "data/", Type: tar.TypeDir},
		{Name: "data/big1", Body: random(3 << 20)},
		{Name: "srv/", Type: tar.TypeDir},
		{Name: "srv/old/", Type: tar.TypeDir},
		{Name: "srv/old/.wh..wh..opq"},
		{Name: "srv/old/c", Body: []byte("c\n")},
	}
	l4 := []E{
		{Name: "app/", Type: tar.TypeDir},
		{Name: "app/version", Body: []byte("4\n")},
		{Name: "app/current", Type: tar.TypeSymlink, Link: "version"},
	}
	created := imagetest.T0
	cfg := v1.Image{
		Created:  &created,
		Author:   "crash test",
		Platform: v1.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   v1.ImageConfig{Cmd: []string{"/bin/tool"}, Env: []string{"PATH=/bin", "X=1"}, WorkingDir: "/"},
		RootFS:   v1.RootFS{Type: "layers"},
	}
	var layers []archive.SaveLayer
	for i, l := range []struct {
		entries []E
		comp    layer.Compression
		by      string
	}{{l1, layer.Gzip, "base"}, {l2, layer.Uncompressed, "big2, whiteouts"}, {l3, layer.Gzip, "opaque srv/old"}, {l4, layer.Uncompressed, "app"}} {
		plain := imagetest.Tar(t, l.entries)
		var blob bytes.Buffer
		zw, err := layer.Compress(&blob, l.comp)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(plain)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		mt := v1.MediaTypeImageLayer
		if l.comp == layer.Gzip {
			mt = v1.MediaTypeImageLayerGzip
		}
		p := imagetest.WriteFile(t, dir, fmt.Sprintf("layer%d", i), blob.Bytes())
		layers = append(layers, archive.SaveLayer{Path: p, Digest: digest.FromBytes(blob.Bytes()), Size: int64(blob.Len()),
			MediaType: mt, DiffID: digest.FromBytes(plain)})
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(plain))
		cfg.History = append(cfg.History, v1.History{Created: &created, CreatedBy: "layer " + l.by})
		if i == 1 {
			cfg.History = append(cfg.History, v1.History{Created: &created, CreatedBy: "ENV X=1", EmptyLayer: true})
		}
	}
	config, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "image.oci.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := archive.WriteOCIArchive(f, []archive.SaveImage{{Config: config, Names: archiveNames, Layers: layers}}); err != nil {
		t.Fatal(err)
	}
	return p
}

// changeContainer changes a container through its mounted union: new
// files (a few MiB), an append to a large lower file (a copy-up), a
// deleted lower file, a directory replaced by a new one of the same name,
// a chmod, a rename and a symlink.
func changeContainer(t *testing.T, mnt string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(*seed, 23))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	at := func(p string) string { return filepath.Join(mnt, p) }
	must(os.MkdirAll(at("data/new"), 0o755))
	for i := 0; i < 3; i++ {
		must(os.WriteFile(at(fmt.Sprintf("data/new/big%d", i)), random(1<<20), 0o644))
	}
	for i := 0; i < 100; i++ {
		must(os.WriteFile(at(fmt.Sprintf("data/new/small%03d", i)), random(rng.IntN(4<<10)), 0o640))
	}
	f, err := os.OpenFile(at("data/big2"), os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	_, err = f.Write([]byte("appended"))
	must(errors.Join(err, f.Close()))
	must(os.Remove(at("etc/passwd")))
	must(os.RemoveAll(at("data/many")))
	must(os.Mkdir(at("data/many"), 0o750))
	must(os.WriteFile(at("data/many/only"), []byte("only\n"), 0o644))
	must(os.Chmod(at("bin/tool"), 0o700))
	must(os.Rename(at("srv/old/c"), at("srv/old/c2")))
	must(os.Symlink("new/big0", at("data/latest")))
}

// copyStore copies a store (unmounted) with cp -a: owners, modes, times,
// xattrs, hard links and whiteout devices stay.
func copyStore(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", src, dst, err, out)
	}
}

func containerID(t *testing.T, root, name string) string {
	t.Helper()
	var insp []struct{ Id string }
	out := ctl(t, root).Must(nil, "inspect", "--type", "container", name).Stdout
	if err := json.Unmarshal([]byte(out), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("inspect --type container %s: %v\n%s", name, err, out)
	}
	return insp[0].Id
}

func onlyImage(t *testing.T, root string) string {
	t.Helper()
	listed := listImages(t, root)
	if len(listed) != 1 {
		t.Fatalf("store %s: `unionctl images` lists %v, want one image", root, listed)
	}
	return slices.Sorted(maps.Keys(listed))[0]
}

// killed is how a killed command ended.
type killed struct {
	what   string // the kill point
	ranOut bool   // it exited on its own before the kill
	code   int
	stderr string
}

// phase names where the kill landed, from the store it left and the one
// before (layers is how many layers the operation adds).
func (k killed) phase(v, pre storeView, layers int) string {
	images, stored := len(v.images)-len(pre.images), len(v.layers)-len(pre.layers)
	switch {
	case k.ranOut:
		return "after: it had finished"
	case images > 0 && stored == layers:
		return "after: image stored"
	case images > 0:
		return "after?: image stored without all its layers" // an error, reported by the checks
	case stored > 0:
		return fmt.Sprintf("during: %d of %d layers stored, no image", stored, layers)
	case len(v.debris) > 0 || len(v.partial) > 0:
		return "during: staging, no layer stored yet"
	}
	return "before: nothing written"
}

// runKilled starts unionctl in its own process group, waits for trigger,
// and kills the group.
func runKilled(t *testing.T, root string, args []string, trigger func(done <-chan struct{}) string) killed {
	t.Helper()
	cmd := exec.Command(imagetest.Unionctl(t), append([]string{"--root", root}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	what := trigger(done)
	select {
	case <-done:
	default:
		if err := unix.Kill(-cmd.Process.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			t.Fatalf("kill -9 -%d: %v", cmd.Process.Pid, err)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("unionctl %s (pid %d) still there 10s after SIGKILL", strings.Join(args, " "), cmd.Process.Pid)
	}
	k := killed{what: what, stderr: stderr.String()}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() {
		k.ranOut, k.code = true, ws.ExitStatus()
		if k.code != 0 {
			t.Fatalf("%s: unionctl %s failed before the kill: exit %d\n%s", what, strings.Join(args, " "), k.code, k.stderr)
		}
	}
	return k
}

func afterDelay(d time.Duration) func(<-chan struct{}) string {
	return func(done <-chan struct{}) string {
		select {
		case <-time.After(d): // the kill point: a seeded delay into the command
		case <-done:
		}
		return fmt.Sprintf("kill after %v", d.Round(time.Microsecond))
	}
}

// storeEvent is an exact kill point: right after the n-th creation of an
// entry in the store's tmp/ or rename into its layers/ or images/.
type storeEvent struct {
	dir string // tmp, layers or images
	n   int
}

func (e storeEvent) name() string {
	if e.dir == "tmp" {
		return fmt.Sprintf("at-staging-%d", e.n)
	}
	return fmt.Sprintf("at-rename-%d-into-%s", e.n, e.dir)
}

// loadEvents: the staging area's first entry (the load holds the lock),
// each layer renamed into place, the image.
func loadEvents(layers int) []storeEvent {
	ev := []storeEvent{{"tmp", 1}}
	for i := 1; i <= layers; i++ {
		ev = append(ev, storeEvent{"layers", i})
	}
	return append(ev, storeEvent{"images", 1})
}

func commitEvents() []storeEvent {
	return []storeEvent{{"tmp", 1}, {"layers", 1}, {"images", 1}}
}

// atEvent waits for ev in the store at root with inotify.
func atEvent(t *testing.T, root string, ev storeEvent) func(<-chan struct{}) string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	mask := uint32(unix.IN_MOVED_TO)
	if ev.dir == "tmp" {
		mask = unix.IN_CREATE
	}
	wd, err := unix.InotifyAddWatch(fd, filepath.Join(root, ev.dir), mask)
	if err != nil {
		t.Fatalf("inotify watch %s: %v", ev.dir, err)
	}
	return func(done <-chan struct{}) string {
		buf := make([]byte, 64<<10)
		seen := 0
		for {
			n, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EAGAIN) {
				select {
				case <-done:
					return fmt.Sprintf("kill %s (the command ended first, after %d events)", ev.name(), seen)
				default:
				}
				unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 20)
				continue
			}
			if err != nil {
				t.Errorf("read inotify: %v", err)
				return "kill after an inotify error"
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ewd := int32(binary.NativeEndian.Uint32(buf[off:]))
				elen := int(binary.NativeEndian.Uint32(buf[off+12:]))
				if ewd == int32(wd) {
					if seen++; seen == ev.n {
						return "kill " + ev.name()
					}
				}
				off += unix.SizeofInotifyEvent + elen
			}
		}
	}
}

// storeView is what a store directory holds, read directly.
type storeView struct {
	layers  []string // complete layer directories (hex chain IDs)
	images  []string // complete image directories (hex IDs)
	partial []string // layer or image directories without their record, stray files there
	debris  []string // entries of tmp/, temporary files anywhere
}

func viewStore(t *testing.T, root string) storeView {
	t.Helper()
	var v storeView
	for _, kind := range []struct {
		dir  string
		need []string
		out  *[]string
	}{{"layers", []string{"layer.json", "diff"}, &v.layers}, {"images", []string{"image.json", "config.json"}, &v.images}} {
		ents, err := os.ReadDir(filepath.Join(root, kind.dir))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range ents {
			rel := kind.dir + "/" + e.Name()
			if isTemp(e.Name()) {
				continue // debris, below
			}
			complete := e.IsDir()
			for _, n := range kind.need {
				if _, err := os.Lstat(filepath.Join(root, rel, n)); err != nil {
					complete = false
				}
			}
			if complete {
				*kind.out = append(*kind.out, e.Name())
			} else {
				v.partial = append(v.partial, rel)
			}
		}
	}
	// Layer and container contents are data, not the store's own files.
	skip := map[string]bool{"diff": true, "upper": true, "work": true, "merged": true, "init": true}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		parts := strings.Split(rel, string(filepath.Separator))
		switch {
		case rel == "." || rel == "tmp":
		case parts[0] == "tmp":
			v.debris = append(v.debris, rel)
			return filepath.SkipDir
		case len(parts) == 3 && d.IsDir() && skip[parts[2]]:
			return filepath.SkipDir
		case isTemp(d.Name()):
			v.debris = append(v.debris, rel)
		}
		return nil
	})
	return v
}

// isTemp tells the names of the store's temporary files (writeFile's
// ".tmp-NAME-*", SaveToFile's ".NAME.partial-*").
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".tmp-") || strings.Contains(name, ".partial-")
}

// listImages runs `unionctl images` and returns the names of each image
// by hex ID (sorted; none for an image without a name).
func listImages(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, line := range imagetest.Lines(ctl(t, root).Must(nil, "images", "--format", "json", "--no-trunc").Stdout) {
		var row struct{ ID, Repository, Tag string }
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("unionctl images: %q: %v", line, err)
		}
		id := digest.Digest(row.ID).Encoded()
		if _, ok := out[id]; !ok {
			out[id] = nil
		}
		if row.Repository != "<none>" {
			out[id] = sorted(append(out[id], row.Repository+":"+row.Tag))
		}
	}
	return out
}

// reference is a store that ran the command without interruption.
type reference struct {
	root    string
	base    string              // the image a commit started from ("" for load)
	images  []string            // hex IDs
	names   map[string][]string // by image
	inspect map[string]map[string]any
	history map[string][]map[string]any
	layers  map[string]fstest.Tree // diff of each layer, by hex chain ID
	records map[string]map[string]any
	files   []string // imagetest.StoreFiles, with image directories other than base's left out
}

func newReference(t *testing.T, root, base string) *reference {
	t.Helper()
	r := &reference{root: root, base: base, names: listImages(t, root), inspect: map[string]map[string]any{},
		history: map[string][]map[string]any{}, layers: map[string]fstest.Tree{}, records: map[string]map[string]any{}}
	r.images = slices.Sorted(maps.Keys(r.names))
	for _, id := range r.images {
		r.inspect[id] = inspectImage(t, root, id)
		r.history[id] = imageHistory(t, root, id)
		for _, l := range r.layerIDs(id) {
			r.layers[l] = layerTree(t, root, l)
			r.records[l] = layerRecord(t, root, l)
		}
	}
	r.files = r.storeFiles(t, root, r.kept())
	if v := viewStore(t, root); len(v.debris)+len(v.partial) > 0 {
		t.Fatalf("reference store %s has debris %q and partial entries %q after an uninterrupted run", root, v.debris, v.partial)
	}
	return r
}

// layerIDs lists the image's layers (hex chain IDs), bottom first.
func (r *reference) layerIDs(img string) []string {
	var out []string
	for _, l := range r.inspect[img]["Layers"].([]any) {
		out = append(out, digest.Digest(l.(map[string]any)["Id"].(string)).Encoded())
	}
	return out
}

func (r *reference) layerSize(id string) int64 {
	for _, img := range r.images {
		for _, l := range r.inspect[img]["Layers"].([]any) {
			if m := l.(map[string]any); digest.Digest(m["Id"].(string)).Encoded() == id {
				return int64(m["Size"].(float64))
			}
		}
	}
	return -1
}

// committed reports whether the reference image is made by a commit
// (its ID, creation time and the top layer's time differ per run).
func (r *reference) committed(img string) bool { return r.base != "" && img != r.base }

// checkImage checks the image id in the store at root against the
// reference image refImg: its names as listed, inspect and history output
// (less the times of a commit), each layer's record and content. With
// seen, the view of the store whose layers checkKilledStore compared,
// each layer must be among them instead.
func (r *reference) checkImage(t *testing.T, root, refImg, id string, names, wantNames []string, seen *storeView) {
	t.Helper()
	tag := "image " + shortHex(id)
	if !slices.Equal(names, sorted(wantNames)) {
		t.Errorf("%s is listed with the names %q; want %q (an image without its names is not the complete image)", tag, names, sorted(wantNames))
	}
	want, got := r.inspect[refImg], inspectImage(t, root, id)
	if r.committed(refImg) {
		want, got = withoutKeys(want, "Id", "Created", "RawConfig"), withoutKeys(got, "Id", "Created", "RawConfig")
		want["RepoTags"] = toAny(sorted(wantNames))
	} else {
		want = withoutKeys(want)
		want["RepoTags"] = toAny(sorted(wantNames))
	}
	got["RepoTags"] = toAny(sorted(anyStrings(got["RepoTags"])))
	for _, d := range fieldDiff("", want, got) {
		t.Errorf("%s: unionctl inspect: %s", tag, d)
	}
	wantH, gotH := r.history[refImg], imageHistory(t, root, id)
	if r.committed(refImg) {
		for _, h := range append(append([]map[string]any{}, wantH...), gotH...) {
			delete(h, "CreatedAt")
		}
	}
	if len(wantH) != len(gotH) {
		t.Errorf("%s: unionctl history has %d entries, want %d", tag, len(gotH), len(wantH))
	} else {
		for i := range wantH {
			for _, d := range fieldDiff(fmt.Sprintf("entry %d ", i), wantH[i], gotH[i]) {
				t.Errorf("%s: unionctl history: %s", tag, d)
			}
		}
	}
	for _, l := range r.layerIDs(refImg) {
		if seen == nil {
			r.checkLayer(t, root, l)
		} else if !slices.Contains(seen.layers, l) {
			t.Errorf("%s is listed, but its layer %s is missing: want no image or the complete one", tag, shortHex(l))
		}
	}
}

// checkLayer compares a stored layer, record and content, with the
// reference's.
func (r *reference) checkLayer(t *testing.T, root, id string) {
	t.Helper()
	want, ok := r.layers[id]
	if !ok {
		t.Errorf("layers/%s: a layer the reference store does not have", shortHex(id))
		return
	}
	if _, err := os.Stat(filepath.Join(root, "layers", id, "layer.json")); err != nil {
		t.Errorf("layers/%s: want the complete layer, found %v", shortHex(id), err)
		return
	}
	wr, gr := r.records[id], layerRecord(t, root, id)
	if r.base != "" {
		wr, gr = withoutKeys(wr, "created"), withoutKeys(gr, "created")
	}
	for _, d := range fieldDiff("", wr, gr) {
		t.Errorf("layers/%s/layer.json: %s", shortHex(id), d)
	}
	if d := fstest.Diff(want, layerTree(t, root, id)); len(d) > 0 {
		t.Errorf("layers/%s/diff differs from the reference's (want != got):\n%s", shortHex(id), strings.Join(d, "\n"))
	}
}

// checkKilledStore checks a store right after a kill: every layer or
// image directory in sight is complete, and each layer is one of the
// reference's with its content; debris may wait in tmp/ for the next
// command. keep are images the store had before the command.
func (r *reference) checkKilledStore(t *testing.T, root string, v storeView, keep []string) {
	t.Helper()
	if len(v.partial) > 0 {
		t.Errorf("after the kill the store shows half-written entries %q; want every layer and image directory complete or absent", v.partial)
	}
	for _, l := range v.layers {
		r.checkLayer(t, root, l)
	}
	for _, id := range keep {
		if !slices.Contains(v.images, id) {
			t.Errorf("after the kill images/%s is gone; want it unchanged", shortHex(id))
		}
	}
}

// checkClean checks the store after the command ran again: nothing
// temporary anywhere, no orphan layer, and the same files as the
// reference store. images are the images it should hold.
func (r *reference) checkClean(t *testing.T, root string, images []string) {
	t.Helper()
	v := viewStore(t, root)
	if len(v.debris) > 0 {
		t.Errorf("after the second command the store still holds temporary entries %q; want none (the next writer removes what a killed one left)", v.debris)
	}
	if len(v.partial) > 0 {
		t.Errorf("after the second command the store holds half-written entries %q; want none", v.partial)
	}
	var wantLayers []string
	for id := range r.layers {
		wantLayers = append(wantLayers, id)
	}
	if got, want := sorted(v.layers), sorted(wantLayers); !slices.Equal(got, want) {
		t.Errorf("after the second command layers/ holds %q; want exactly the reference's %q (no orphan layer)", shortHexes(got), shortHexes(want))
	}
	if images != nil {
		if got, want := sorted(v.images), sorted(images); !slices.Equal(got, want) {
			t.Errorf("after the second command images/ holds %q; want %q", shortHexes(got), shortHexes(want))
		}
	}
	for _, id := range v.images {
		if id == r.base {
			continue
		}
		ents, _ := os.ReadDir(filepath.Join(root, "images", id))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{"config.json", "image.json"}) {
			t.Errorf("images/%s holds %q; want config.json and image.json", shortHex(id), names)
		}
	}
	if got := r.storeFiles(t, root, r.kept()); !slices.Equal(got, r.files) {
		t.Errorf("after the second command the store's files differ from the reference store's:\n%s", listDiff(r.files, got))
	}
}

// kept are the images whose directories storeFiles lists: the loaded
// one, or the one a commit started from.
func (r *reference) kept() []string {
	if r.base == "" {
		return r.images
	}
	return []string{r.base}
}

// storeFiles is imagetest.StoreFiles with the directories of images other
// than keep left out (a commit's image ID differs per run).
func (r *reference) storeFiles(t *testing.T, root string, keep []string) []string {
	var out []string
	for _, p := range imagetest.StoreFiles(t, root) {
		parts := strings.Split(p, "/")
		if len(parts) >= 2 && parts[0] == "images" && !slices.Contains(keep, parts[1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// listDiff shows the first differences of two sorted lists.
func listDiff(want, got []string) string {
	var lines []string
	for _, p := range want {
		if _, ok := slices.BinarySearch(got, p); !ok {
			lines = append(lines, "  missing    "+p)
		}
	}
	for _, p := range got {
		if _, ok := slices.BinarySearch(want, p); !ok {
			lines = append(lines, "  unexpected "+p)
		}
	}
	if len(lines) > 12 {
		lines = append(lines[:12], fmt.Sprintf("  ... and %d more", len(lines)-12))
	}
	return strings.Join(lines, "\n")
}

// fieldDiff lists the keys whose values differ between two JSON objects.
func fieldDiff(prefix string, want, got map[string]any) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(mergeKeys(want, got))) {
		w, g := jsonText(want[k]), jsonText(got[k])
		if w != g {
			out = append(out, fmt.Sprintf("%s%s is %s, want %s", prefix, k, g, w))
		}
	}
	return out
}

func mergeKeys(a, b map[string]any) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// inspectImage is `unionctl inspect` of an image, less what depends on
// the store's path.
func inspectImage(t *testing.T, root, id string) map[string]any {
	t.Helper()
	out := ctl(t, root).Must(nil, "inspect", "--type", "image", id).Stdout
	var insp []map[string]any
	if err := json.Unmarshal([]byte(out), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("unionctl inspect %s: %v\n%s", shortHex(id), err, out)
	}
	m := insp[0]
	delete(m, "GraphDriver")
	ls, _ := m["Layers"].([]any) // null when a layer is missing
	for _, l := range ls {
		if l, ok := l.(map[string]any); ok {
			delete(l, "Path")
		}
	}
	return m
}

// imageHistory is `unionctl history --format json`, less the relative
// times.
func imageHistory(t *testing.T, root, id string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range imagetest.Lines(ctl(t, root).Must(nil, "history", "--format", "json", "--no-trunc", id).Stdout) {
		var h map[string]any
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("unionctl history %s: %q: %v", shortHex(id), line, err)
		}
		delete(h, "CreatedSince")
		out = append(out, h)
	}
	return out
}

func layerRecord(t *testing.T, root, id string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "layers", id, "layer.json"))
	if err != nil {
		t.Fatalf("layer %s: %v", shortHex(id), err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("layers/%s/layer.json: %v", shortHex(id), err)
	}
	return m
}

// layerTree snapshots a layer's diff: names, types, modes, owners, sizes,
// content hashes, symlink targets, device numbers (whiteouts), every
// xattr (opaque markers), hard links and mtimes. The root's mtime is when
// the layer was unpacked: it is left out.
func layerTree(t *testing.T, root, id string) fstest.Tree {
	t.Helper()
	tree := snapshot(t, filepath.Join(root, "layers", id, "diff"))
	delete(tree, ".")
	return tree
}

func snapshot(t *testing.T, dir string) fstest.Tree {
	t.Helper()
	tree, err := fstest.Snapshot(dir, fstest.XattrFilter(func(string) bool { return true }))
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func logTally(t *testing.T, what string, tally map[string]int) {
	var lines []string
	total := 0
	for _, p := range slices.Sorted(maps.Keys(tally)) {
		lines = append(lines, fmt.Sprintf("  %3d %s", tally[p], p))
		total += tally[p]
	}
	t.Logf("%s: %d kill points:\n%s", what, total, strings.Join(lines, "\n"))
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func shortHex(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

func shortHexes(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = shortHex(id)
	}
	return out
}

// withoutKeys copies m less keys.
func withoutKeys(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if !slices.Contains(keys, k) {
			out[k] = v
		}
	}
	return out
}

func toAny(s []string) []any {
	out := []any{}
	for _, x := range s {
		out = append(out, x)
	}
	return out
}

func anyStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}
