package layer

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/whiteout"
)

// ApplyOptions configures Apply.
type ApplyOptions struct {
	// Format is how whiteouts and opaque directories are written: char
	// 0/0 devices and trusted.overlay.opaque as root, user.overlay.opaque
	// rootless.
	Format whiteout.Format
	// Devices allows character and block devices (real root only).
	// Without it a device node other than the 0/0 whiteout is
	// ErrDeviceNode.
	Devices bool
	// Split, when not nil, receives the tar-split record of the stream
	// (see tarsplit.go); Stats.Split says whether it is complete.
	Split io.Writer
	// Lower, when set, names the directory the layers below show at a
	// relative path ("." for the root), if they show a directory there.
	// A directory this layer creates only because entries lie below it
	// (no entry of its own) then gets that directory's owner, mode,
	// times and xattrs, as it would keep them if the layer were applied
	// onto the unpacked layers below: otherwise the union would show the
	// implied directory's attributes over the real ones.
	Lower func(rel string) (string, bool)
	// MaxSize, when positive, is the most bytes the layer may expand to:
	// the uncompressed tar stream and the file content it unpacks to are
	// each held to it (a sparse entry writes more than its stream holds).
	// Past it Apply stops with image.ErrTooLarge: the defence against
	// decompression bombs. SpaceLimit gives the default the store uses.
	MaxSize int64
}

// Stats describes an applied layer.
type Stats struct {
	DiffID  digest.Digest // sha256 of the whole uncompressed stream
	TarSize int64         // length of the uncompressed stream
	Size    int64         // regular file bytes (once per inode) plus symlink targets
	Entries int
	// Split is true when the tar-split record given in ApplyOptions is
	// complete and Reassemble reproduces the stream.
	Split bool
	// DroppedXattrs counts xattrs not applied: the union's own markers
	// (*.overlay.*, *.unionmount.*), and trusted.*/security.* ones the
	// kernel refused to an unprivileged caller.
	DroppedXattrs int
}

// kind is what the applier knows of a path it created.
type kind uint8

const (
	kindImplicitDir kind = iota + 1 // created as the parent of an entry; an entry may still describe it
	kindDir                         // a directory entry
	kindFile                        // a regular file, fifo or device: a hard link may point at it
	kindSymlink                     // a hard link may point at it; nothing may go below it
	kindWhiteout                    // a whiteout marker: nothing may go below it or link to it
)

// applier unpacks one tar into an empty directory. Every path goes through
// the os.Root of that directory; the last component is created with *at
// calls on the parent's descriptor (O_EXCL, O_NOFOLLOW, AT_SYMLINK_NOFOLLOW),
// and the applier's own table of what it created refuses any entry whose
// parent is not a directory it made. Nothing is ever followed.
type applier struct {
	root *os.Root
	opts ApplyOptions
	rec  *recorder

	seen   map[string]kind     // every path created, "." included
	opaque map[string]bool     // directories marked opaque
	fds    map[string]*os.File // open parent directories (bounded)
	times  map[string][2]time.Time
	inodes map[string]bool // paths whose size was counted (hard-link targets)
	stats  Stats
	// written is the file content written so far (ApplyOptions.MaxSize).
	written int64
}

