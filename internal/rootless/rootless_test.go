package rootless

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fstest.RemoveBinary()
	os.Exit(code)
}

// fuse0666 is the sandbox of a host set up for rootless mounts.
var fuse0666 = Sandbox{FuseMode: 0o666}

// kernelUserOpts are the oracle's options in a user namespace: the kernel's
// defaults with what unionmount does not do turned off, and user.overlay.*
// markers (userxattr, which refuses redirect_dir other than nofollow).
const kernelUserOpts = "userxattr,index=off,redirect_dir=nofollow,metacopy=off,xino=off"

// userBinary copies the unionmount binary where the user can run it.
func userBinary(t *testing.T, u *User) string {
	t.Helper()
	src := fstest.Binary(t)
	dst := filepath.Join(u.rootDir(t), "unionmount")
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err == nil {
		_, err = io.Copy(out, in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("copy unionmount for the test user: %v", err)
	}
	return dst
}

// stack is a lower, upper, workdir and mount point for one mount.
type stack struct{ lower, upper, work, mnt string }

// newStack makes the directories of a stack in a directory of the user's,
// fills the lower with fixture, gives everything to the user and then
// applies owners (chowns to other ids).
func newStack(t *testing.T, u *User, fixture []fstest.Applier, owners ...fstest.Applier) stack {
	t.Helper()
	d := u.TempDir(t)
	s := stack{filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "mnt")}
	for _, p := range []string{s.lower, s.upper, s.work, s.mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := fstest.Apply(s.lower, fixture...); err != nil {
		t.Fatal(err)
	}
	u.Chown(t, d)
	if err := fstest.Apply(s.lower, owners...); err != nil {
		t.Fatal(err)
	}
	return s
}

// markers keeps only the xattrs that carry union state in an upper, in
// both namespaces, so that a trusted.* marker written where user.* belongs
// shows as a difference.
func markers(name string) bool {
	return name == "user.overlay.opaque" || name == "trusted.overlay.opaque" ||
		name == "user.overlay.whiteout" || name == "trusted.overlay.whiteout"
}

// snapshotUpper records an upper's entries with their union markers; the
// workdir's leftovers are not part of it.
func snapshotUpper(t *testing.T, dir string) fstest.Tree {
	t.Helper()
	tree, err := fstest.Snapshot(dir, fstest.XattrFilter(markers))
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// trustedXattrs lists the trusted.* xattrs anywhere under dir: a rootless
// mount cannot have written any.
func trustedXattrs(t *testing.T, dir string) []string {
	t.Helper()
	tree, err := fstest.Snapshot(dir, fstest.XattrFilter(func(n string) bool { return strings.HasPrefix(n, "trusted.") }))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range tree.Paths() {
		for name := range tree[p].Xattrs {
			out = append(out, p+": "+name)
		}
	}
	return out
}

// upperFields are compared between our upper and the kernel's: times and
// inode numbers differ between any two runs, and the kernel makes its
// whiteouts hard links of one spare whiteout in the workdir (nlink 2).
var upperFields = fstest.IgnoreFields(fstest.FieldMtime | fstest.FieldInoClass | fstest.FieldNlink)

// requireKernelUserOverlay skips unless overlayfs is there to mount in a
// user namespace.
func requireKernelUserOverlay(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(b), "\toverlay\n") {
		testenv.Skipf(t, "needs overlayfs for the oracle (modprobe overlay)")
	}
}

// waitNoProcesses waits until the user runs nothing any more: the daemon
// of a mount exits once it is unmounted.
func waitNoProcesses(t *testing.T, u *User) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := u.Processes()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of %s still running 10s after the unmount:\n  %s", u.Name, strings.Join(left, "\n  "))
		}
		time.Sleep(10 * time.Millisecond) // polling for the daemon to exit
	}
}

