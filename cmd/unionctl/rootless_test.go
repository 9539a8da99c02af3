package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

// testUser is a user the test creates, with a subordinate id range, and
// removes at cleanup.
type testUser struct {
	name     string
	uid, gid int
	subStart int
}

func createTestUser(t *testing.T) testUser {
	t.Helper()
	fstest.RequireRoot(t)
	requireTools(t, "useradd", "userdel", "usermod", "newuidmap", "newgidmap", "setpriv", "unshare")
	name := fmt.Sprintf("uctl%d", os.Getpid()%100000)
	out, err := exec.Command("useradd", "--no-create-home", "--shell", "/bin/sh", name).CombinedOutput()
	if err != nil {
		testenv.Skipf(t, "cannot create a test user: useradd: %v: %s", err, out)
	}
	u := testUser{name: name}
	t.Cleanup(func() {
		exec.Command("usermod", "--del-subuids", fmt.Sprintf("%d-%d", u.subStart, u.subStart+65535),
			"--del-subgids", fmt.Sprintf("%d-%d", u.subStart, u.subStart+65535), name).Run()
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	pu, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	u.uid, _ = strconv.Atoi(pu.Uid)
	u.gid, _ = strconv.Atoi(pu.Gid)
	// useradd may have given it a range already (SUB_UID_COUNT in
	// login.defs); else give one above every existing range.
	if start, ok := subRange("/etc/subuid", name); ok {
		u.subStart = start
		if gs, ok := subRange("/etc/subgid", name); !ok || gs != start {
			testenv.Skipf(t, "%s has different subuid and subgid ranges", name)
		}
		return u
	}
	u.subStart = max(highestSubID("/etc/subuid"), highestSubID("/etc/subgid"), 100000) + 65536
	r := fmt.Sprintf("%d-%d", u.subStart, u.subStart+65535)
	if out, err := exec.Command("usermod", "--add-subuids", r, "--add-subgids", r, name).CombinedOutput(); err != nil {
		t.Fatalf("usermod: %v: %s", err, out)
	}
	return u
}

func subRange(file, name string) (int, bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) == 3 && p[0] == name {
			n, err := strconv.Atoi(p[1])
			return n, err == nil
		}
	}
	return 0, false
}

func highestSubID(file string) int {
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	hi := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) == 3 {
			a, _ := strconv.Atoi(p[1])
			b, _ := strconv.Atoi(p[2])
			hi = max(hi, a+b)
		}
	}
	return hi
}

// asUser wraps a command line to run as u, in a private mount namespace
// where /dev/fuse is 0666 (as udev makes it; here it is 0600 and the
// host's stays so).
func asUser(u testUser, home string) func([]string) []string {
	script := `set -e
d=$(mktemp -d /tmp/unionctl-fuse.XXXXXX)
mount -t tmpfs -o mode=755 tmpfs "$d"
mknod -m 666 "$d/fuse" c 10 229
mount --bind "$d/fuse" /dev/fuse
umount -l "$d"; rmdir "$d"
exec setpriv --reuid "$UID_" --regid "$GID_" --clear-groups env HOME="$HOME_" XDG_DATA_HOME= "$@"`
	return func(argv []string) []string {
		return append([]string{"unshare", "-m", "--propagation", "private", "env",
			"UID_=" + strconv.Itoa(u.uid), "GID_=" + strconv.Itoa(u.gid), "HOME_=" + home,
			"sh", "-c", script, "sh"}, argv...)
	}
}