// Apply unpacks the uncompressed layer tar r into dir, which must be an
// empty directory, converting the OCI whiteout dialect to the one the
// union reads: ".wh.NAME" becomes a char 0/0 device NAME, ".wh..wh..opq"
// marks its directory opaque. It reads r to the end, so Stats.DiffID is the
// layer's diff_id.
//
// Each layer is unpacked into a directory of its own, so whiteouts never
// delete anything here: they are markers for the layers below, and the
// ordering traps of applying onto a merged tree (a whiteout after an entry
// of the same layer, an opaque marker that must spare its own layer's
// entries) do not arise. A layer that names a path twice, or a whiteout and
// an entry of one name, is refused instead (ErrDuplicateEntry).
//
// On error the directory holds a partial layer; callers unpack into a
// staging directory and discard it.
func Apply(dir string, r io.Reader, opts ApplyOptions) (Stats, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("apply layer: %w", err)
	}
	a := &applier{
		root:   root,
		opts:   opts,
		seen:   map[string]kind{".": kindImplicitDir},
		opaque: map[string]bool{},
		fds:    map[string]*os.File{},
		times:  map[string][2]time.Time{},
		inodes: map[string]bool{},
	}
	defer a.close()

	h := sha256.New()
	counted := &countingReader{r: io.TeeReader(r, h), max: opts.MaxSize}
	a.rec = newRecorder(counted, opts.Split)
	tr := tar.NewReader(a.rec)
	for {
		a.rec.beginHeader()
		hdr, err := tr.Next()
		if err == io.EOF {
			if !a.rec.sawEnd() {
				return a.stats, fmt.Errorf("read tar: %w: the stream ends without the end-of-archive blocks", image.ErrCorrupt)
			}
			break
		}
		if err != nil {
			return a.stats, corrupt("read tar header", err)
		}
		a.rec.beginContent()
		a.stats.Entries++
		if err := a.entry(hdr, tr); err != nil {
			return a.stats, err
		}
	}
	// Whatever follows the end blocks (the rest of a 10 KiB record) is
	// part of the stream and of its digest.
	a.rec.beginHeader()
	if _, err := io.Copy(io.Discard, a.rec); err != nil {
		return a.stats, corrupt("read tar", err)
	}
	if err := a.impliedDirs(); err != nil {
		return a.stats, err
	}
	if err := a.setDirTimes(); err != nil {
		return a.stats, err
	}
	split, err := a.rec.finish()
	if err != nil {
		return a.stats, err
	}
	a.stats.Split = split
	a.stats.TarSize = counted.n
	a.stats.DiffID = digest.NewDigest(digest.SHA256, h)
	return a.stats, nil
}

func corrupt(what string, err error) error {
	if errors.Is(err, image.ErrCorrupt) || errors.Is(err, image.ErrUnsupported) || errors.Is(err, image.ErrTooLarge) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, image.ErrCorrupt, err)
}

// countingReader counts the bytes read, and fails with ErrTooLarge once
// they pass max (when positive).
type countingReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.max > 0 && c.n > c.max {
		return n, tooLarge(c.max)
	}
	return n, err
}

func tooLarge(max int64) error {
	return fmt.Errorf("%w: it expands to more than %d bytes", image.ErrTooLarge, max)
}

// Linux limits: a path (PATH_MAX, with its NUL) and one component of it
// (NAME_MAX).
const (
	pathMax = 4096
	nameMax = 255
)

func (a *applier) close() {
	for _, f := range a.fds {
		f.Close()
	}
	a.root.Close()
}

// CleanName turns a tar entry name into a clean relative path ("." for the
// root), refusing absolute names and ".." components (ErrUnsafePath), and
// names Linux cannot hold (ErrUnsupported): a component longer than
// NAME_MAX (255 bytes) or a path of PATH_MAX (4096 bytes) or more. PAX
// headers let a tar name be up to 1 MiB long and 500,000 levels deep;
// such a layer could not be unpacked by path on any Linux system (docker
// fails on it with ENAMETOOLONG), so it is refused before anything is
// created.
func CleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty entry name", image.ErrUnsafePath)
	}
	if len(name) >= pathMax {
		return "", fmt.Errorf("%w: an entry name of %d bytes (%.40q...): Linux paths are shorter than %d bytes",
			image.ErrUnsupported, len(name), name, pathMax)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute name %q", image.ErrUnsafePath, name)
	}
	var parts []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%w: %q has a \"..\" component", image.ErrUnsafePath, name)
		}
		if len(c) > nameMax {
			return "", fmt.Errorf("%w: a name of %d bytes (%.40q...) in an entry: Linux names are at most %d bytes",
				image.ErrUnsupported, len(c), c, nameMax)
		}
		parts = append(parts, c)
	}
	if len(parts) == 0 {
		return ".", nil
	}
	return strings.Join(parts, "/"), nil
}