// opsScript is what the tests do through a mount: $M is the mount point;
// up and down mount and unmount it. It prints what it reads.
const opsScript = `
umask 022
up
grep " $M " /proc/self/mountinfo | sed 's/^/mountinfo: /'
echo new > "$M/new"
echo more >> "$M/d/f"
rm "$M/a"
rm -r "$M/gone"
mkdir "$M/gone"
echo z > "$M/gone/z"
chmod 600 "$M/keep"
mkdir "$M/nd"
ln -s target "$M/nd/link"
echo "read: $(cat "$M/new" "$M/d/f" | tr '\n' ' ')"
echo "gone: $(ls -A "$M/gone" | tr '\n' ' ')"
extra
down
`

// baseFixture is the lower the ops script works on.
func baseFixture() []fstest.Applier {
	return []fstest.Applier{
		fstest.CreateFile("a", []byte("a\n"), 0o644),
		fstest.CreateFile("keep", []byte("keep\n"), 0o644),
		fstest.CreateDir("d", 0o755),
		fstest.CreateFile("d/f", []byte("f\n"), 0o644),
		fstest.CreateDir("gone", 0o755),
		fstest.CreateFile("gone/old", []byte("old\n"), 0o644),
	}
}

func checkOpsOutput(t *testing.T, what string, r Result) {
	t.Helper()
	for _, want := range []string{"read: new f more ", "gone: z "} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("%s: output lacks %q:\n%s", what, want, r)
		}
	}
}

// TestFusermountMount mounts as a plain user in the host's namespaces:
// go-fuse goes through the setuid fusermount3 (a user cannot mount(2)),
// the daemon runs as the user, and the markers it writes are
// user.overlay.*. The kernel's overlayfs, mounted by the same user in a
// user namespace with userxattr, is the oracle for the upper.
func TestFusermountMount(t *testing.T) {
	fstest.RequireFUSE(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		testenv.Skipf(t, "needs fusermount3 (apt-get install fuse3)")
	}
	u := NewUser(t)
	bin := userBinary(t, u)

	ours := newStack(t, u, baseFixture())
	r := u.Run(t, fuse0666, "/bin/sh", "-euc", `
BIN=$1 L=$2 U=$3 W=$4 M=$5
up() { "$BIN" --lower "$L" --upper "$U" --workdir "$W" "$M"; }
down() { fusermount3 -u "$M"; }
extra() { :; }
`+opsScript, "sh", bin, ours.lower, ours.upper, ours.work, ours.mnt)
	if r.Err != nil {
		t.Fatalf("ops through unionmount as %s:\n%s", u.Name, r)
	}
	checkOpsOutput(t, "unionmount", r)
	if !strings.Contains(r.Stdout, "fuse.unionmount") || strings.Contains(r.Stdout, "allow_other") {
		t.Errorf("want a fuse.unionmount mount without allow_other (a user's default):\n%s", r.Stdout)
	}
	waitNoProcesses(t, u)
	if bad := trustedXattrs(t, ours.upper); len(bad) > 0 {
		t.Errorf("trusted.* xattrs in the upper of a rootless mount: %q", bad)
	}
	got := snapshotUpper(t, ours.upper)
	checkEntry(t, got, "new", fstest.TypeFile, u.UID, u.GID)
	checkEntry(t, got, "a", fstest.TypeChar, u.UID, u.GID)
	if e := got["gone"]; e.Xattrs["user.overlay.opaque"] != "y" {
		t.Errorf("gone: xattrs %q; want user.overlay.opaque=y", e.Xattrs)
	}

	requireKernelUserOverlay(t)
	kern := newStack(t, u, baseFixture())
	r = u.Run(t, fuse0666, "unshare", "--user", "--map-root-user", "--mount", "/bin/sh", "-euc", `
O=$1 L=$2 U=$3 W=$4 M=$5
up() { mount -t overlay overlay -o "lowerdir=$L,upperdir=$U,workdir=$W,$O" "$M"; }
down() { umount "$M"; }
extra() { :; }
`+opsScript, "sh", kernelUserOpts, kern.lower, kern.upper, kern.work, kern.mnt)
	if r.Err != nil {
		t.Fatalf("ops through kernel overlayfs in a user namespace:\n%s", r)
	}
	checkOpsOutput(t, "kernel overlayfs", r)
	if d := fstest.Diff(snapshotUpper(t, kern.upper), got, upperFields); len(d) > 0 {
		t.Errorf("upper differs from the kernel's (want kernel, got unionmount):\n  %s", strings.Join(d, "\n  "))
	}
}

