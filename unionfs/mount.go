package unionfs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/copyup"
	"github.com/unionmount/unionmount/internal/lockrank"
	"github.com/unionmount/unionmount/internal/rmtree"
	"github.com/unionmount/unionmount/unionfs/rules"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// unionFS is one mounted union: its layers and the state shared by nodes.
type unionFS struct {
	opts     Options
	layers   []*layer // layers[0] is the upper when hasUpper
	hasUpper bool
	work     int // fd of <workdir>/work, on the upper's filesystem
	format   whiteout.Format
	// upper applies the write-side union rules to the upper (package
	// rules); nil without an upper.
	upper *rules.Upper
	// originXattr persists a copied-up entry's inode number in the upper.
	// It lives under *.overlay.*, so kernel overlayfs hides it as its own
	// private xattr when it mounts an upper we wrote.
	originXattr string
	inos        *inoMapper
	ids         idMapper
	cache       *lookupCache // nil when disabled
	// flushMatters: closing a file of the upper's filesystem may report a
	// deferred write error (NFS, FUSE, network filesystems), so FLUSH must
	// close a dup of the fd.
	flushMatters bool
	root         *node
	log          *log.Logger

	// linkMu guards every node's link (parent, name, more). Rename and
	// remove hold it for writing while they change names on disk and the
	// links with them; whatever turns a link into a name under a held
	// directory and works on that name (open, stat, xattrs, setattr, a
	// directory descriptor reopened from its parent) holds it for
	// reading, so none sees a name half moved (the gVisor overlay's
	// renameMu).
	linkMu lockrank.RWMutex[rankLink]
	// linkGen counts the renames and removes: each adds one while it
	// holds linkMu for writing (see node.relink).
	linkGen atomic.Uint64
	// fds holds the directory descriptors of nodes (ref.go).
	fds *dirFds
	// rootFds are the layer roots as entries of fds, never closed there.
	rootFds []*fdEntry
	// regen maps a node's first identity to the generation lookups give
	// it now, after open re-keyed it (lowerpt.go).
	regen sync.Map // fs.StableAttr -> uint64
}

func (u *unionFS) rootInode() *fs.Inode { return &u.root.Inode }

// WorkSubdir is the directory we use inside the workdir (the kernel's name,
// so either one cleans the other's leftovers).
const WorkSubdir = "work"

func newUnion(opts Options) (*unionFS, error) {
	if len(opts.Lowers) == 0 {
		return nil, errors.New("no lower layer: give at least one")
	}
	if opts.Upper != "" && opts.Workdir == "" {
		return nil, errors.New("an upper layer needs a workdir on the same filesystem")
	}
	u := &unionFS{opts: opts, work: -1, log: opts.Logger}
	if u.log == nil {
		u.log = log.New(os.Stderr, "unionmount: ", 0)
	}
	if err := u.init(); err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

// init opens the layers and the workdir. On error the caller closes u.
func (u *unionFS) init() error {
	opts := u.opts
	if opts.Upper != "" {
		l, err := openLayer(0, opts.Upper, true)
		if err != nil {
			return err
		}
		u.layers = append(u.layers, l)
		u.hasUpper = true
	}
	for _, p := range opts.Lowers {
		l, err := openLayer(len(u.layers), p, false)
		if err != nil {
			return err
		}
		u.layers = append(u.layers, l)
	}
	u.inos = newInoMapper(u.layers[0].dev)
	u.ids = idMapper{uids: opts.UIDMap, gids: opts.GIDMap, squashUID: opts.SquashUID, squashGID: opts.SquashGID}
	u.format = whiteout.Format{Rootless: opts.Rootless}
	if u.hasUpper {
		if err := u.openWork(); err != nil {
			return err
		}
		u.flushMatters = !closeNeverFails(u.layers[0].fd)
		u.upper = &rules.Upper{Work: u.work, Format: u.format}
		if opts.Debug {
			u.upper.Logf = u.log.Printf
		}
	}
	u.originXattr = "trusted.overlay.unionmount.origin"
	if u.format.Rootless {
		u.originXattr = "user.overlay.unionmount.origin"
	}
	var err error
	if u.cache, err = newLookupCache(opts.LookupCacheEntries); err != nil {
		return err
	}
	maxFds := opts.MaxDirFds
	if maxFds <= 0 {
		maxFds = defaultDirFds()
	}
	u.fds = newDirFds(maxFds)
	var dirs []layerDir
	for _, l := range u.layers {
		dirs = append(dirs, layerDir{layer: l.index, xwh: xattrOpacity(procAt(l.fd, ".")) == whiteout.XattrWhiteouts})
		u.rootFds = append(u.rootFds, &fdEntry{key: fdKey{layer: l.index}, fd: l.fd, static: true})
	}
	u.root = u.newNode(0, dirs)
	return nil
}

// defaultDirFds is DefaultMaxDirFds, or a quarter of the descriptor
// limit when that is lower (the rest is for open files and the splice
// pipes); at least 16.
func defaultDirFds() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur/4 < DefaultMaxDirFds {
		return max(int(rl.Cur/4), 16)
	}
	return DefaultMaxDirFds
}