func (a *applier) entry(hdr *tar.Header, tr *tar.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		// PAX global records (git archive writes a comment): nothing to
		// create, and Go's reader does not carry them to later entries.
		return nil
	}
	name, err := CleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: the layer root %q is not a directory", image.ErrUnsafePath, hdr.Name)
		}
		return a.dir(hdr, ".")
	}
	dir, base := path.Split(name)
	dir = path.Clean(dir)

	// AUFS bookkeeping (".wh..wh.plnk/..." and friends) never shows in a
	// union: skip it and anything below it.
	for _, c := range strings.Split(name, "/") {
		if whiteout.IsMeta(c) && c != whiteout.OpaqueFile {
			return nil
		}
	}
	if strings.Contains(dir, whiteout.Prefix) {
		for _, c := range strings.Split(dir, "/") {
			if whiteout.Hidden(c) {
				return fmt.Errorf("%w: %q is below a whiteout name", image.ErrUnsafePath, name)
			}
		}
	}
	switch {
	case base == whiteout.OpaqueFile:
		return a.markOpaque(dir, name)
	case whiteout.Hidden(base):
		target, ok := whiteout.AUFSTarget(base)
		if !ok {
			return fmt.Errorf("%w: %q is not a valid whiteout name", image.ErrUnsafePath, name)
		}
		return a.whiteout(hdr, dir, path.Join(dir, target), target)
	}

	if k, ok := a.seen[name]; ok && !(k == kindImplicitDir && hdr.Typeflag == tar.TypeDir) {
		return fmt.Errorf("%w: %q", image.ErrDuplicateEntry, name)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return a.dir(hdr, name)
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		return a.file(hdr, tr, dir, base, name)
	case tar.TypeSymlink:
		return a.symlink(hdr, dir, base, name)
	case tar.TypeLink:
		return a.link(hdr, dir, name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return a.node(hdr, dir, base, name)
	}
	return fmt.Errorf("%w tar entry type %q for %q", image.ErrUnsupported, hdr.Typeflag, name)
}

// parent returns an open descriptor of the directory dir, creating it and
// its missing parents (mode 0755, owned by the caller) first. Every
// ancestor must be a directory of this layer.
func (a *applier) parent(dir string) (int, error) {
	if f, ok := a.fds[dir]; ok {
		return int(f.Fd()), nil
	}
	var f *os.File
	if dir == "." {
		var err error
		if f, err = a.root.Open("."); err != nil {
			return -1, fmt.Errorf("open %q: %w", dir, err)
		}
	} else {
		k := a.seen[dir]
		switch k {
		case 0, kindImplicitDir, kindDir:
		case kindSymlink:
			return -1, fmt.Errorf("%w: %q is a symlink of this layer; entries may not go through it", image.ErrUnsafePath, dir)
		default:
			return -1, fmt.Errorf("%w: %q is not a directory in this layer but has entries below it", image.ErrDuplicateEntry, dir)
		}
		pdir, base := path.Split(dir)
		pfd, err := a.parent(path.Clean(pdir))
		if err != nil {
			return -1, err
		}
		if k == 0 {
			if err := unix.Mkdirat(pfd, base, 0o755); err != nil {
				return -1, fmt.Errorf("create %q: %w", dir, err)
			}
			a.seen[dir] = kindImplicitDir
		}
		// One component below a directory this layer made, opened
		// without following: as safe as a.root.Open, and linear in the
		// depth (a.root.Open walks the whole path again).
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open %q: %w", dir, err)
		}
		f = os.NewFile(uintptr(fd), dir)
	}
	if len(a.fds) >= 64 {
		for k, old := range a.fds {
			old.Close()
			delete(a.fds, k)
			break
		}
	}
	a.fds[dir] = f
	return int(f.Fd()), nil
}

func (a *applier) dir(hdr *tar.Header, name string) error {
	switch a.seen[name] {
	case kindDir:
		return fmt.Errorf("%w: %q", image.ErrDuplicateEntry, name)
	case 0:
		dir, base := path.Split(name)
		pfd, err := a.parent(path.Clean(dir))
		if err != nil {
			return err
		}
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("create %q: %w", name, err)
		}
	}
	a.seen[name] = kindDir
	fd, err := a.openNoFollow(name, unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := a.attrsFd(fd, hdr, name); err != nil {
		return err
	}
	a.times[name] = [2]time.Time{accessTime(hdr), hdr.ModTime}
	return nil
}

// openNoFollow opens name (a directory this layer made) read-only.
func (a *applier) openNoFollow(name string, flags int) (int, error) {
	dir, base := path.Split(name)
	if name == "." {
		dir, base = ".", "."
	}
	pfd, err := a.parent(path.Clean(dir))
	if err != nil {
		return -1, err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		return -1, fmt.Errorf("open %q: %w", name, err)
	}
	return fd, nil
}

func (a *applier) file(hdr *tar.Header, tr *tar.Reader, dir, base, name string) error {
	pfd, err := a.parent(dir)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %q: %w", name, err)
	}
	a.seen[name] = kindFile
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var content io.Reader = tr
	if a.opts.MaxSize > 0 {
		content = io.LimitReader(tr, a.opts.MaxSize-a.written)
	}
	n, err := io.Copy(f, content)
	a.written += n
	if err == nil && a.opts.MaxSize > 0 && a.written == a.opts.MaxSize {
		// The budget is spent: one more byte of content is too many.
		if k, _ := tr.Read(make([]byte, 1)); k > 0 {
			err = tooLarge(a.opts.MaxSize)
		}
	}
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("write %q: %w", name, err)
		}
		return corrupt(fmt.Sprintf("read %q", name), err)
	}
	a.rec.file(name, n)
	a.stats.Size += n
	if err := a.attrsFd(fd, hdr, name); err != nil {
		return err
	}
	return a.setTimes(pfd, base, hdr, name)
}