func checkEntry(t *testing.T, tree fstest.Tree, p string, typ fstest.Type, uid, gid int) {
	t.Helper()
	e, ok := tree[p]
	if !ok {
		t.Errorf("%s: not in the upper", p)
		return
	}
	if e.Type != typ || int(e.UID) != uid || int(e.GID) != gid {
		t.Errorf("%s: %s owned by %d:%d; want %s owned by %d:%d", p, e.Type, e.UID, e.GID, typ, uid, gid)
	}
}

// userNSExtra runs in the user namespace after the common ops: a copy-up
// that keeps a mapped owner, a chown (copy-up first), files made by a
// mapped id other than root (allow_other lets it in), and a file written,
// closed and opened again, which is where passthrough would start.
const userNSExtra = `
extra() {
	echo more >> "$M/u1000/owned"
	chown 2000:3000 "$M/b"
	setpriv --reuid 1000 --regid 1000 --clear-groups /bin/sh -euc '
		echo x > "$1/shared/by1000"
		mkdir "$1/shared/dir1000"
		echo y >> "$1/u1000/owned"' sh "$M"
	echo one > "$M/pt"
	echo two >> "$M/pt"
	echo "pt: $(cat "$M/pt" | tr '\n' ' ')"
	echo "owners: $(stat -c '%n=%u:%g' "$M/new" "$M/b" "$M/u1000/owned" "$M/shared/by1000" | sed "s|$M/||g" | tr '\n' ' ')"
}
`

// userNSFixture adds to baseFixture what the user namespace test needs:
// a directory and file of namespace id 1000 and a sticky dir for all.
func userNSFixture(u *User) (fixture, owners []fstest.Applier) {
	fixture = append(baseFixture(),
		fstest.CreateFile("b", []byte("b\n"), 0o644),
		fstest.CreateDir("u1000", 0o755),
		fstest.CreateFile("u1000/owned", []byte("owned\n"), 0o644),
		fstest.CreateDir("shared", 0o1777),
	)
	owners = []fstest.Applier{
		fstest.Chown("u1000", u.HostUID(1000), u.HostGID(1000)),
		fstest.Chown("u1000/owned", u.HostUID(1000), u.HostGID(1000)),
	}
	return fixture, owners
}

