package copyup

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/unionmount/unionmount/internal/rmtree"
	"golang.org/x/sys/unix"
)

// TempPrefix starts the name of every temporary entry this package creates
// in a workdir, and nothing else's. CleanWorkdir removes what carries it.
const TempPrefix = "#unionmount-copyup-"

// Options control durability, data and naming of one copy-up.
type Options struct {
	// NoFsync skips every fsync (volatile mounts, fsync=0).
	NoFsync bool
	// SyncDir also fsyncs the upper directory after the rename, so the new
	// name is durable when Entry returns. Kernel overlayfs does not: the
	// rename reaches the disk with the next fsync of the file (ext4 and
	// xfs commit it with any later journal commit), and until then a crash
	// shows the old view, which is one of the two allowed outcomes.
	SyncDir bool
	// SkipData creates an empty regular file with the source's metadata and
	// copies no data: for an open with O_TRUNC or a truncate to 0.
	SkipData bool
	// Xattrs are set on the copy after the source's (e.g. the caller's
	// "user.unionmount.origin"). Failures fail the copy-up, except user.*
	// names on symlinks and special files, which Linux refuses; those are
	// skipped.
	Xattrs map[string][]byte
	// UID and GID own the copy; -1 keeps the source's. Note the zero value
	// means root: callers that want the source's owner set both to -1.
	UID, GID int

	// hook, when set, runs before each step; an error aborts the copy-up
	// there as if the step had failed. Tests use it to inject failures and
	// to stop a copy-up at a chosen step.
	hook func(Step) error
	// firstData is the first data method to try (tests and benchmarks);
	// the zero value tries them all from FICLONE on.
	firstData dataMethod
	// noTmpfile builds a regular file as a named temp in the workdir
	// instead of an O_TMPFILE one (the fallback, and tests of it).
	noTmpfile bool
}

// Source is an entry in a lower layer.
type Source struct {
	// DirFd is the lower parent directory (O_PATH or O_RDONLY|O_DIRECTORY).
	DirFd int
	// Name is the entry's name in DirFd: one path component.
	Name string
	// Stat is the entry's lstat. Type, mode, owner, times and rdev of the
	// copy come from it; data and xattrs are read from the layer.
	Stat unix.Stat_t
}

// Step names one stage of the copy-up transaction, in the order they run.
type Step int

const (
	// StepCreate creates the temp in the workdir with the source's type.
	StepCreate Step = iota + 1
	// StepData copies a regular file's data (FICLONE, copy_file_range or
	// read/write), keeping holes.
	StepData
	// StepOwner sets the owner (chown clears setuid/setgid and file
	// capabilities, so it comes first).
	StepOwner
	// StepXattrs copies the source's xattrs, then sets Options.Xattrs.
	StepXattrs
	// StepMode sets the full mode, setuid, setgid and sticky included.
	StepMode
	// StepTimes sets atime and mtime to the nanosecond.
	StepTimes
	// StepSync fsyncs the temp.
	StepSync
	// StepRename moves the temp into place with RENAME_NOREPLACE: the
	// commit point. Failures from here on leave the entry in place.
	StepRename
	// StepRestoreMode clears the owner write bit the rename needed on a
	// read-only directory when the daemon has no CAP_DAC_OVERRIDE (see
	// txn.rename). Usually nothing to do.
	StepRestoreMode
	// StepSyncDir fsyncs the upper directory.
	StepSyncDir
)

func (s Step) String() string {
	switch s {
	case StepCreate:
		return "create temp"
	case StepData:
		return "copy data"
	case StepOwner:
		return "set owner"
	case StepXattrs:
		return "copy xattrs"
	case StepMode:
		return "set mode"
	case StepTimes:
		return "set times"
	case StepSync:
		return "sync temp"
	case StepRename:
		return "rename into place"
	case StepRestoreMode:
		return "restore dir mode"
	case StepSyncDir:
		return "sync upper dir"
	}
	return "step " + strconv.Itoa(int(s))
}

// StepError is the error of a failed copy-up: which entry, at which step.
// Unwrap gives the cause, so errors.Is(err, unix.EEXIST) and errors.As to
// unix.Errno work.
type StepError struct {
	Name string // the destination name
	Step Step
	Err  error
}