func (a *applier) symlink(hdr *tar.Header, dir, base, name string) error {
	pfd, err := a.parent(dir)
	if err != nil {
		return err
	}
	if hdr.Linkname == "" {
		return fmt.Errorf("%w: symlink %q has no target", image.ErrCorrupt, name)
	}
	if len(hdr.Linkname) >= pathMax {
		return fmt.Errorf("%w: symlink %q has a target of %d bytes: Linux allows fewer than %d",
			image.ErrUnsupported, name, len(hdr.Linkname), pathMax)
	}
	// The target is kept verbatim: it is resolved in the container's root
	// at run time, and nothing here ever follows it.
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return fmt.Errorf("create symlink %q: %w", name, err)
	}
	a.seen[name] = kindSymlink
	a.stats.Size += int64(len(hdr.Linkname))
	if err := a.attrsAt(pfd, base, hdr, name); err != nil {
		return err
	}
	return a.setTimes(pfd, base, hdr, name)
}

func (a *applier) link(hdr *tar.Header, dir, name string) error {
	target, err := CleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link %q: %w", name, err)
	}
	if k := a.seen[target]; k != kindFile && k != kindSymlink {
		return fmt.Errorf("%w: hard link %q points at %q, which is not an earlier file of this layer",
			image.ErrUnsafePath, name, hdr.Linkname)
	}
	if _, err := a.parent(dir); err != nil {
		return err
	}
	if err := a.root.Link(target, name); err != nil {
		return fmt.Errorf("hard link %q to %q: %w", name, target, err)
	}
	a.seen[name] = a.seen[target]
	return nil
}

func (a *applier) node(hdr *tar.Header, dir, base, name string) error {
	var mode uint32
	var dev uint64
	switch hdr.Typeflag {
	case tar.TypeFifo:
		mode = unix.S_IFIFO
	case tar.TypeChar:
		mode = unix.S_IFCHR
		dev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeBlock:
		mode = unix.S_IFBLK
		dev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	}
	whiteoutDev := mode == unix.S_IFCHR && dev == 0
	if mode != unix.S_IFIFO && !whiteoutDev && !a.opts.Devices {
		return fmt.Errorf("%w: %q is a device node (%d:%d); load the image as root", image.ErrDeviceNode,
			name, hdr.Devmajor, hdr.Devminor)
	}
	pfd, err := a.parent(dir)
	if err != nil {
		return err
	}
	if err := unix.Mknodat(pfd, base, mode|0o600, int(dev)); err != nil {
		return fmt.Errorf("create %q: %w", name, err)
	}
	a.seen[name] = kindFile
	if whiteoutDev {
		// The union reads a char 0/0 device as a whiteout, whatever the
		// tar meant by it.
		a.seen[name] = kindWhiteout
	}
	if err := a.attrsAt(pfd, base, hdr, name); err != nil {
		return err
	}
	return a.setTimes(pfd, base, hdr, name)
}

// whiteout writes the marker that hides target (in dir) in lower layers,
// with the entry's owner and times.
func (a *applier) whiteout(hdr *tar.Header, dir, target, base string) error {
	if _, ok := a.seen[target]; ok {
		return fmt.Errorf("%w: %q is both an entry and a whiteout", image.ErrDuplicateEntry, target)
	}
	pfd, err := a.parent(dir)
	if err != nil {
		return err
	}
	if err := a.opts.Format.MakeWhiteout(pfd, base); err != nil {
		return fmt.Errorf("whiteout %q: %w", target, err)
	}
	a.seen[target] = kindWhiteout
	name := base
	var st unix.Stat_t
	if unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		name = whiteout.Prefix + base // the fallback dialect
	}
	if err := unix.Fchownat(pfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return chownError(target, hdr, err)
	}
	return a.setTimes(pfd, name, hdr, target)
}

