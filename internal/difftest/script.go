package difftest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/unionmount/unionmount/internal/dirent"
	"github.com/unionmount/unionmount/internal/xattr"
	"golang.org/x/sys/unix"
)

// Kind names an operation.
type Kind string

// The operations. Paths are relative to the mount; writes open with
// O_NONBLOCK so that a FIFO fails with ENXIO instead of blocking.
const (
	// Data: these change a file's content (and so its mtime).
	OpCreate     Kind = "create"      // open(O_WRONLY|O_CREAT|O_TRUNC, Mode), write Data
	OpCreateExcl Kind = "create-excl" // open(O_WRONLY|O_CREAT|O_EXCL, Mode), write Data
	OpAppend     Kind = "append"      // open(O_WRONLY|O_APPEND), write Data
	OpWriteAt    Kind = "write-at"    // open(O_RDWR), pwrite Data at Off
	OpTruncate   Kind = "truncate"    // truncate(path, Off)

	// Metadata: copy-up without a data change.
	OpOpenW       Kind = "open-w"      // open(O_WRONLY), close: copy-up only
	OpChmod       Kind = "chmod"       // chmod(path, Mode)
	OpChown       Kind = "chown"       // fchownat(UID, GID), NoFollow: AT_SYMLINK_NOFOLLOW
	OpUtimes      Kind = "utimes"      // utimensat(atime=mtime=Sec), NoFollow: AT_SYMLINK_NOFOLLOW
	OpSetxattr    Kind = "setxattr"    // lsetxattr(Name, Data, Flags)
	OpRemovexattr Kind = "removexattr" // lremovexattr(Name)

	// Namespace.
	OpMkdir   Kind = "mkdir"   // mkdir(path, Mode)
	OpRmdir   Kind = "rmdir"   // rmdir(path)
	OpUnlink  Kind = "unlink"  // unlink(path)
	OpRename  Kind = "rename"  // renameat2(path, Path2, Flags)
	OpLink    Kind = "link"    // link(path, Path2)
	OpSymlink Kind = "symlink" // symlink(Target, path)
	OpMkfifo  Kind = "mkfifo"  // mknod(path, S_IFIFO|Mode)

	// Reads.
	OpReaddir   Kind = "readdir"   // sorted names with types
	OpLstat     Kind = "lstat"     // type, mode, owner, size, nlink, ino, mtime
	OpStat      Kind = "stat"      // the same, following symlinks, without mtime
	OpReadlink  Kind = "readlink"  // the target
	OpRead      Kind = "read"      // size and content hash
	OpListxattr Kind = "listxattr" // sorted names
	OpGetxattr  Kind = "getxattr"  // the value of Name

	// Open descriptors across a change.
	// OpReadOld opens path read-only, appends Data through a second
	// descriptor (a copy-up) and reads the first one: it sees the new data.
	OpReadOld Kind = "read-old"
	// OpUnlinkOpen opens a regular file read-only, unlinks it and reads
	// it through the descriptor: the data stays, fstat says nlink 0.
	OpUnlinkOpen Kind = "unlink-open"
)

// Op is one step of a script.
type Op struct {
	Kind     Kind   `json:"k"`
	Path     string `json:"p"`
	Path2    string `json:"q,omitempty"`
	Target   string `json:"t,omitempty"`
	Data     string `json:"d,omitempty"`
	Name     string `json:"n,omitempty"`
	Mode     uint32 `json:"m,omitempty"`
	Off      int64  `json:"o,omitempty"`
	UID      int    `json:"u,omitempty"`
	GID      int    `json:"g,omitempty"`
	Flags    uint32 `json:"f,omitempty"`
	Sec      int64  `json:"s,omitempty"`
	NoFollow bool   `json:"nf,omitempty"`
}