// openWork prepares <workdir>/work: same filesystem as the upper, emptied
// of what an interrupted operation left, and probes whether trusted.*
// xattrs can be written (not as a user or in a user namespace).
func (u *unionFS) openWork() error {
	wd := u.opts.Workdir
	var st unix.Stat_t
	if err := unix.Stat(wd, &st); err != nil {
		return fmt.Errorf("workdir %q: %w", wd, err)
	}
	if st.Dev != u.layers[0].dev {
		return fmt.Errorf("workdir %q is not on the upper's filesystem: put it beside the upper", wd)
	}
	p := wd + "/" + WorkSubdir
	if err := unix.Mkdir(p, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create %q: %w", p, err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", p, err)
	}
	u.work = fd
	if err := copyup.CleanWorkdir(fd); err != nil {
		return fmt.Errorf("clean workdir %q: %w", p, err)
	}
	entries, err := readLayerDir(&layer{fd: fd}, "")
	if err != nil {
		return fmt.Errorf("clean workdir %q: %w", p, err)
	}
	for _, e := range entries {
		if err := rmtree.RemoveAt(fd, e.name); err != nil {
			return fmt.Errorf("clean workdir %q: %w", p, err)
		}
	}
	if !u.format.Rootless {
		if err := unix.Fsetxattr(fd, "trusted.unionmount.probe", []byte("1"), 0); err != nil {
			u.format.Rootless = true
		} else {
			unix.Fremovexattr(fd, "trusted.unionmount.probe")
		}
	}
	return nil
}

// closeNeverFails reports whether fd's filesystem has no flush operation
// of its own, so that close(2) of its files cannot fail.
func closeNeverFails(fd int) bool {
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil {
		return false
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC,
		unix.TMPFS_MAGIC, unix.F2FS_SUPER_MAGIC, unix.BCACHEFS_SUPER_MAGIC:
		return true
	}
	return false
}

func (u *unionFS) close() {
	for _, l := range u.layers {
		unix.Close(l.fd)
	}
	if u.work >= 0 {
		unix.Close(u.work)
	}
	u.cache.close()
	if u.fds != nil {
		u.fds.closeAll()
	}
}

// Mount mounts the union described by opts at mountpoint and starts
// serving it. The returned server's Wait returns once it is unmounted.
func Mount(mountpoint string, opts Options) (*fuse.Server, error) {
	u, err := newUnion(opts)
	if err != nil {
		return nil, err
	}
	// Modes come from the caller with its umask already applied.
	unix.Umask(0)

	var rootSt unix.Stat_t
	if err := unix.Fstat(u.layers[0].fd, &rootSt); err != nil {
		u.close()
		return nil, err
	}
	name := opts.FsName
	if name == "" {
		name = "unionmount"
	}
	mo := fuse.MountOptions{
		AllowOther:           opts.AllowOther,
		FsName:               name,
		Name:                 "unionmount",
		Options:              []string{"default_permissions"},
		MaxWrite:             1 << 20,
		MaxBackground:        64,
		EnableSymlinkCaching: true,
		EnableAcl:            true,
		DirectMount:          opts.DirectMount,
		IoUring:              opts.IoUring,
		// As fuse-overlayfs and a kernel overlay mount: device nodes of
		// the layers do not open, setuid programs in them run setuid (a
		// container's sudo or ping). go-fuse's default adds nosuid.
		// fusermount3 forces nosuid,nodev for non-root users anyway.
		DirectMountFlags: unix.MS_NODEV,
		// OPEN carries O_TRUNC, so a truncating open of a lower file
		// copies up no data (the kernel would otherwise send OPEN, then
		// SETATTR size 0 after a full copy-up).
		//
		// HANDLE_KILLPRIV_V2: we clear setuid, setgid and
		// security.capability on write, truncate and chown, because we
		// do them on a real file (or the kernel does, on a passthrough
		// file's backing file), which applies the VFS rules itself.
		// The kernel then sets SB_NOSEC and stops asking for
		// security.capability before every write (a GETXATTR round
		// trip per write(2): tar's 10 KiB writes paid one each).
		ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_HANDLE_KILLPRIV_V2,
		Debug:             opts.Debug,
		Logger:            u.log,
	}
	if !u.hasUpper {
		mo.Options = append(mo.Options, "ro")
	}
	entry, attr, neg := opts.EntryTimeout, opts.AttrTimeout, opts.NegativeTimeout
	fsopts := &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		RootStableAttr:  &fs.StableAttr{Ino: u.inos.ino(rootSt.Dev, rootSt.Ino)},
		// A mode of 0000 is a mode like any other (go-fuse would show 0644).
		NullPermissions: true,
		Logger:          u.log,
	}
	// Not fs.Mount: its WaitMount runs go-fuse's "poll hack", which opens
	// a file on the new mount from this process. Killed while that file is
	// open, the daemon would wait in its exit for itself to answer the
	// FLUSH (D state, mount hung). NewServer has mounted and answered INIT
	// when it returns; the daemon never opens its own mount.
	srv, err := fuse.NewServer(newNoOpendir(&killPriv{RawFileSystem: fs.NewNodeFS(u.root, fsopts)}), mountpoint, &fsopts.MountOptions)
	if err != nil {
		u.close()
		return nil, fmt.Errorf("mount %q: %w", mountpoint, err)
	}
	u.probePassthrough(srv)
	go srv.Serve()
	if opts.ReadAheadKB >= 0 {
		kb := opts.ReadAheadKB
		if kb == 0 {
			kb = DefaultReadAheadKB
		}
		if err := setReadAhead(mountpoint, kb); err != nil && opts.Debug {
			u.log.Printf("read-ahead not raised: %v", err)
		}
	}
	go func() {
		srv.Wait()
		u.close()
	}()
	return srv, nil
}

// DefaultTimeout is the kernel cache timeout the command line uses.
const DefaultTimeout = time.Hour