// markOpaque makes dir hide the directories of the same name below it. In
// the tar the marker may come before or after the layer's own entries of
// dir: they stay either way.
func (a *applier) markOpaque(dir, name string) error {
	if a.opaque[dir] {
		return fmt.Errorf("%w: %q", image.ErrDuplicateEntry, name)
	}
	if _, err := a.parent(dir); err != nil {
		return err
	}
	fd, err := a.openNoFollow(dir, unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := a.opts.Format.SetOpaque(fd); err != nil {
		return fmt.Errorf("mark %q opaque: %w", dir, err)
	}
	a.opaque[dir] = true
	return nil
}

// attrsFd sets owner, mode and xattrs of an open file or directory, in
// that order (chown clears setuid bits and file capabilities).
func (a *applier) attrsFd(fd int, hdr *tar.Header, name string) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return chownError(name, hdr, err)
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode)&0o7777); err != nil {
		return fmt.Errorf("chmod %q: %w", name, err)
	}
	return a.xattrs(hdr, name, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) })
}

// attrsAt is attrsFd for an entry that cannot be opened (symlink, device,
// fifo), by name in its parent directory pfd.
func (a *applier) attrsAt(pfd int, base string, hdr *tar.Header, name string) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return chownError(name, hdr, err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// Not a symlink (we just made it), so nothing is followed.
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %q: %w", name, err)
		}
	}
	p := "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
	return a.xattrs(hdr, name, func(k string, v []byte) error { return unix.Lsetxattr(p, k, v, 0) })
}

func chownError(name string, hdr *tar.Header, err error) error {
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("chown %q to %d:%d: the ids are outside this user namespace: give your user a subordinate id range in /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER): %w",
			name, hdr.Uid, hdr.Gid, err)
	}
	return fmt.Errorf("chown %q: %w", name, err)
}

const paxXattr = "SCHILY.xattr."

// xattrs applies the entry's SCHILY.xattr.* records, dropping the
// union's own markers: a layer must not plant opaque flags or whiteouts
// through xattrs, nor forge unionmount's bookkeeping.
func (a *applier) xattrs(hdr *tar.Header, name string, set func(string, []byte) error) error {
	var keys []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattr) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		x := k[len(paxXattr):]
		if whiteout.IsPrivateXattr(x) || strings.Contains(x, ".overlay.") {
			a.stats.DroppedXattrs++
			continue
		}
		err := set(x, []byte(hdr.PAXRecords[k]))
		if err == nil {
			continue
		}
		// trusted.* needs real root; user.* is refused on symlinks and
		// devices. Drop what the kernel does not allow here.
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES) {
			a.stats.DroppedXattrs++
			continue
		}
		return fmt.Errorf("set xattr %s on %q: %w", x, name, err)
	}
	return nil
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

func (a *applier) setTimes(pfd int, base string, hdr *tar.Header, name string) error {
	ts := []unix.Timespec{unix.NsecToTimespec(accessTime(hdr).UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %q: %w", name, err)
	}
	return nil
}

// impliedDirs gives the directories this layer created without an entry
// of their own the attributes of the directory below (ApplyOptions.Lower).
func (a *applier) impliedDirs() error {
	if a.opts.Lower == nil {
		return nil
	}
	for name, k := range a.seen {
		if k != kindImplicitDir {
			continue
		}
		lower, ok := a.opts.Lower(name)
		if !ok {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(lower, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		fd, err := a.openNoFollow(name, unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		err = copyDirAttrs(fd, lower, &st)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("attributes of %q from the layer below: %w", name, err)
		}
		a.times[name] = [2]time.Time{time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())}
	}
	return nil
}

// copyDirAttrs gives the directory open at fd the owner, mode and xattrs
// (less the union's markers) of the directory at src.
func copyDirAttrs(fd int, src string, st *unix.Stat_t) error {
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
		return err
	}
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, n := range names {
		if whiteout.IsPrivateXattr(n) || strings.Contains(n, ".overlay.") {
			continue
		}
		v, err := getXattr(src, n)
		if err != nil {
			continue
		}
		if err := unix.Fsetxattr(fd, n, v, 0); err != nil && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOTSUP) {
			return err
		}
	}
	return nil
}

// setDirTimes sets the times of directory entries last: creating a child
// changes its parent's mtime.
func (a *applier) setDirTimes() error {
	for name, t := range a.times {
		dir, base := path.Split(name)
		if name == "." {
			dir, base = ".", "."
		}
		pfd, err := a.parent(path.Clean(dir))
		if err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(t[0].UnixNano()), unix.NsecToTimespec(t[1].UnixNano())}
		if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %q: %w", name, err)
		}
	}
	return nil
}