// TestRootless: a container run by a user without privileges: its writes
// land in its upper (owned by the user's ids), a volume's writes land in
// the volume and outlive the container, ps -s matches du of the upper.
func TestRootless(t *testing.T) {
	fstest.RequireFUSE(t)
	imagetest.RequireBusybox(t)
	u := createTestUser(t)

	s, base := rootlessSession(t, u, "unionctl-rootless-")
	home := filepath.Dir(s.Root)
	tarball := imagetest.WriteFile(t, base, "rootfs.tar", imagetest.BusyboxTar(t,
		imagetest.Entry{Name: "srv/", Type: '5'},
		imagetest.Entry{Name: "srv/nobody", Body: []byte("n\n"), UID: 65534, GID: 65534},
	))
	os.Chmod(tarball, 0o644)

	t.Cleanup(func() {
		for _, id := range strings.Fields(s.Run(nil, "ps", "-a", "-q", "--no-trunc").Stdout) {
			s.Run(nil, "rm", "-f", id)
		}
	})
	s.Must(nil, "import", tarball, "busybox:base")

	// The namespaces, /proc and /dev of a rootless container are those of
	// a root one.
	checkEnvironment(t, s)

	// Layer owners map through the user's range: 0 is the user, 65534
	// is subStart+65533.
	var insp []imageInspect
	json.Unmarshal([]byte(s.Must(nil, "inspect", "busybox:base").Stdout), &insp)
	layerDir := insp[0].Layers[0].Path
	for p, want := range map[string]int{"bin/busybox": u.uid, "srv/nobody": u.subStart + 65533} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(layerDir, p), &st); err != nil || int(st.Uid) != want {
			t.Errorf("%s owned by %d (%v), want %d", p, st.Uid, err, want)
		}
	}

	r := s.Run(nil, "run", "--name", "c", "-v", "vol:/data", "busybox:base", "sh", "-c",
		"id -u; echo written > /root/file; echo kept > /data/v; cat /srv/nobody; stat -c %u /srv/nobody; "+
			"mkdir /home && chown nobody /home && echo ok")
	if r.Code != 0 || r.Stdout != "0\nn\n65534\nok\n" {
		t.Fatalf("rootless run: %v", r)
	}
	var ps psJSON
	if err := json.Unmarshal([]byte(s.Must(nil, "ps", "-a", "-s", "--format", "json", "--no-trunc").Stdout), &ps); err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(s.Root, "containers", ps.ID, "upper")
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(upper, "root/file"), &st); err != nil || int(st.Uid) != u.uid {
		t.Errorf("upper root/file: owner %d (%v), want the user %d", st.Uid, err, u.uid)
	}
	if err := syscall.Lstat(filepath.Join(upper, "home"), &st); err != nil || int(st.Uid) != u.subStart+65533 {
		t.Errorf("upper home: owner %d (%v), want nobody's %d", st.Uid, err, u.subStart+65533)
	}
	out, err := exec.Command("du", "-s", "-B1", upper).Output()
	if err != nil {
		t.Fatal(err)
	}
	if du := strings.Fields(string(out))[0]; strconv.FormatInt(ps.SizeRw, 10) != du {
		t.Errorf("ps -s says %d for the upper, du says %s", ps.SizeRw, du)
	}
	if d := imagetest.Lines(s.Must(nil, "diff", "c").Stdout); strings.Join(d, ",") != "A /home,C /root,A /root/file" {
		t.Errorf("rootless diff: %q", d)
	}
	s.Must(nil, "rm", "c")
	if out := s.Must(nil, "run", "--rm", "-v", "vol:/again", "busybox:base", "cat", "/again/v").Stdout; out != "kept\n" {
		t.Errorf("volume after its container: %q", out)
	}
	b, err := os.ReadFile(filepath.Join(s.Root, "volumes", "vol", "_data", "v"))
	if err != nil || string(b) != "kept\n" {
		t.Errorf("volume data on the host: %q, %v", b, err)
	}
	if r := s.Run(nil, "run", "--rm", "--runtime", "runc", "busybox:base", "true"); r.Code != 125 || !strings.Contains(r.Stderr, "needs real root") {
		t.Errorf("rootless --runtime runc: %v", r)
	}
	// A rootless build: COPY --chown, RUN and the cache, with owners
	// mapped through the user's range.
	ctxDir := filepath.Join(base, "ctx")
	os.Mkdir(ctxDir, 0o755)
	os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM busybox:base\nCOPY --chown=65534:65534 f.txt /f.txt\n"+
		"COPY . /ctx/\nRUN stat -c %u /f.txt > /owner && id -u >> /owner && stat -c %h /ctx/f.txt >> /owner\n"), 0o644)
	os.WriteFile(filepath.Join(ctxDir, "f.txt"), []byte("f\n"), 0o644)
	os.Link(filepath.Join(ctxDir, "f.txt"), filepath.Join(ctxDir, "hard.txt"))
	s.Must(nil, "build", "-q", "-t", "built:1", ctxDir)
	if out := s.Must(nil, "run", "--rm", "built:1", "cat", "/owner").Stdout; out != "65534\n0\n2\n" {
		t.Errorf("rootless build: /owner is %q, want 65534, 0 and 2 (a hard link copied as one)", out)
	}
	if c := cachedSteps(s.Must(nil, "build", "-t", "built:1", ctxDir).Stdout); !slices.Equal(c, []bool{false, true, true, true}) {
		t.Errorf("rootless rebuild: cached steps %v", c)
	}

	// The store holds files of the user's subordinate ids: unshare runs
	// a command where they are the user's to remove.
	if out := s.Must(nil, "unshare", "sh", "-c", "id -u; cat /proc/self/uid_map | wc -l").Stdout; out != "0\n2\n" {
		t.Errorf("unshare: %q", out)
	}
	s.Must(nil, "unshare", "rm", "-rf", s.Root)
	if _, err := os.Stat(s.Root); !os.IsNotExist(err) {
		t.Errorf("store still there after unshare rm -rf: %v", err)
	}

	// Without --root, the user's store is where docker's and podman's
	// users look: $XDG_DATA_HOME/unionmount, else
	// ~/.local/share/unionmount (asUser empties XDG_DATA_HOME).
	defaultStore := func(env ...string) imagetest.Result {
		t.Helper()
		argv := asUser(u, home)(append(append([]string{"env"}, env...), s.Bin, "--unionmount", s.Unionmount, "volume", "create", "v"))
		cmd := exec.Command(argv[0], argv[1:]...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		r := imagetest.Result{Args: argv}
		if err := cmd.Run(); err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatal(err)
			}
			r.Code = ee.ExitCode()
		}
		r.Stdout, r.Stderr = out.String(), errb.String()
		return r
	}
	xdg := filepath.Join(home, "data")
	for _, c := range []struct {
		env   []string
		store string
	}{
		{nil, filepath.Join(home, ".local", "share", "unionmount")},
		{[]string{"XDG_DATA_HOME=" + xdg}, filepath.Join(xdg, "unionmount")},
	} {
		if r := defaultStore(c.env...); r.Code != 0 || r.Stdout != "v\n" {
			t.Errorf("%v", r)
			continue
		}
		if _, err := os.Stat(filepath.Join(c.store, "volumes", "v", "_data")); err != nil {
			t.Errorf("unionctl %v volume create without --root: %v; want the store at %s", c.env, err, c.store)
		}
	}
	if r := defaultStore("-u", "HOME"); r.Code != 2 || !strings.Contains(r.Stderr, "give --root DIR") {
		t.Errorf("without HOME or XDG_DATA_HOME: %v\nwant exit 2 and a message asking for --root", r)
	}
}