// String renders the op as a readable line, e.g. `rename d/x -> a NOREPLACE`.
func (o Op) String() string {
	var b strings.Builder
	b.WriteString(string(o.Kind))
	if o.NoFollow {
		b.WriteString("(nofollow)")
	}
	b.WriteString(" " + o.Path)
	switch o.Kind {
	case OpCreate, OpCreateExcl:
		fmt.Fprintf(&b, " mode=%04o data=%q", o.Mode, o.Data)
	case OpAppend, OpReadOld:
		fmt.Fprintf(&b, " data=%q", o.Data)
	case OpWriteAt:
		fmt.Fprintf(&b, " off=%d data=%q", o.Off, o.Data)
	case OpTruncate:
		fmt.Fprintf(&b, " size=%d", o.Off)
	case OpChmod, OpMkdir, OpMkfifo:
		fmt.Fprintf(&b, " mode=%04o", o.Mode)
	case OpChown:
		fmt.Fprintf(&b, " %d:%d", o.UID, o.GID)
	case OpUtimes:
		fmt.Fprintf(&b, " t=%d", o.Sec)
	case OpSetxattr:
		fmt.Fprintf(&b, " %s=%q", o.Name, o.Data)
		if f := xattrFlagName(o.Flags); f != "" {
			b.WriteString(" " + f)
		}
	case OpRemovexattr, OpGetxattr:
		b.WriteString(" " + o.Name)
	case OpRename:
		b.WriteString(" -> " + o.Path2)
		if f := renameFlagName(o.Flags); f != "" {
			b.WriteString(" " + f)
		}
	case OpLink:
		b.WriteString(" -> " + o.Path2)
	case OpSymlink:
		fmt.Fprintf(&b, " -> %q", o.Target)
	}
	return b.String()
}

func renameFlagName(f uint32) string {
	switch f {
	case 0:
		return ""
	case unix.RENAME_NOREPLACE:
		return "NOREPLACE"
	case unix.RENAME_EXCHANGE:
		return "EXCHANGE"
	}
	return fmt.Sprintf("flags=%#x", f)
}

func xattrFlagName(f uint32) string {
	switch f {
	case 0:
		return ""
	case unix.XATTR_CREATE:
		return "CREATE"
	case unix.XATTR_REPLACE:
		return "REPLACE"
	}
	return fmt.Sprintf("flags=%#x", f)
}

// DevIno identifies an inode as stat(2) reports it.
type DevIno struct {
	Dev uint64 `json:"d"`
	Ino uint64 `json:"i"`
}

// Result is what one op observed.
type Result struct {
	// Err is the errno name ("ENOENT"), empty on success.
	Err string `json:"e,omitempty"`
	// Val is a small deterministic value (see the Kind constants).
	Val string `json:"v,omitempty"`
	// Inos are the inode identities the op saw, in a fixed order: the
	// comparison maps them to equality classes.
	Inos []DevIno `json:"i,omitempty"`
	// Pre is the inode a write op's path resolved to before the op, and
	// PreNlink its link count (nil when it did not exist); OpUnlinkOpen
	// sets PreNlink too.
	Pre      *DevIno `json:"pi,omitempty"`
	PreNlink uint64  `json:"pn,omitempty"`
	// Mtime of an lstat, in nanoseconds; compared only where deterministic.
	Mtime int64 `json:"m,omitempty"`
	// Resolved are the paths (relative to the mount) of the entries a
	// mutating op changed, with symlinks in the parents resolved, looked up
	// after the op; the comparison tracks which mtimes are deterministic
	// by them.
	Resolved []string `json:"r,omitempty"`
}

// String renders the result for a report.
func (r Result) String() string {
	if r.Err != "" {
		return r.Err
	}
	if r.Val == "" {
		return "ok"
	}
	return "ok " + r.Val
}

func errnoName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return strings.ToUpper(n)
		}
		return "errno" + strconv.Itoa(int(e))
	}
	return "error: " + err.Error()
}

// Executor runs ops in a process whose root directory is the tree under
// test (the runner chroots into the mount), so that no path, symlink or
// ".." can leave it.
type Executor struct {
	// procFd is /proc/self/fd, opened before the chroot: it tells which
	// path an open file has in the tree.
	procFd int
}

// NewExecutor opens /proc/self/fd; call it before chroot.
func NewExecutor() (*Executor, error) {
	fd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /proc/self/fd: %w", err)
	}
	return &Executor{procFd: fd}, nil
}

// Close releases the executor's descriptor.
func (x *Executor) Close() error { return unix.Close(x.procFd) }

func (x *Executor) abs(p string) string { return "/" + p }