// TestUserNamespaceMount mounts as the root of a user namespace that maps
// the user's subordinate ids, as rootless podman runs its mount_program:
// unionmount mounts with mount(2) (DirectMount) and allow_other. Files
// made by namespace root land in the upper owned by the user, files of
// other mapped ids by the subordinate ids they map to, and copy-up and
// chown keep and set mapped owners: all as kernel overlayfs, mounted the
// same way, does. Passthrough needs CAP_SYS_ADMIN in the initial user
// namespace, so the kernel refuses to register backing files here (EPERM):
// the daemon's --debug log must say it fell back, and a file written,
// closed and read again must read right.
func TestUserNamespaceMount(t *testing.T) {
	fstest.RequireFUSE(t)
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skipf(t, "needs %s to map subordinate ids: %v (apt-get install uidmap)", tool, err)
		}
	}
	u := NewUser(t)
	bin := userBinary(t, u)
	fixture, owners := userNSFixture(u)
	userns := []string{"unshare", "--user", "--map-root-user", "--map-auto", "--mount", "/bin/sh", "-euc"}

	ours := newStack(t, u, fixture, owners...)
	debugLog := filepath.Join(u.TempDir(t), "debug.log")
	args := slices.Concat(userns, []string{`
BIN=$1 L=$2 U=$3 W=$4 M=$5 LOG=$6
up() { "$BIN" --debug --lower "$L" --upper "$U" --workdir "$W" "$M" 2>"$LOG"; }
down() { umount "$M"; }
` + userNSExtra + opsScript, "sh", bin, ours.lower, ours.upper, ours.work, ours.mnt, debugLog})
	r := u.Run(t, fuse0666, args[0], args[1:]...)
	if r.Err != nil {
		t.Fatalf("ops through unionmount in a user namespace:\n%s", r)
	}
	checkOpsOutput(t, "unionmount", r)
	waitNoProcesses(t, u) // the daemon has written its last log line
	b, err := os.ReadFile(debugLog)
	if err != nil {
		t.Fatal(err)
	}
	checkPassthroughRefused(t, string(b), true)
	for _, want := range []string{"fuse.unionmount", "allow_other", "pt: one two ",
		"owners: new=0:0 b=2000:3000 u1000/owned=1000:1000 shared/by1000=1000:1000 "} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r)
		}
	}
	waitNoProcesses(t, u)
	if bad := trustedXattrs(t, ours.upper); len(bad) > 0 {
		t.Errorf("trusted.* xattrs in the upper of a rootless mount: %q", bad)
	}
	got := snapshotUpper(t, ours.upper)
	checkEntry(t, got, "new", fstest.TypeFile, u.UID, u.GID)
	checkEntry(t, got, "pt", fstest.TypeFile, u.UID, u.GID)
	checkEntry(t, got, "a", fstest.TypeChar, u.UID, u.GID)
	checkEntry(t, got, "u1000/owned", fstest.TypeFile, u.HostUID(1000), u.HostGID(1000))
	checkEntry(t, got, "b", fstest.TypeFile, u.HostUID(2000), u.HostGID(3000))
	checkEntry(t, got, "shared/by1000", fstest.TypeFile, u.HostUID(1000), u.HostGID(1000))
	checkEntry(t, got, "shared/dir1000", fstest.TypeDir, u.HostUID(1000), u.HostGID(1000))

	requireKernelUserOverlay(t)
	kern := newStack(t, u, fixture, owners...)
	args = slices.Concat(userns, []string{`
O=$1 L=$2 U=$3 W=$4 M=$5
up() { mount -t overlay overlay -o "lowerdir=$L,upperdir=$U,workdir=$W,$O" "$M"; }
down() { umount "$M"; }
` + userNSExtra + opsScript, "sh", kernelUserOpts, kern.lower, kern.upper, kern.work, kern.mnt})
	r = u.Run(t, fuse0666, args[0], args[1:]...)
	if r.Err != nil {
		t.Fatalf("ops through kernel overlayfs in a user namespace:\n%s", r)
	}
	checkOpsOutput(t, "kernel overlayfs", r)
	if d := fstest.Diff(snapshotUpper(t, kern.upper), got, upperFields); len(d) > 0 {
		t.Errorf("upper differs from the kernel's (want kernel, got unionmount):\n  %s", strings.Join(d, "\n  "))
	}
}

// passthroughRefused is what the daemon logs with --debug when the kernel
// does not let it register backing files (unionfs.probePassthrough).
const passthroughRefused = "FUSE passthrough refused by the kernel (operation not permitted): serving reads and writes of upper files through the daemon"