// rootlessSession is a unionctl session run as the test user u: the
// binaries, the user's home and its store under a new directory every user
// can reach (prefix names it), its mounts undone and it removed at the end.
// XDG_RUNTIME_DIR is the home, so auth files stay inside it.
func rootlessSession(t *testing.T, u testUser, prefix string) (*imagetest.Session, string) {
	t.Helper()
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(base)
		os.RemoveAll(base)
	})
	os.Chmod(base, 0o755)
	bin := filepath.Join(base, "bin")
	os.Mkdir(bin, 0o755)
	imagetest.CopyFile(t, imagetest.Unionctl(t), filepath.Join(bin, "unionctl"))
	imagetest.CopyFile(t, fstest.Binary(t), filepath.Join(bin, "unionmount"))
	os.Chmod(filepath.Join(bin, "unionctl"), 0o755)
	os.Chmod(filepath.Join(bin, "unionmount"), 0o755)
	home := filepath.Join(base, "home")
	os.Mkdir(home, 0o700)
	os.Chown(home, u.uid, u.gid)
	return &imagetest.Session{T: t, Bin: filepath.Join(bin, "unionctl"), Root: filepath.Join(home, "store"),
		Unionmount: filepath.Join(bin, "unionmount"), Wrap: asUser(u, home),
		Env: []string{"XDG_RUNTIME_DIR=" + home}}, base
}
