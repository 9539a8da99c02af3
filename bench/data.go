package bench

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// dataVersion changes whenever a generator changes what it writes, so that
// data kept from an older unionbench is rebuilt.
const dataVersion = 2

// Dataset is a stack of layers generated from the seed. It is built once
// into DATA/ds/NAME-HASH (HASH covers the seed and the parameters) and kept
// for later runs; a build that did not finish is never used.
type Dataset struct {
	Name   string
	Params string // every parameter the content depends on
	Layers int
	build  func(g *gen) error

	dir string // set by prepare
}

// Layer is the path of layer i (0 is the top).
func (d *Dataset) Layer(i int) string { return filepath.Join(d.dir, "layers", strconv.Itoa(i)) }

// Merged is the plain directory holding the merged content (files are hard
// links to the topmost layer's copy).
func (d *Dataset) Merged() string { return filepath.Join(d.dir, "merged") }

// prepare builds the dataset unless a finished build with the same
// parameters is already there.
func (d *Dataset) prepare(env *Env) error {
	h := fnv.New64a()
	owner := "root"
	if env.owner != nil {
		owner = fmt.Sprintf("%d:%d", env.owner.UID, env.owner.GID)
	}
	fmt.Fprintf(h, "v%d seed=%d %s %s layers=%d owner=%s", dataVersion, env.Cfg.Seed, d.Name, d.Params, d.Layers, owner)
	base := filepath.Join(env.data, "ds")
	d.dir = filepath.Join(base, fmt.Sprintf("%s-%016x", d.Name, h.Sum64()))
	if _, err := os.Stat(filepath.Join(d.dir, "complete")); err == nil {
		return nil
	}
	// Older builds of this dataset and an unfinished one go first.
	old, _ := filepath.Glob(filepath.Join(base, d.Name+"-*"))
	for _, o := range old {
		if err := os.RemoveAll(o); err != nil {
			return fmt.Errorf("dataset %s: remove old build: %w", d.Name, err)
		}
	}
	for i := 0; i < d.Layers; i++ {
		if err := os.MkdirAll(d.Layer(i), 0o755); err != nil {
			return fmt.Errorf("dataset %s: %w", d.Name, err)
		}
	}
	g := &gen{d: d, rng: rand.New(rand.NewPCG(env.Cfg.Seed, h.Sum64())),
		bytes: rand.NewChaCha8(seed32(env.Cfg.Seed, h.Sum64()))}
	if err := d.build(g); err != nil {
		return fmt.Errorf("dataset %s: %w", d.Name, err)
	}
	if err := mergeLayers(d); err != nil {
		return fmt.Errorf("dataset %s: merged copy: %w", d.Name, err)
	}
	if env.owner != nil {
		if err := chownTree(d.dir, env.owner); err != nil {
			return fmt.Errorf("dataset %s: %w", d.Name, err)
		}
	}
	return os.WriteFile(filepath.Join(d.dir, "complete"), []byte(d.Params+"\n"), 0o644)
}

func seed32(a, b uint64) [32]byte {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i], s[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	return s
}

// gen writes one dataset's layers.
type gen struct {
	d     *Dataset
	rng   *rand.Rand    // choices
	bytes *rand.ChaCha8 // file contents
	buf   []byte
}

// dir creates directory rel (and its parents) in a layer.
func (g *gen) dir(layer int, rel string) error {
	return os.MkdirAll(filepath.Join(g.d.Layer(layer), rel), 0o755)
}

// file writes a file of size seeded random bytes into a layer, creating
// its parents.
func (g *gen) file(layer int, rel string, size int64) error {
	p := filepath.Join(g.d.Layer(layer), rel)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	}
	if err != nil {
		return err
	}
	if size > 0 {
		if g.buf == nil {
			g.buf = make([]byte, 1<<20)
		}
		for left := size; left > 0; {
			n := min(left, int64(len(g.buf)))
			g.bytes.Read(g.buf[:n])
			if _, err := f.Write(g.buf[:n]); err != nil {
				f.Close()
				return err
			}
			left -= n
		}
	}
	return f.Close()
}

// mergeLayers fills d.Merged with the union of the layers (which hold no
// whiteouts): directories merge, the topmost non-directory wins and is
// hard-linked, so the plain driver reads the very same inodes.
func mergeLayers(d *Dataset) error {
	merged := d.Merged()
	if err := os.Mkdir(merged, 0o755); err != nil {
		return err
	}
	for i := 0; i < d.Layers; i++ {
		root := d.Layer(i)
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "." {
				return nil
			}
			dst := filepath.Join(merged, rel)
			if _, err := os.Lstat(dst); err == nil {
				return nil // a higher layer has it (a directory merges)
			}
			if e.IsDir() {
				return os.Mkdir(dst, 0o755)
			}
			return os.Link(p, dst)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// chownTree gives every entry below dir (dir included) to id: the layers
// belong to the user of the rootless drivers, as a user's image does, and
// root-run drivers, for which owners change nothing, mount the same ones.
func chownTree(dir string, id *Identity) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, id.UID, id.GID)
	})
}

// tarOnce makes DATA/NAME.tar from the directory src (its last element
// becomes the tar's top directory) unless it is already there.
func tarOnce(env *Env, src string) (string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("source tree for the real-tree case: %w (set --go-src)", err)
	}
	// A new Go installation is a new directory: its time renames the tar.
	h := fnv.New64a()
	fmt.Fprintf(h, "%s %d", src, fi.ModTime().UnixNano())
	out := filepath.Join(env.data, fmt.Sprintf("tree-%s-%016x.tar", filepath.Base(src), h.Sum64()))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp := out + ".tmp"
	if err := runTool("tar", "-C", filepath.Dir(src), "-cf", tmp, filepath.Base(src)); err != nil {
		return "", err
	}
	return out, os.Rename(tmp, out)
}

// sizeLabel writes a byte count the way the report does: 4 KiB, 1 GiB.
func sizeLabel(n int64) string {
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	case n >= kib && n%kib == 0:
		return fmt.Sprintf("%d KiB", n/kib)
	}
	return fmt.Sprintf("%d B", n)
}

// intsParam renders a list of numbers for Dataset.Params.
func intsParam[T int | int64](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatInt(int64(x), 10)
	}
	return strings.Join(s, ",")
}
