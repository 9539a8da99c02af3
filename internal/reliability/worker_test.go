package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// workerMain is the test binary run as a worker (RELIABILITY_WORKER=kind):
// it reads its job as JSON on stdin, writes its result as JSON on stdout
// and returns the exit code.
func workerMain(kind string) int {
	var err error
	switch kind {
	case "ops":
		err = opsWorker()
	case "load":
		err = loadWorker()
	case "race":
		err = raceWorker()
	default:
		err = fmt.Errorf("unknown worker kind %q", kind)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s worker: %v\n", kind, err)
		return 1
	}
	return 0
}

// userOp is one system call an ops worker makes, as its user.
type userOp struct {
	Op    string // see doOp
	Path  string
	Path2 string `json:",omitempty"` // rename, link: the new name
	Name  string `json:",omitempty"` // xattr name
	Data  string `json:",omitempty"` // content, xattr value
	Mode  uint32 `json:",omitempty"` // create, mkdir, chmod, mknod mode; truncate size
	Dev   uint64 `json:",omitempty"` // mknod
	ID    int    `json:",omitempty"` // chown: uid and gid
}

func (o userOp) String() string {
	s := o.Op + " " + o.Path
	if o.Path2 != "" {
		s += " " + o.Path2
	}
	if o.Name != "" {
		s += " " + o.Name
	}
	if o.Mode != 0 {
		s += fmt.Sprintf(" %#o", o.Mode)
	}
	return s
}

// userResult is what one userOp saw.
type userResult struct {
	Errno string // "" for success, else the errno's name
	Data  string `json:",omitempty"` // read content, xattr value or names, listing
	Mode  uint32 `json:",omitempty"` // stat: st_mode
}

func opsWorker() error {
	var ops []userOp
	if err := json.NewDecoder(os.Stdin).Decode(&ops); err != nil {
		return fmt.Errorf("decode job: %w", err)
	}
	unix.Umask(0)
	out := make([]userResult, len(ops))
	for i, o := range ops {
		data, mode, err := doOp(o)
		out[i] = userResult{Errno: errnoName(err), Data: data, Mode: mode}
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func doOp(o userOp) (data string, mode uint32, err error) {
	p := o.Path
	switch o.Op {
	case "read":
		b, err := os.ReadFile(p)
		return string(b), 0, err
	case "open-w":
		return "", 0, openClose(p, unix.O_WRONLY, 0)
	case "open-trunc":
		return "", 0, openClose(p, unix.O_RDWR|unix.O_TRUNC, 0)
	case "append":
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", 0, err
		}
		_, err = unix.Write(fd, []byte(o.Data))
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		return "", 0, err
	case "create":
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, o.Mode)
		if err != nil {
			return "", 0, err
		}
		_, err = unix.Write(fd, []byte(o.Data))
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		return "", 0, err
	case "truncate":
		return "", 0, unix.Truncate(p, int64(o.Mode))
	case "unlink":
		return "", 0, unix.Unlink(p)
	case "rmdir":
		return "", 0, unix.Rmdir(p)
	case "mkdir":
		return "", 0, unix.Mkdir(p, o.Mode)
	case "rename":
		return "", 0, unix.Rename(p, o.Path2)
	case "link":
		return "", 0, unix.Link(p, o.Path2)
	case "chmod":
		return "", 0, unix.Chmod(p, o.Mode)
	case "chown":
		return "", 0, unix.Lchown(p, o.ID, o.ID)
	case "touch": // utimensat(NULL): write permission is enough
		now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		return "", 0, unix.UtimesNanoAt(unix.AT_FDCWD, p, now, 0)
	case "utimes": // explicit times: only the owner
		ts := []unix.Timespec{{Sec: 1_000_000_000}, {Sec: 1_000_000_000}}
		return "", 0, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0)
	case "getxattr":
		buf := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, o.Name, buf)
		if err != nil {
			return "", 0, err
		}
		return string(buf[:n]), 0, nil
	case "setxattr":
		return "", 0, unix.Lsetxattr(p, o.Name, []byte(o.Data), 0)
	case "removexattr":
		return "", 0, unix.Lremovexattr(p, o.Name)
	case "listxattr":
		buf := make([]byte, 64<<10)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			return "", 0, err
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" && s != "security.selinux" {
				names = append(names, s)
			}
		}
		sort.Strings(names)
		return strings.Join(names, ","), 0, nil
	case "mknod":
		return "", 0, unix.Mknod(p, o.Mode, int(o.Dev))
	case "readdir":
		f, err := os.Open(p)
		if err != nil {
			return "", 0, err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		sort.Strings(names)
		return strings.Join(names, ","), 0, err
	case "stat":
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return "", 0, err
		}
		return fmt.Sprintf("%d:%d size %d", st.Uid, st.Gid, st.Size), st.Mode, nil
	}
	return "", 0, fmt.Errorf("unknown op %q", o.Op)
}

func openClose(p string, flags int, mode uint32) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}
