package rootless

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/testenv"
)

// User is a throwaway account made by NewUser, with subordinate id ranges
// in /etc/subuid and /etc/subgid.
type User struct {
	Name     string
	UID, GID int
	Home     string
	// SubUID and SubGID are the user's first subordinate ranges: what
	// newuidmap lets it map (rootless podman's ids 1..).
	SubUID, SubGID IDRange
	// RuntimeDir is a private directory of the user for XDG_RUNTIME_DIR.
	RuntimeDir string

	// fuseDir is where Command mounts the tmpfs that holds its /dev/fuse
	// node, in the command's own mount namespace.
	fuseDir string
	// confDir holds the fuse.conf files Command binds.
	confDir string
	nconf   int
}

// IDRange is a range of ids [Start, Start+Count).
type IDRange struct{ Start, Count int }

// HostID maps id of a user namespace made by `unshare --map-root-user
// --map-auto` (0 is the user, 1.. its subordinate range, as under rootless
// podman) to the host id.
func (u *User) HostID(id int, sub IDRange, own int) int {
	if id == 0 {
		return own
	}
	return sub.Start + id - 1
}

// HostUID is HostID for user ids.
func (u *User) HostUID(id int) int { return u.HostID(id, u.SubUID, u.UID) }

// HostGID is HostID for group ids.
func (u *User) HostGID(id int) int { return u.HostID(id, u.SubGID, u.GID) }

// toolWait bounds how long useradd and userdel wait for each other's
// locks on /etc/passwd: tests of several packages create users at once.
const toolWait = 20 * time.Second

// NewUser creates a user for the test with useradd and a subordinate
// range of 65536 ids, and registers a cleanup that reports and kills any
// process the user still runs (a leaked daemon or podman pause process is a
// test failure) and then deletes the user, its home and its ranges. It
// skips the test when not root or when useradd is missing.
func NewUser(t testing.TB) *User {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "creating a test user needs root (euid is %d): run the tests as root", os.Geteuid())
	}
	for _, tool := range []string{"useradd", "userdel", "usermod", "unshare", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skipf(t, "needs %s: %v (apt-get install passwd util-linux)", tool, err)
		}
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "umtest" + hex.EncodeToString(rnd[:])
	if out, err := retryLocked("useradd", "--create-home", "--shell", "/bin/sh", "--user-group",
		"--comment", "unionmount test user", name); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	u := &User{Name: name}
	t.Cleanup(func() { u.remove(t) })

	pw, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("look up the new user: %v", err)
	}
	u.UID, _ = strconv.Atoi(pw.Uid)
	u.GID, _ = strconv.Atoi(pw.Gid)
	u.Home = pw.HomeDir
	if u.SubUID, err = subRange("/etc/subuid", name); err == nil {
		u.SubGID, err = subRange("/etc/subgid", name)
	}
	if err != nil {
		// useradd did not allocate ranges (SUB_UID_COUNT 0 or no subid
		// support): give it one past every range in use.
		start, ferr := freeSubRange()
		if ferr != nil {
			t.Fatal(ferr)
		}
		r := fmt.Sprintf("%d-%d", start, start+65535)
		if out, err := retryLocked("usermod", "--add-subuids", r, "--add-subgids", r, name); err != nil {
			t.Fatalf("usermod --add-subuids %s %s: %v: %s", r, name, err, out)
		}
		u.SubUID, u.SubGID = IDRange{start, 65536}, IDRange{start, 65536}
	}
	if u.SubUID.Count < 65536 || u.SubGID.Count < 65536 {
		t.Fatalf("user %s has subordinate ranges %v %v; the tests need 65536 ids", name, u.SubUID, u.SubGID)
	}

	u.fuseDir = u.rootDir(t)
	u.confDir = u.rootDir(t)
	u.RuntimeDir = u.TempDir(t)
	if err := os.Chmod(u.RuntimeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return u
}

