// Package store keeps layers, images, containers and volumes in one
// directory, in a layout that shows the model (docs/images.md):
//
//	ROOT/
//	  lock                     flock(2): one writer at a time
//	  tmp/                     staging; emptied by the next writer
//	  layers/<chain id hex>/   one per layer, shared by every image using it
//	    layer.json             parent, diff_id, size, created, created_by, comment
//	    diff/                  the unpacked layer: a lower of the union
//	    tarsplit.gz            the exact tar bytes, less file contents
//	  images/<config hex>/     one per image; the directory name is its ID
//	    image.json             names and layers (chain IDs, bottom first)
//	    config.json            the OCI config, exact bytes
//	  containers/<id>/         one per container
//	    container.json         image, command, volumes, state
//	    init/                  mount points and /etc/hosts..., a lower
//	    upper/ work/           the writable layer and the union's workdir
//	    merged/                where the union is mounted
//	  volumes/<name>/          named volumes
//	    volume.json  _data/
//
// Every change lands by rename(2) of a fully written file or directory
// from tmp/, under the lock, so readers need no lock and a failed or
// interrupted operation leaves the store as it was (at worst, debris in
// tmp/ or the temporary file of a record rewritten in place, which the
// next writer removes, or a layer no image uses, which the next rmi
// collects).
package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/whiteout"
)

// Progress receives the progress of long operations: what is being done,
// bytes done and the total (-1 when unknown). It is called often; the
// receiver throttles its output.
type Progress func(what string, done, total int64)

// Options configures a Store.
type Options struct {
	// Root is the store directory.
	Root string
	// Rootless: the caller is not real root (a user namespace's root):
	// opaque directories get user.overlay.opaque and device nodes are
	// refused.
	Rootless bool
	// Unionmount is the unionmount binary that mounts containers.
	Unionmount string
	// Progress, when set, is told about loads, saves, imports and commits.
	Progress Progress
	// MaxLayerSize is the most bytes one layer may expand to when it is
	// imported, loaded or committed (layer.ApplyOptions.MaxSize). 0 means
	// the free space of the store's filesystem less a reserve
	// (layer.SpaceLimit), measured as each layer starts.
	MaxLayerSize int64
}

// Store is an opened store directory.
type Store struct {
	root string
	opts Options
}

// Open opens the store at opts.Root, creating its directories.
func Open(opts Options) (*Store, error) {
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	for _, d := range []string{"", "tmp", "layers", "images", "containers", "volumes"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("open store %s: %w", root, err)
		}
	}
	// The root stays private even when it existed before: a layer may
	// hold setuid files, and a host user who could traverse to
	// layers/ID/diff (chain IDs of public images are known) could run
	// them (docker's CVE-2021-41091). Containers reach their files
	// through the union and their volumes through bind mounts, both
	// made by root, so nothing needs more.
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: make it private: %w", root, err)
	}
	// Mount points show resolved in /proc/self/mountinfo.
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	// Layers and volumes must be reachable by container users that are
	// not root; the store root itself stays private.
	for _, d := range []string{"layers", "containers", "volumes"} {
		os.Chmod(filepath.Join(root, d), 0o711)
	}
	return &Store{root: root, opts: opts}, nil
}

// Root returns the store directory.
func (s *Store) Root() string { return s.root }

// Options returns the options the store was opened with.
func (s *Store) Options() Options { return s.opts }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

// Lock takes the store's writer lock, waiting for other writers, and
// removes what a writer that died left: the entries of tmp/ and the
// temporary files of records rewritten in place (see sweep). Call the
// returned function to release it.
func (s *Store) Lock() (func(), error) {
	f, err := os.OpenFile(s.path("lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock store: %w", err)
	}
	s.sweep()
	return func() { f.Close() }, nil
}

// sweep empties tmp/ and removes writeFile's temporary files (".tmp-*")
// beside the records that are rewritten in place, images/<id>/image.json,
// containers/<id>/container.json and layers/<id>/layer.json (its blobs).
// Every writer holds the lock, so under it they all belong to writers
// that died. Call with the lock held.
func (s *Store) sweep() {
	if ents, err := os.ReadDir(s.path("tmp")); err == nil {
		for _, e := range ents {
			removeAll(s.path("tmp", e.Name()))
		}
	}
	for _, kind := range []string{"images", "containers", "layers"} {
		dirs, _ := os.ReadDir(s.path(kind))
		for _, d := range dirs {
			ents, _ := os.ReadDir(s.path(kind, d.Name()))
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), tempPrefix) {
					os.Remove(s.path(kind, d.Name(), e.Name()))
				}
			}
		}
	}
}

// tempDir makes a staging directory under tmp/.
func (s *Store) tempDir(prefix string) (string, error) {
	d, err := os.MkdirTemp(s.path("tmp"), prefix)
	if err != nil {
		return "", fmt.Errorf("staging directory: %w", err)
	}
	return d, nil
}

// removeAll removes a tree that may hold directories without write
// permission (layers unpacked from images do).
func removeAll(p string) error {
	err := os.RemoveAll(p)
	if err == nil || !errors.Is(err, os.ErrPermission) {
		return err
	}
	filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// discard moves a tree out of sight (into tmp/) first, then removes it:
// a crash in between leaves debris in tmp/, never half a layer.
func (s *Store) discard(p string) error {
	d, err := s.tempDir("discard-")
	if err != nil {
		return err
	}
	if err := os.Rename(p, filepath.Join(d, "x")); err != nil {
		os.Remove(d)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return removeAll(d)
}

func randomID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// writeJSON writes v to p atomically (temp file, fsync, rename).
func writeJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(p, append(b, '\n'))
}

// writeStateJSON is writeJSON without the fsync, for records that change
// often and may lag after a crash (a container's state).
func writeStateJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(p, append(b, '\n'), false)
}

func writeFileAtomic(p string, b []byte) error { return writeFile(p, b, true) }

// tempPrefix starts the names of writeFile's temporary files.
const tempPrefix = ".tmp-"

func writeFile(p string, b []byte, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(p), tempPrefix+filepath.Base(p)+"-")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// applyOptions is how this store unpacks a layer over parent (a chain
// ID, "" for a base layer).
func (s *Store) applyOptions(split io.Writer, parent digest.Digest) layer.ApplyOptions {
	o := layer.ApplyOptions{
		Format:  whiteout.Format{Rootless: s.opts.Rootless},
		Devices: !s.opts.Rootless,
		Split:   split,
	}
	if parent != "" {
		var lowers []string
		for id := parent; id != ""; {
			if l, err := s.Layer(id); err == nil {
				lowers = append(lowers, s.LayerDiff(id))
				id = l.Parent
			} else if ll, err := s.LazyLayer(id); err == nil {
				// Not fetched: its directories' attributes are unknown
				// here, and the layers below still count.
				id = ll.Parent
			} else {
				break
			}
		}
		o.Lower = layer.NewView(lowers).Dir
	}
	return o
}

// progressReader reports bytes read to a Progress.
type progressReader struct {
	r     io.Reader
	what  string
	done  int64
	total int64
	p     Progress
}

func (s *Store) progress(r io.Reader, what string, total int64) io.Reader {
	if s.opts.Progress == nil {
		return r
	}
	return &progressReader{r: r, what: what, total: total, p: s.opts.Progress}
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.p(p.what, p.done, p.total)
	return n, err
}