// Exec runs op and reports what it saw.
func (x *Executor) Exec(op Op) Result {
	r, err := x.exec(op)
	if err != nil {
		return Result{Err: errnoName(err)}
	}
	return r
}

func (x *Executor) exec(op Op) (Result, error) {
	p := x.abs(op.Path)
	switch op.Kind {
	case OpCreate:
		return x.writeFile(op, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, -1)
	case OpCreateExcl:
		return x.writeFile(op, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, -1)
	case OpAppend:
		return x.writeFile(op, unix.O_WRONLY|unix.O_APPEND, -1)
	case OpWriteAt:
		return x.writeFile(op, unix.O_RDWR, op.Off)
	case OpOpenW:
		op.Data = ""
		return x.writeFile(op, unix.O_WRONLY, -1)
	case OpTruncate:
		if err := unix.Truncate(p, op.Off); err != nil {
			return Result{}, err
		}
		return x.resolvedFull(op.Path), nil
	case OpChmod:
		if err := unix.Chmod(p, op.Mode); err != nil {
			return Result{}, err
		}
		return x.resolvedFull(op.Path), nil
	case OpChown:
		if err := unix.Fchownat(unix.AT_FDCWD, p, op.UID, op.GID, atFlags(op.NoFollow)); err != nil {
			return Result{}, err
		}
		return x.resolved(op.Path, !op.NoFollow), nil
	case OpUtimes:
		ts := []unix.Timespec{{Sec: op.Sec, Nsec: 1}, {Sec: op.Sec, Nsec: 2}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, atFlags(op.NoFollow)); err != nil {
			return Result{}, err
		}
		return x.resolved(op.Path, !op.NoFollow), nil
	case OpSetxattr:
		if err := unix.Lsetxattr(p, op.Name, []byte(op.Data), int(op.Flags)); err != nil {
			return Result{}, err
		}
		return x.resolved(op.Path, false), nil
	case OpRemovexattr:
		if err := unix.Lremovexattr(p, op.Name); err != nil {
			return Result{}, err
		}
		return x.resolved(op.Path, false), nil
	case OpMkdir:
		if err := unix.Mkdir(p, op.Mode); err != nil {
			return Result{}, err
		}
		return x.resolved(op.Path, false), nil
	case OpRmdir:
		err := unix.Rmdir(p)
		return x.resolved(op.Path, false), err
	case OpUnlink:
		err := unix.Unlink(p)
		return x.resolved(op.Path, false), err
	case OpRename:
		// Resolve before: the rename may move a parent of the target.
		a, b := x.resolved(op.Path, false), x.resolved(op.Path2, false)
		if err := unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, x.abs(op.Path2), uint(op.Flags)); err != nil {
			// What stayed in place (a failed rename may still have
			// changed an upper directory's markers).
			r := Result{Err: errnoName(err)}
			for _, q := range []string{op.Path, op.Path2} {
				var st unix.Stat_t
				if unix.Lstat(x.abs(q), &st) == nil {
					r.Inos = append(r.Inos, DevIno{st.Dev, st.Ino})
				}
			}
			return r, nil
		}
		return Result{Resolved: append(a.Resolved, b.Resolved...)}, nil
	case OpLink:
		a, b := x.resolved(op.Path, false), x.resolved(op.Path2, false)
		if err := unix.Link(p, x.abs(op.Path2)); err != nil {
			return Result{}, err
		}
		return Result{Resolved: append(a.Resolved, b.Resolved...)}, nil
	case OpSymlink:
		if err := unix.Symlink(op.Target, p); err != nil {
			return Result{}, err
		}
		return x.resolved(op.Path, false), nil
	case OpMkfifo:
		if err := unix.Mknod(p, unix.S_IFIFO|op.Mode, 0); err != nil {
			return Result{}, err
		}
		return x.resolved(op.Path, false), nil
	case OpReaddir:
		return x.readdir(op.Path)
	case OpLstat, OpStat:
		var st unix.Stat_t
		var err error
		if op.Kind == OpLstat {
			err = unix.Lstat(p, &st)
		} else {
			err = unix.Stat(p, &st)
		}
		if err != nil {
			return Result{}, err
		}
		r := Result{Val: statValue(&st), Inos: []DevIno{{st.Dev, st.Ino}}}
		if op.Kind == OpLstat {
			r.Mtime = st.Mtim.Nano()
			r.Resolved = x.resolved(op.Path, false).Resolved
		}
		return r, nil
	case OpReadlink:
		buf := make([]byte, 4096)
		n, err := unix.Readlink(p, buf)
		if err != nil {
			return Result{}, err
		}
		return Result{Val: strconv.Quote(string(buf[:n]))}, nil
	case OpRead:
		return x.read(p)
	case OpReadOld:
		return x.readOld(op)
	case OpUnlinkOpen:
		return x.unlinkOpen(op)
	case OpListxattr:
		names, err := listXattrs(p)
		if err != nil {
			return Result{}, err
		}
		return Result{Val: strings.Join(names, ",")}, nil
	case OpGetxattr:
		buf := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, op.Name, buf)
		if err != nil {
			return Result{}, err
		}
		return Result{Val: strconv.Quote(string(buf[:n]))}, nil
	}
	return Result{}, fmt.Errorf("unknown op %q", op.Kind)
}