// Committed reports whether the entry is in the upper despite the error:
// the failure came after the rename (its mode or durability may be off).
// Otherwise nothing was left in the upper.
func (e *StepError) Committed() bool { return e.Step > StepRename }

func (e *StepError) Error() string {
	return fmt.Sprintf("copy up %q: %s: %v", e.Name, e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// Entry copies src into the upper as dstDirFd/dstName. It builds the copy
// in workFd (a directory on the upper's filesystem) under a unique temp
// name, then renames it into place with RENAME_NOREPLACE. It returns an
// error wrapping unix.EEXIST if dstName already exists, and leaves it
// untouched. A directory is copied empty, with its metadata. See the
// package documentation for the steps and the crash guarantee.
func Entry(src Source, dstDirFd int, dstName string, workFd int, opts Options) error {
	if err := checkName(src.Name); err != nil {
		return &StepError{Name: dstName, Step: StepCreate, Err: fmt.Errorf("source name %q: %w", src.Name, err)}
	}
	if err := checkName(dstName); err != nil {
		return &StepError{Name: dstName, Step: StepCreate, Err: fmt.Errorf("destination name: %w", err)}
	}
	t := &txn{
		src:    src,
		typ:    src.Stat.Mode & unix.S_IFMT,
		dstDir: dstDirFd,
		dst:    dstName,
		work:   workFd,
		opts:   opts,
		fd:     -1,
	}
	steps := []struct {
		step Step
		run  func() error
	}{
		{StepCreate, t.create},
		{StepData, t.copyData},
		{StepOwner, t.setOwner},
		{StepXattrs, t.setXattrs},
		{StepMode, t.setMode},
		{StepTimes, t.setTimes},
		{StepSync, t.sync},
		{StepRename, t.rename},
	}
	for _, s := range steps {
		if err := t.do(s.step, s.run); err != nil {
			err = t.rollback(err)
			if s.step == StepRename && t.tmpfile && errors.Is(err, unix.EPERM) {
				// fs.protected_hardlinks refused to link a file we do not
				// own (rootless, a setuid source): build it named instead.
				opts.noTmpfile = true
				return Entry(src, dstDirFd, dstName, workFd, opts)
			}
			return err
		}
	}
	t.closeTemp()
	// Committed: from here on nothing is rolled back.
	if err := t.do(StepRestoreMode, t.restoreMode); err != nil {
		return err
	}
	return t.do(StepSyncDir, t.syncDir)
}

// txn is one copy-up in progress.
type txn struct {
	src    Source
	typ    uint32 // S_IFMT bits of the source
	dstDir int
	dst    string
	work   int
	opts   Options

	tmp string // the temp's name in work; "" when there is nothing to roll back
	fd  int    // the temp opened (regular file; directory when syncing), else -1
	// tmpfile: the temp is an unnamed O_TMPFILE file, reached through fd;
	// linking it into place is the commit, and a crash leaves nothing.
	tmpfile bool

	// writableForRename: the directory was made owner-writable for the
	// rename; StepRestoreMode puts the source's mode back.
	writableForRename bool
}

func (t *txn) do(s Step, run func() error) error {
	if t.opts.hook != nil {
		if err := t.opts.hook(s); err != nil {
			return &StepError{Name: t.dst, Step: s, Err: err}
		}
	}
	if err := run(); err != nil {
		return &StepError{Name: t.dst, Step: s, Err: err}
	}
	return nil
}

// rollback is the one way out of a failed copy-up: close and remove the
// temp. If the removal fails too, the temp stays for CleanWorkdir and both
// errors are returned.
func (t *txn) rollback(err error) error {
	t.closeTemp()
	if t.tmp == "" {
		return err
	}
	if rerr := rmtree.RemoveAt(t.work, t.tmp); rerr != nil {
		return errors.Join(err, fmt.Errorf("copy up %q: remove temp %q: %w", t.dst, t.tmp, rerr))
	}
	t.tmp = ""
	return err
}

func (t *txn) closeTemp() {
	if t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
	}
}

// create makes the temp (StepCreate), retrying on a name collision.
func (t *txn) create() error {
	var target string
	switch t.typ {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFSOCK:
	case unix.S_IFLNK:
		var err error
		if target, err = readlinkAt(t.src.DirFd, t.src.Name, t.src.Stat.Size); err != nil {
			return fmt.Errorf("read link: %w", err)
		}
	default:
		return fmt.Errorf("file type %#o: %w", t.typ, unix.EINVAL)
	}
	const tries = 8
	for i := 0; ; i++ {
		name := TempPrefix + rand.Text()
		err := t.createNamed(name, target)
		if errors.Is(err, unix.EEXIST) && i < tries {
			continue
		}
		return err
	}
}

// createNamed creates the temp as name. It sets t.tmp as soon as something
// exists, so that a failure after that is rolled back.
func (t *txn) createNamed(name, target string) error {
	switch t.typ {
	case unix.S_IFREG:
		if !t.opts.noTmpfile {
			// An unnamed file: one directory operation fewer than a named
			// temp and its rename (the kernel's ovl_copy_up_tmpfile).
			fd, err := unix.Openat(t.work, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			if err == nil {
				t.fd, t.tmpfile = fd, true
				return nil
			}
			if err != unix.EOPNOTSUPP && err != unix.EISDIR && err != unix.EINVAL {
				return err
			}
		}
		fd, err := unix.Openat(t.work, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		t.tmp, t.fd = name, fd
	case unix.S_IFDIR:
		if err := unix.Mkdirat(t.work, name, 0o700); err != nil {
			return err
		}
		t.tmp = name
		if !t.opts.NoFsync {
			fd, err := unix.Openat(t.work, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open for sync: %w", err)
			}
			t.fd = fd
		}
	case unix.S_IFLNK:
		if err := unix.Symlinkat(target, t.work, name); err != nil {
			return err
		}
		t.tmp = name
	default: // FIFO, socket, character or block device
		if err := unix.Mknodat(t.work, name, t.typ|0o600, int(t.src.Stat.Rdev)); err != nil {
			return err
		}
		t.tmp = name
	}
	return nil
}

// copyData copies a regular file's data into the temp (StepData).
func (t *txn) copyData() error {
	if t.typ != unix.S_IFREG || t.opts.SkipData {
		return nil
	}
	src, err := openSource(t.src.DirFd, t.src.Name)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return fmt.Errorf("stat source: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("source is no longer a regular file: %w", unix.ESTALE)
	}
	_, err = copyFileData(t.fd, src, st.Size, t.opts.firstData)
	return err
}

// openSource opens a lower regular file for reading without following a
// symlink, without blocking should a FIFO have taken its place, and
// without touching its atime when the kernel lets us.
func openSource(dirFd int, name string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Openat(dirFd, name, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM { // O_NOATIME needs ownership or CAP_FOWNER
		fd, err = unix.Openat(dirFd, name, flags, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open source: %w", err)
	}
	return fd, nil
}

// temp names the temp for the *at calls: (dir, name) and the flag that
// keeps them from following a symlink. An O_TMPFILE temp has only its
// descriptor, whose /proc path the calls must follow.
func (t *txn) temp() (dir int, name string, nofollow int) {
	if t.tmpfile {
		return unix.AT_FDCWD, "/proc/self/fd/" + strconv.Itoa(t.fd), 0
	}
	return t.work, t.tmp, unix.AT_SYMLINK_NOFOLLOW
}

// setOwner gives the temp its owner (StepOwner).
func (t *txn) setOwner() error {
	uid, gid := t.opts.UID, t.opts.GID
	if uid < 0 {
		uid = int(t.src.Stat.Uid)
	}
	if gid < 0 {
		gid = int(t.src.Stat.Gid)
	}
	dir, name, nofollow := t.temp()
	return unix.Fchownat(dir, name, uid, gid, nofollow)
}

// setXattrs copies the source's xattrs and sets Options.Xattrs
// (StepXattrs).
func (t *txn) setXattrs() error {
	if t.tmpfile {
		_, dst, _ := t.temp()
		return copyXattrs(procPath(t.src.DirFd, t.src.Name), dst, true, t.typ, t.opts.Xattrs)
	}
	return copyXattrs(procPath(t.src.DirFd, t.src.Name), procPath(t.work, t.tmp), false, t.typ, t.opts.Xattrs)
}

// setMode gives the temp the source's full mode (StepMode). Symlinks have
// no mode of their own on Linux.
func (t *txn) setMode() error {
	if t.typ == unix.S_IFLNK {
		return nil
	}
	// The temp is not a symlink, so following the last component is safe.
	dir, name, _ := t.temp()
	return unix.Fchmodat(dir, name, t.src.Stat.Mode&0o7777, 0)
}

// setTimes gives the temp the source's atime and mtime (StepTimes).
func (t *txn) setTimes() error {
	ts := []unix.Timespec{t.src.Stat.Atim, t.src.Stat.Mtim}
	dir, name, nofollow := t.temp()
	return unix.UtimesNanoAt(dir, name, ts, nofollow)
}

// sync flushes the temp's data and metadata (StepSync).
//
// A regular file without data (empty, or SkipData) is not synced, as the
// kernel's copy-up syncs only what it copied (ovl_copy_up_file): there is
// no data to lose, and the owner, mode and xattrs set before the rename are
// journalled ahead of it, so no crash shows the name without them.
func (t *txn) sync() error {
	if t.opts.NoFsync || t.fd < 0 {
		return nil
	}
	if t.typ == unix.S_IFREG && (t.opts.SkipData || t.src.Stat.Size == 0) {
		return nil
	}
	return unix.Fsync(t.fd)
}

// rename moves the temp into place (StepRename), the commit point.
//
// Moving a directory to another parent rewrites its ".." entry, for which
// the kernel wants write permission on the directory itself. A daemon
// without CAP_DAC_OVERRIDE (plain rootless, outside a user namespace) lacks
// it on a read-only directory: then the directory gets the owner write bit
// for the rename and StepRestoreMode takes it away again. A crash between
// the two leaves the directory owner-writable, its only difference.
func (t *txn) rename() error {
	if t.tmpfile {
		// linkat never replaces: EEXIST when the name is taken, as
		// RENAME_NOREPLACE.
		_, name, _ := t.temp()
		return unix.Linkat(unix.AT_FDCWD, name, t.dstDir, t.dst, unix.AT_SYMLINK_FOLLOW)
	}
	err := unix.Renameat2(t.work, t.tmp, t.dstDir, t.dst, unix.RENAME_NOREPLACE)
	if err == unix.EACCES && t.typ == unix.S_IFDIR && t.src.Stat.Mode&0o200 == 0 {
		if err := unix.Fchmodat(t.work, t.tmp, t.src.Stat.Mode&0o7777|0o200, 0); err != nil {
			return err
		}
		t.writableForRename = true
		err = unix.Renameat2(t.work, t.tmp, t.dstDir, t.dst, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		return err
	}
	t.tmp = ""
	return nil
}

// restoreMode undoes the write bit rename may have added (StepRestoreMode).
// chmod leaves the times alone.
func (t *txn) restoreMode() error {
	if !t.writableForRename {
		return nil
	}
	return unix.Fchmodat(t.dstDir, t.dst, t.src.Stat.Mode&0o7777, 0)
}

// syncDir makes the new name durable (StepSyncDir).
func (t *txn) syncDir() error {
	if t.opts.NoFsync || !t.opts.SyncDir {
		return nil
	}
	return fsyncDir(t.dstDir)
}

// fsyncDir fsyncs a directory fd, reopening it when it is an O_PATH fd
// (which fsync refuses with EBADF).
func fsyncDir(fd int) error {
	err := unix.Fsync(fd)
	if err != unix.EBADF {
		return err
	}
	rfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	return unix.Fsync(rfd)
}

// readlinkAt reads a symlink's target; size is the lstat size, a hint.
func readlinkAt(dirFd int, name string, size int64) (string, error) {
	n := int(max(size, 255)) + 1
	for {
		buf := make([]byte, n)
		k, err := unix.Readlinkat(dirFd, name, buf)
		if err != nil {
			return "", err
		}
		if k < len(buf) {
			return string(buf[:k]), nil
		}
		if n > 1<<20 {
			return "", unix.ENAMETOOLONG
		}
		n *= 2
	}
}

// checkName accepts exactly one path component.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return unix.EINVAL
	}
	return nil
}

// procPath names dirFd/name for the calls that only take a path: the
// magic link resolves to the directory itself, and the l* calls do not
// follow name.
func procPath(dirFd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirFd) + "/" + name
}