// checkPassthroughRefused checks in a daemon's --debug log whether
// it fell back from passthrough, and that go-fuse never tried a backing
// file for an open after the probe (one BACKING_OPEN: the probe's).
func checkPassthroughRefused(t *testing.T, log string, refused bool) {
	t.Helper()
	if got := strings.Contains(log, passthroughRefused); got != refused {
		t.Errorf("daemon log says %q: %v, want %v; the log's BACKING_OPEN lines:\n%s", passthroughRefused, got, refused, grepLines(log, "BACKING_OPEN"))
	}
	if n := strings.Count(log, "ioctl: BACKING_OPEN"); refused && n != 1 {
		t.Errorf("%d BACKING_OPEN ioctls with passthrough refused, want the probe's alone:\n%s", n, grepLines(log, "BACKING_OPEN"))
	} else if !refused && n < 2 {
		t.Errorf("%d BACKING_OPEN ioctls with passthrough allowed, want the probe's and the opens':\n%s", n, grepLines(log, "BACKING_OPEN"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestPassthroughAsRoot is checkPassthroughRefused's other side: root in
// the initial user namespace may register backing files, so the daemon
// does not fall back, and upper files open with passthrough.
func TestPassthroughAsRoot(t *testing.T) {
	fstest.RequireFUSE(t)
	d := t.TempDir()
	lower, upper, work, mnt := filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "mnt")
	for _, p := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := fstest.MountUnion(t, []string{lower}, upper, work, mnt, "--debug")
	p := filepath.Join(mnt, "pt")
	if err := os.WriteFile(p, []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "one\n" {
		t.Errorf("read back %q, %v; want \"one\\n\"", b, err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	checkPassthroughRefused(t, m.Output(), false)
}

// unmappedOps tries to change a file whose owner the user namespace does
// not map; it prints what each step said.
const unmappedOps = `
umask 022
up
echo "read: $(cat "$M/d/rootowned")"
if echo x >> "$M/d/rootowned" 2>/dev/null; then echo "append: allowed"; else echo "append: refused"; fi
echo "chmod: $(chmod 600 "$M/d/rootowned" 2>&1 || true)"
down
`

// TestUnmappedOwnerInUserNamespace mounts in `unshare -Urm`, which maps
// the user alone: a lower file of host root shows as 65534 and can be
// read, but neither written nor chmod'ed, as with kernel overlayfs. The
// errno of the refused chmod differs (logged): the kernel's VFS answers
// EOVERFLOW for a FUSE inode whose owner the mount's namespace cannot
// represent, before the daemon sees the request, where overlayfs says
// EPERM.
func TestUnmappedOwnerInUserNamespace(t *testing.T) {
	fstest.RequireFUSE(t)
	u := NewUser(t)
	bin := userBinary(t, u)
	fixture := []fstest.Applier{fstest.CreateDir("d", 0o755), fstest.CreateFile("d/rootowned", []byte("r\n"), 0o644)}
	owners := []fstest.Applier{fstest.Chown("d/rootowned", 0, 0)}
	userns := []string{"unshare", "--user", "--map-root-user", "--mount", "/bin/sh", "-euc"}

	ours := newStack(t, u, fixture, owners...)
	args := slices.Concat(userns, []string{`
BIN=$1 L=$2 U=$3 W=$4 M=$5
up() { "$BIN" --lower "$L" --upper "$U" --workdir "$W" "$M"; }
down() { umount "$M"; }
` + unmappedOps, "sh", bin, ours.lower, ours.upper, ours.work, ours.mnt})
	r := u.Run(t, fuse0666, args[0], args[1:]...)
	if r.Err != nil {
		t.Fatalf("unionmount in a single-id user namespace:\n%s", r)
	}
	waitNoProcesses(t, u)
	for _, want := range []string{"read: r", "append: refused"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("unionmount: output lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.Stdout, "chmod: \n") {
		t.Errorf("unionmount: chmod of a file of an unmapped owner worked:\n%s", r)
	}
	t.Logf("unionmount: %s", strings.TrimSpace(r.Stdout))

	requireKernelUserOverlay(t)
	kern := newStack(t, u, fixture, owners...)
	args = slices.Concat(userns, []string{`
O=$1 L=$2 U=$3 W=$4 M=$5
up() { mount -t overlay overlay -o "lowerdir=$L,upperdir=$U,workdir=$W,$O" "$M"; }
down() { umount "$M"; }
` + unmappedOps, "sh", kernelUserOpts, kern.lower, kern.upper, kern.work, kern.mnt})
	r = u.Run(t, fuse0666, args[0], args[1:]...)
	if r.Err != nil {
		t.Fatalf("kernel overlayfs in a single-id user namespace:\n%s", r)
	}
	t.Logf("kernel overlayfs: %s", strings.TrimSpace(r.Stdout))
	if !strings.Contains(r.Stdout, "append: refused") || strings.Contains(r.Stdout, "chmod: \n") {
		t.Errorf("kernel overlayfs let a file of an unmapped owner be changed:\n%s", r)
	}
}