func atFlags(noFollow bool) int {
	if noFollow {
		return unix.AT_SYMLINK_NOFOLLOW
	}
	return 0
}

// writeFile opens the op's path with flags, writes op.Data (at off when
// off >= 0) and reports the file's size, link count and inode.
func (x *Executor) writeFile(op Op, flags int, off int64) (Result, error) {
	// What the path was before: with --timeout 0 the open's own path walk
	// looks every component up again, so this changes nothing for it.
	var pre unix.Stat_t
	preErr := unix.Stat(x.abs(op.Path), &pre)
	fd, err := unix.Open(x.abs(op.Path), flags|unix.O_NONBLOCK|unix.O_CLOEXEC, op.Mode)
	if err != nil {
		return Result{}, err
	}
	res := Result{Resolved: []string{x.fdPath(fd, op.Path)}}
	if preErr == nil {
		res.Pre = &DevIno{pre.Dev, pre.Ino}
		res.PreNlink = uint64(pre.Nlink)
	}
	if op.Data != "" {
		if off >= 0 {
			_, err = unix.Pwrite(fd, []byte(op.Data), off)
		} else {
			_, err = unix.Write(fd, []byte(op.Data))
		}
	}
	var st unix.Stat_t
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return Result{}, err
	}
	res.Val = fmt.Sprintf("size=%d nlink=%d", st.Size, st.Nlink)
	res.Inos = []DevIno{{st.Dev, st.Ino}}
	return res, nil
}

// fdPath returns the path of an open file relative to the mount, or
// fallback when /proc does not say.
func (x *Executor) fdPath(fd int, fallback string) string {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(x.procFd, strconv.Itoa(fd), buf)
	if err != nil {
		return fallback
	}
	s := string(buf[:n])
	if s == "/" {
		return "."
	}
	if rest, ok := strings.CutPrefix(s, "/"); ok && !strings.HasSuffix(rest, " (deleted)") {
		return rest
	}
	return fallback
}

// resolvedFull resolves the whole path, following a final symlink.
func (x *Executor) resolvedFull(p string) Result { return x.resolved(p, true) }

// resolved looks the op's path up again after the op: the parent with its
// symlinks resolved plus the last name, or (follow) the whole path.
func (x *Executor) resolved(p string, follow bool) Result {
	dir, name := splitPath(p)
	target, suffix := dir, "/"+name
	if follow {
		target, suffix = p, ""
	}
	fd, err := unix.Open(x.abs(target), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{Resolved: []string{p}}
	}
	defer unix.Close(fd)
	r := x.fdPath(fd, target)
	if r == "." {
		return Result{Resolved: []string{strings.TrimPrefix(suffix, "/")}}
	}
	return Result{Resolved: []string{r + suffix}}
}

func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ".", p
	}
	return p[:i], p[i+1:]
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "unknown"
}

func dtName(t uint8) string {
	switch t {
	case unix.DT_DIR:
		return "dir"
	case unix.DT_REG:
		return "file"
	case unix.DT_LNK:
		return "symlink"
	case unix.DT_FIFO:
		return "fifo"
	case unix.DT_CHR:
		return "char"
	case unix.DT_BLK:
		return "block"
	case unix.DT_SOCK:
		return "socket"
	}
	return "unknown"
}