// rootDir returns a new directory owned by root that the user can reach.
func (u *User) rootDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// TempDir returns a new empty directory owned by the user, mode 0755,
// removed after the test (by root, whatever the user left in it).
func (u *User) TempDir(t testing.TB) string {
	t.Helper()
	d := u.rootDir(t)
	if err := os.Chown(d, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	return d
}

// Chown gives paths (recursively) to the user.
func (u *User) Chown(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		err := filepath.Walk(p, func(path string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, u.UID, u.GID)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// DropSubIDs takes the user's subordinate ranges away, as on a host where
// nobody set them up.
func (u *User) DropSubIDs(t testing.TB) {
	t.Helper()
	uids := fmt.Sprintf("%d-%d", u.SubUID.Start, u.SubUID.Start+u.SubUID.Count-1)
	gids := fmt.Sprintf("%d-%d", u.SubGID.Start, u.SubGID.Start+u.SubGID.Count-1)
	if out, err := retryLocked("usermod", "--del-subuids", uids, "--del-subgids", gids, u.Name); err != nil {
		t.Fatalf("usermod --del-subuids %s %s: %v: %s", uids, u.Name, err, out)
	}
	u.SubUID, u.SubGID = IDRange{}, IDRange{}
}

// Processes lists the processes whose real uid is the user's, as
// "pid command" lines; zombies (exited, waiting to be reaped) are left out.
func (u *User) Processes() []string {
	return processesOf(u.UID)
}

func (u *User) remove(t testing.TB) {
	if u.UID != 0 {
		if left := u.Processes(); len(left) > 0 {
			t.Errorf("test user %s still runs processes after the test (leaked daemons or podman pause processes); killing them:\n  %s",
				u.Name, strings.Join(left, "\n  "))
			killAll(u.UID)
		}
	}
	deadline := time.Now().Add(toolWait)
	for {
		out, err := retryLocked("userdel", "--remove", u.Name)
		if err == nil || bytes.Contains(out, []byte("does not exist")) {
			break
		}
		// "user X is currently used by process N": a zombie not yet
		// reaped, or a process that just exited.
		if time.Now().After(deadline) {
			t.Errorf("userdel --remove %s: %v: %s", u.Name, err, out)
			return
		}
		time.Sleep(100 * time.Millisecond) // polling for the last process to go
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if _, err := subRange(f, u.Name); err == nil {
			t.Errorf("%s still lists %s after userdel", f, u.Name)
		}
	}
}

// retryLocked runs a shadow tool, again while another one holds the
// passwd locks.
func retryLocked(name string, args ...string) ([]byte, error) {
	deadline := time.Now().Add(toolWait)
	for {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil || !bytes.Contains(bytes.ToLower(out), []byte("lock")) || time.Now().After(deadline) {
			return out, err
		}
		time.Sleep(50 * time.Millisecond) // polling for the lock
	}
}

// subRange returns the first range of name in an /etc/subuid-style file.
func subRange(file, name string) (IDRange, error) {
	f, err := os.Open(file)
	if err != nil {
		return IDRange{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(p) != 3 || p[0] != name {
			continue
		}
		start, err1 := strconv.Atoi(p[1])
		count, err2 := strconv.Atoi(p[2])
		if err1 == nil && err2 == nil {
			return IDRange{start, count}, nil
		}
	}
	return IDRange{}, fmt.Errorf("%s: no range for %s", file, name)
}

// freeSubRange returns a start past every range in /etc/subuid and
// /etc/subgid, at least 100000 and a multiple of 65536.
func freeSubRange() (int, error) {
	end := 100000
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		b, err := os.ReadFile(file)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			p := strings.Split(strings.TrimSpace(line), ":")
			if len(p) != 3 {
				continue
			}
			start, err1 := strconv.Atoi(p[1])
			count, err2 := strconv.Atoi(p[2])
			if err1 == nil && err2 == nil && start+count > end {
				end = start + count
			}
		}
	}
	return (end + 65535) / 65536 * 65536, nil
}

// processesOf lists the live processes whose real uid is uid.
func processesOf(uid int) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, d := range dirs {
		status, err := os.ReadFile(d + "/status")
		if err != nil {
			continue
		}
		var ruid int = -1
		zombie := false
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				switch f[0] {
				case "Uid:":
					ruid, _ = strconv.Atoi(f[1])
				case "State:":
					zombie = f[1] == "Z" || f[1] == "X"
				}
			}
		}
		if ruid != uid || zombie {
			continue
		}
		cmd, _ := os.ReadFile(d + "/cmdline")
		out = append(out, filepath.Base(d)+" "+strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return out
}

// killAll sends SIGKILL to every live process of uid, by pid, and waits
// (bounded) until they are gone. Only the test's own user is passed here:
// its processes are the test's.
func killAll(uid int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		left := processesOf(uid)
		if len(left) == 0 {
			return
		}
		for _, l := range left {
			pid, _ := strconv.Atoi(strings.Fields(l)[0])
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond) // polling for the kills to land
	}
}
