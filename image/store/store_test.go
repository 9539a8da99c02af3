package store

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	imagetest.Cleanup()
	os.Exit(code)
}

func newStore(t testing.TB) *Store {
	t.Helper()
	fstest.RequireRoot(t)
	s, err := Open(Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// baseTar is a small rootfs (no busybox: store tests run no container).
func baseTar(t testing.TB) []byte {
	return imagetest.Tar(t, []imagetest.Entry{
		{Name: "bin/", Type: tar.TypeDir},
		{Name: "bin/tool", Body: []byte("#!/bin/sh\necho tool\n"), Mode: 0o755},
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/passwd", Body: []byte("root:x:0:0::/root:/bin/sh\n")},
		{Name: "etc/motd", Body: []byte("hello\n")},
		{Name: "var/", Type: tar.TypeDir},
		{Name: "var/lib/", Type: tar.TypeDir},
		{Name: "var/lib/a", Body: []byte("a")},
		{Name: "var/lib/b", Body: []byte("b")},
		{Name: "link", Type: tar.TypeSymlink, Link: "bin/tool"},
		{Name: "hard", Type: tar.TypeLink, Link: "bin/tool"},
	})
}

func mustImport(t testing.TB, s *Store, data []byte, name string) *Image {
	t.Helper()
	img, err := s.Import(bytes.NewReader(data), "test", []string{name})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestImportHistoryAndExactTar(t *testing.T) {
	s := newStore(t)
	data := baseTar(t)
	img := mustImport(t, s, data, "base:1")
	if !slices.Equal(img.Names, []string{"base:1"}) || len(img.Layers) != 1 {
		t.Fatalf("image %+v", img)
	}
	l, err := s.Layer(img.Layers[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(data); l.DiffID != want || l.ID != want || !l.TarSplit {
		t.Errorf("layer %+v, want diff_id and chain id %s with a tar-split record", l, want)
	}
	var out bytes.Buffer
	if _, _, err := s.LayerTar(l, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Error("the stored layer does not give back the imported tar")
	}
	cfg, _, err := s.Config(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != l.DiffID {
		t.Errorf("config diff_ids %v", cfg.RootFS.DiffIDs)
	}
	hist, err := s.History(img)
	if err != nil || len(hist) != 1 || hist[0].Layer != l.ID || hist[0].Size != l.Size || hist[0].CreatedBy != "unionctl import test" {
		t.Errorf("history %+v, %v", hist, err)
	}
	for _, ref := range []string{"base:1", img.ID.String(), img.ID.Encoded()[:5]} {
		if got, err := s.LookupImage(ref); err != nil || got.ID != img.ID {
			t.Errorf("LookupImage(%q) = %v, %v", ref, got, err)
		}
	}
	if _, err := s.LookupImage("base:2"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("LookupImage(base:2): %v, want ErrNotFound", err)
	}
}

// TestFailedImportLeavesStoreUnchanged: a hostile or broken tarball is
// refused and leaves no layer, image or debris behind.
func TestFailedImportLeavesStoreUnchanged(t *testing.T) {
	s := newStore(t)
	mustImport(t, s, baseTar(t), "base:1")
	before := imagetest.StoreFiles(t, s.Root())
	bad := map[string][]byte{
		"dotdot":    imagetest.Tar(t, []imagetest.Entry{{Name: "ok"}, {Name: "../escape"}}),
		"duplicate": imagetest.Tar(t, []imagetest.Entry{{Name: "a"}, {Name: "a"}}),
		"truncated": baseTar(t)[:1500],
		"not a tar": []byte(strings.Repeat("garbage ", 200)),
	}
	for name, data := range bad {
		if _, err := s.Import(bytes.NewReader(data), name, []string{"bad:" + strings.ReplaceAll(name, " ", "")}); err == nil {
			t.Errorf("%s: import succeeded", name)
		}
		if after := imagetest.StoreFiles(t, s.Root()); !slices.Equal(before, after) {
			t.Errorf("%s: store changed:\nbefore %q\nafter  %q", name, before, after)
		}
	}
}

// containerWithChanges makes a container of img and changes its upper the
// way a union would: a new file, a changed one, a whiteout, an opaque
// directory replacing a lower one.
func containerWithChanges(t testing.TB, s *Store, img string) *Container {
	t.Helper()
	c, err := s.CreateContainer(CreateOptions{Image: img, Cmd: []string{"/bin/tool"}})
	if err != nil {
		t.Fatal(err)
	}
	err = fstest.Apply(s.Upper(c),
		fstest.CreateDir("etc", 0o755),
		fstest.CreateFile("etc/passwd", []byte("root:x:0:0::/root:/bin/sh\nuser:x:1:1::/:/bin/sh\n"), 0o644),
		fstest.Whiteout("etc/motd"),
		fstest.CreateDir("var", 0o755),
		fstest.CreateDir("var/lib", 0o755),
		fstest.Opaque("var/lib"),
		fstest.CreateFile("var/lib/c", []byte("c"), 0o600),
		fstest.CreateFile("new", []byte("new\n"), 0o644),
		fstest.SetXattr("new", "user.unionmount.origin", []byte("x")),
	)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDiffAndCommit(t *testing.T) {
	s := newStore(t)
	base := mustImport(t, s, baseTar(t), "base:1")
	c := containerWithChanges(t, s, "base:1")
	changes, err := s.Diff(c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ch := range changes {
		got = append(got, ch.String())
	}
	want := []string{"C /etc", "D /etc/motd", "C /etc/passwd", "A /new", "C /var", "C /var/lib",
		"D /var/lib/a", "D /var/lib/b", "A /var/lib/c"}
	if !slices.Equal(got, want) {
		t.Errorf("diff\n got %q\nwant %q", got, want)
	}

	img, err := s.Commit(c, []string{"base:2"}, CommitOptions{Message: "change things", Author: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 || img.Layers[0] != base.Layers[0] {
		t.Fatalf("committed layers %v over %v", img.Layers, base.Layers)
	}
	top, err := s.Layer(img.Layers[1])
	if err != nil {
		t.Fatal(err)
	}
	if top.Parent != base.Layers[0] || top.ID != ChainID(base.Layers[0], top.DiffID) || top.Comment != "change things" {
		t.Errorf("top layer %+v", top)
	}
	tree, err := fstest.Snapshot(s.LayerDiff(top.ID), fstest.XattrFilter(func(string) bool { return true }))
	if err != nil {
		t.Fatal(err)
	}
	if e := tree["etc/motd"]; e.Type != fstest.TypeChar || e.Rdev != 0 {
		t.Errorf("etc/motd in the new layer: %+v, want a whiteout", e)
	}
	if tree["var/lib"].Xattrs["trusted.overlay.opaque"] != "y" {
		t.Errorf("var/lib not opaque in the new layer: %v", tree["var/lib"].Xattrs)
	}
	if len(tree["new"].Xattrs) != 0 {
		t.Errorf("bookkeeping xattrs went into the image: %v", tree["new"].Xattrs)
	}
	cfg, _, err := s.Config(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[1] != top.DiffID || cfg.Author != "tester" {
		t.Errorf("config %+v", cfg)
	}
	hist, _ := s.History(img)
	if len(hist) != 2 || hist[0].Comment != "change things" || hist[0].CreatedBy != "/bin/tool" {
		t.Errorf("history %+v", hist)
	}
	// The committed layer's tar is what commit wrote: reassembling it
	// gives the diff_id.
	var buf bytes.Buffer
	if d, _, err := s.LayerTar(top, &buf); err != nil || d != top.DiffID {
		t.Errorf("layer tar %s, %v", d, err)
	}
}

// saveFormats are every way Save writes.
var saveFormats = []struct {
	name string
	opts SaveOptions
}{
	{"oci-archive gzip", SaveOptions{Format: FormatOCIArchive, Compression: layer.Gzip}},
	{"oci-archive zstd", SaveOptions{Format: FormatOCIArchive, Compression: layer.Zstd}},
	{"oci-archive plain", SaveOptions{Format: FormatOCIArchive}},
	{"docker-archive", SaveOptions{Format: FormatDockerArchive}},
	{"oci layout", SaveOptions{Format: FormatOCILayout, Compression: layer.Gzip}},
}

// TestSaveLoadRoundTrip: every format gives back the same images (same
// IDs, same layer contents) in another store.
func TestSaveLoadRoundTrip(t *testing.T) {
	s := newStore(t)
	mustImport(t, s, baseTar(t), "base:1")
	c := containerWithChanges(t, s, "base:1")
	img, err := s.Commit(c, []string{"base:2"}, CommitOptions{Message: "m"})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := s.LookupImage("base:1")
	for _, f := range saveFormats {
		t.Run(f.name, func(t *testing.T) {
			dir := t.TempDir()
			s2 := newStore(t)
			var loaded []Loaded
			if f.opts.Format == FormatOCILayout {
				if _, err := s.Save([]*Image{img, base}, nil, filepath.Join(dir, "layout"), f.opts); err != nil {
					t.Fatal(err)
				}
				loaded, err = s2.LoadLayout(filepath.Join(dir, "layout"))
			} else {
				p := filepath.Join(dir, "archive.tar")
				if _, err := s.SaveToFile([]*Image{img, base}, p, f.opts); err != nil {
					t.Fatal(err)
				}
				f, _ := os.Open(p)
				defer f.Close()
				loaded, err = s2.LoadStream(f)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(loaded) != 2 || loaded[0].ID != img.ID || loaded[1].ID != base.ID {
				t.Fatalf("loaded %v, want %s and %s", loaded, img.ID, base.ID)
			}
			if got, err := s2.LookupImage("base:2"); err != nil || got.ID != img.ID {
				t.Errorf("base:2 in the new store: %v, %v", got, err)
			}
			for _, id := range img.Layers {
				a, _ := fstest.Snapshot(s.LayerDiff(id), fstest.XattrFilter(func(string) bool { return true }))
				b, err := fstest.Snapshot(s2.LayerDiff(id), fstest.XattrFilter(func(string) bool { return true }))
				if err != nil {
					t.Fatal(err)
				}
				// The layer root has no entry of its own in these tars:
				// its mtime is when it was unpacked.
				delete(a, ".")
				delete(b, ".")
				if d := fstest.Diff(a, b, fstest.IgnoreFields(fstest.FieldInoClass)); len(d) > 0 {
					t.Errorf("layer %s differs:\n%s", id, strings.Join(d, "\n"))
				}
			}
		})
	}
}

// TestLoadFailureRollsBack: a load whose second image is corrupt stores
// nothing, not even the first image's layers.
func TestLoadFailureRollsBack(t *testing.T) {
	s := newStore(t)
	base := mustImport(t, s, baseTar(t), "base:1")
	other := mustImport(t, s, imagetest.Tar(t, []imagetest.Entry{{Name: "other", Body: []byte("payload of other")}}), "other:1")
	imgs := []*Image{base, other} // the second one fails, after the first is in
	p := filepath.Join(t.TempDir(), "a.tar")
	if _, err := s.SaveToFile(imgs, p, SaveOptions{Format: FormatDockerArchive}); err != nil {
		t.Fatal(err)
	}
	// Corrupt the layer of one image: flip a byte of "other"'s content.
	data, _ := os.ReadFile(p)
	i := bytes.Index(data, []byte("payload of other"))
	if i < 0 {
		t.Fatal("content not found in the archive")
	}
	data[i] ^= 0x20
	os.WriteFile(p, data, 0o644)

	s2 := newStore(t)
	before := imagetest.StoreFiles(t, s2.Root())
	if _, err := s2.LoadFile(p); !errors.Is(err, image.ErrDigestMismatch) {
		t.Fatalf("load of a corrupt archive: %v, want ErrDigestMismatch", err)
	}
	if after := imagetest.StoreFiles(t, s2.Root()); !slices.Equal(before, after) {
		t.Errorf("store changed by a failed load:\nbefore %q\nafter  %q", before, after)
	}
}

// TestRemoveImageRefcount: a layer shared by two images stays until the
// last of them goes; a container keeps its image.
func TestRemoveImageRefcount(t *testing.T) {
	s := newStore(t)
	base := mustImport(t, s, baseTar(t), "base:1")
	c := containerWithChanges(t, s, "base:1")
	child, err := s.Commit(c, []string{"child:1"}, CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveContainer(c, false); err != nil {
		t.Fatal(err)
	}
	c2, err := s.CreateContainer(CreateOptions{Image: "child:1", Cmd: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveImage("child:1", false); !errors.Is(err, image.ErrInUse) {
		t.Errorf("rmi of an image a container uses: %v, want ErrInUse", err)
	}
	if err := s.RemoveContainer(c2, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(base, "alias:1"); err != nil {
		t.Fatal(err)
	}
	res, err := s.RemoveImage("alias:1", false)
	if err != nil || !slices.Equal(res.Untagged, []string{"alias:1"}) || len(res.Deleted) != 0 {
		t.Errorf("rmi of one of two names: %+v, %v", res, err)
	}
	res, err = s.RemoveImage("base:1", false)
	if err != nil || !slices.Equal(res.Deleted, []digest.Digest{base.ID}) {
		t.Errorf("rmi base: %+v, %v (its layer is child's too: only the image goes)", res, err)
	}
	if !s.hasLayer(base.Layers[0]) {
		t.Fatal("shared layer removed while child:1 uses it")
	}
	res, err = s.RemoveImage(child.ID.Encoded()[:10], false)
	if err != nil || len(res.Deleted) != 3 {
		t.Errorf("rmi child: %+v, %v; want the image and both layers", res, err)
	}
	if ls, _ := s.Layers(); len(ls) != 0 {
		t.Errorf("layers left: %v", ls)
	}
}

// TestSaveWithoutTarSplit: a layer whose exact tar cannot be reproduced is
// saved afresh, and the saved config names the new tar.
func TestSaveWithoutTarSplit(t *testing.T) {
	s := newStore(t)
	img := mustImport(t, s, baseTar(t), "base:1")
	dir := s.layerDir(img.Layers[0])
	os.Remove(filepath.Join(dir, "tarsplit.gz"))
	var l Layer
	readJSON(filepath.Join(dir, "layer.json"), &l)
	l.TarSplit = false
	writeJSON(filepath.Join(dir, "layer.json"), &l)

	var buf bytes.Buffer
	ids, err := s.Save([]*Image{img}, &buf, "", SaveOptions{Format: FormatOCIArchive})
	if err != nil {
		t.Fatal(err)
	}
	if ids[0] == img.ID {
		t.Fatal("image ID kept although its layer tar changed")
	}
	p := filepath.Join(t.TempDir(), "x.tar")
	os.WriteFile(p, buf.Bytes(), 0o644)
	s2 := newStore(t)
	loaded, err := s2.LoadFile(p) // verifies the new diff_ids
	if err != nil || loaded[0].ID != ids[0] {
		t.Fatalf("load: %v, %v", loaded, err)
	}
}

func TestVolumes(t *testing.T) {
	s := newStore(t)
	mustImport(t, s, baseTar(t), "base:1")
	c, err := s.CreateContainer(CreateOptions{Image: "base:1", Cmd: []string{"x"},
		Mounts: []Mount{{Type: "volume", Source: "data", Destination: "/data"}}})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := s.Volumes()
	if err != nil || len(vs) != 1 || vs[0].Name != "data" {
		t.Fatalf("volumes %v, %v", vs, err)
	}
	if err := s.RemoveVolume("data"); !errors.Is(err, image.ErrInUse) {
		t.Errorf("rm of a used volume: %v, want ErrInUse", err)
	}
	if st, err := os.Stat(filepath.Join(s.ContainerDir(c), "init", "data")); err != nil || !st.IsDir() {
		t.Errorf("mount point missing from the init layer: %v", err)
	}
	if err := s.RemoveContainer(c, false); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveVolume("data"); err != nil {
		t.Error(err)
	}
	if _, err := s.CreateVolume("../x"); err == nil {
		t.Error("volume named ../x was created")
	}
}

func TestCreateContainerConfig(t *testing.T) {
	s := newStore(t)
	b := baseTar(t)
	img := mustImport(t, s, b, "base:1")
	// Give the image a config with entrypoint, cmd, env, workdir, user.
	cfgPath := filepath.Join(s.imageDir(img.ID), "config.json")
	var cfg v1.Image
	raw, _ := os.ReadFile(cfgPath)
	json.Unmarshal(raw, &cfg)
	cfg.Config = v1.ImageConfig{Entrypoint: []string{"/bin/tool"}, Cmd: []string{"--default"}, Env: []string{"A=1", "B=2"},
		WorkingDir: "/srv", User: "daemon"}
	nb, _ := json.Marshal(cfg)
	unlock, _ := s.Lock()
	img2, err := s.putImage(nb, img.Layers, []string{"cfg:1"})
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateContainer(CreateOptions{Image: img2.ID.String(), Cmd: []string{"--mine"}, Env: []string{"B=3", "C=4"}, Name: "named"})
	if err != nil {
		t.Fatal(err)
	}
	rc := c.Config
	if !slices.Equal(rc.Args, []string{"/bin/tool", "--mine"}) || rc.WorkingDir != "/srv" || rc.User != "daemon" {
		t.Errorf("run config %+v", rc)
	}
	if !slices.Equal(rc.Env, []string{defaultPath, "A=1", "B=3", "C=4"}) {
		t.Errorf("env %q", rc.Env)
	}
	if _, err := s.CreateContainer(CreateOptions{Image: "cfg:1", Name: "named"}); !errors.Is(err, image.ErrExists) {
		t.Errorf("second container named 'named': %v, want ErrExists", err)
	}
	if _, err := s.CreateContainer(CreateOptions{Image: "base:1"}); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Errorf("container without a command: %v", err)
	}
}

func TestSizeMatchesDu(t *testing.T) {
	s := newStore(t)
	mustImport(t, s, baseTar(t), "base:1")
	c := containerWithChanges(t, s, "base:1")
	fstest.Apply(s.Upper(c), fstest.CreateFile("big", bytes.Repeat([]byte("x"), 100_000), 0o644))
	rw, virtual, err := s.Size(c)
	if err != nil {
		t.Fatal(err)
	}
	out, err := execOutput("du", "-s", "-B1", s.Upper(c))
	if err != nil {
		testenv.Skipf(t, "du: %v", err)
	}
	if want := strings.Fields(out)[0]; want != itoa(rw) {
		t.Errorf("rw size %d, du says %s", rw, want)
	}
	img, _ := s.LookupImage("base:1")
	if virtual != rw+s.ImageSize(img) {
		t.Errorf("virtual %d != rw %d + image %d", virtual, rw, s.ImageSize(img))
	}
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