func statValue(st *unix.Stat_t) string {
	s := fmt.Sprintf("%s %04o %d:%d nlink=%d", typeName(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Nlink)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFLNK:
		s += fmt.Sprintf(" size=%d", st.Size)
	case unix.S_IFCHR, unix.S_IFBLK:
		s += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return s
}

// VanishedMark flags a readdir entry that lstat then reported ENOENT for
// (kernel overlayfs lists whiteouts of directories that are not merged).
const VanishedMark = "!vanished"

// readdir lists dir and lstats every entry: the value is "name:type"
// sorted, with "!dino" when d_ino differs from lstat's st_ino, "!dtype"
// when d_type differs from lstat's type, VanishedMark when lstat fails
// with ENOENT.
func (x *Executor) readdir(p string) (Result, error) {
	dir := x.abs(p)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, err
	}
	ents, err := dirent.ReadAll(fd)
	unix.Close(fd)
	if err != nil {
		return Result{}, err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	var r Result
	var vals []string
	for _, e := range ents {
		v := e.Name + ":" + dtName(e.Type)
		var st unix.Stat_t
		if err := unix.Lstat(dir+"/"+e.Name, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				vals = append(vals, v+VanishedMark)
				continue
			}
			v += "!" + errnoName(err)
		} else {
			if st.Ino != e.Ino {
				v += "!dino"
			}
			if typeName(st.Mode) != dtName(e.Type) && e.Type != unix.DT_UNKNOWN {
				v += "!dtype"
			}
			r.Inos = append(r.Inos, DevIno{st.Dev, st.Ino})
		}
		vals = append(vals, v)
	}
	r.Val = strings.Join(vals, " ")
	return r, nil
}

func (x *Executor) read(p string) (Result, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Result{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Result{Val: typeName(st.Mode)}, nil
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, 1<<20))
	if err != nil {
		var perr *os.PathError
		if errors.As(err, &perr) {
			err = perr.Err
		}
		return Result{}, err
	}
	return Result{
		Val:  fmt.Sprintf("read=%d size=%d sha=%s", n, st.Size, hex.EncodeToString(h.Sum(nil))[:12]),
		Inos: []DevIno{{st.Dev, st.Ino}},
	}, nil
}

func (x *Executor) readOld(op Op) (Result, error) {
	p := x.abs(op.Path)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Result{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Result{Val: typeName(st.Mode)}, nil
	}
	w, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, err
	}
	_, err = unix.Write(w, []byte(op.Data))
	if cerr := unix.Close(w); err == nil {
		err = cerr
	}
	if err != nil {
		return Result{}, err
	}
	r := Result{Resolved: []string{x.fdPath(fd, op.Path)}}
	r.Val, err = readAll(fd)
	return r, err
}

func (x *Executor) unlinkOpen(op Op) (Result, error) {
	p := x.abs(op.Path)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Result{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		// Only regular files: fstat of an unlinked FIFO or directory
		// fails on unionmount, which has no handle to ask, so every
		// such step would differ for that one known reason.
		return Result{Val: typeName(st.Mode)}, nil
	}
	r := x.resolved(op.Path, false)
	r.PreNlink = uint64(st.Nlink)
	if err := unix.Unlink(p); err != nil {
		return Result{}, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return Result{}, err
	}
	v, err := readAll(fd)
	if err != nil {
		return Result{}, err
	}
	r.Val = fmt.Sprintf("nlink=%d size=%d %s", st.Nlink, st.Size, v)
	return r, nil
}

// readAll reads fd from offset 0 (at most 1 MiB) and describes what it
// read.
func readAll(fd int) (string, error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var off int64
	for off < 1<<20 {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			return "", err
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	return fmt.Sprintf("read=%d sha=%s", off, hex.EncodeToString(h.Sum(nil))[:12]), nil
}

// listXattrs returns the xattr names of p (not following a final symlink),
// sorted, less security.selinux (the machine's policy sets it).
func listXattrs(p string) ([]string, error) {
	all, err := xattr.List(p)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range all {
		if n != "security.selinux" {
			names = append(names, n)
		}
	}
	return names, nil
}
