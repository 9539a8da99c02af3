package podman

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

// The -o vocabulary containers-storage sends a mount_program (DESIGN.md
// section 7), end to end: each case mounts with `PROGRAM -o OPTS MNT` as
// containers-storage does (daemonizing, from the storage directory), runs a
// script through the mount in another process, and snapshots the merged
// view and the upper. unionmount must meet the case's expectations;
// fuse-overlayfs runs the same case and every difference is logged.

// optCase is one -o string and what to do through it.
type optCase struct {
	name string
	// lowers are the fixtures of the lower layers, top first.
	lowers [][]fstest.Applier
	upper  bool
	// opts builds the -o string from the case's directories.
	opts func(d caseDirs) string
	// ops runs as root through the mount at $M; it prints what it sees.
	ops string
	// want checks unionmount's result (and is logged for fuse-overlayfs).
	want func(c *check, r caseResult)
}

// caseDirs are the directories of one run of a case.
type caseDirs struct {
	root           string   // the "storage directory": the program's cwd
	lowers         []string // absolute
	upper, work    string
	mnt            string
	idmappedLowers []string // the lowers through an idmapped mount, if made
}

func (d caseDirs) layers() string {
	s := "lowerdir=" + strings.Join(d.lowers, ":")
	if d.upper != "" {
		s += ",upperdir=" + d.upper + ",workdir=" + d.work
	}
	return s
}

// caseResult is what one program did with a case.
type caseResult struct {
	mountErr    string // stderr of a failed mount
	out         string // the ops script's output
	opsErr      error
	view, upper fstest.Tree
	dirs        caseDirs
}

// idFixture has files of several owners: 0, 1000, and 70000, outside the
// 65536 ids the mapping cases map.
func idFixture() []fstest.Applier {
	return []fstest.Applier{
		fstest.CreateFile("a", []byte("a\n"), 0o644),
		fstest.CreateFile("owned", []byte("owned\n"), 0o644),
		fstest.Chown("owned", 1000, 1000),
		fstest.CreateFile("unmapped", []byte("u\n"), 0o644),
		fstest.Chown("unmapped", 70000, 70000),
		fstest.CreateDir("d", 0o755),
		fstest.CreateFile("d/f", []byte("f\n"), 0o644),
		fstest.Chown("d/f", 1000, 1000),
		fstest.CreateDir("shared", 0o1777),
	}
}

// owners prints the owners the mount shows and makes files as several
// host ids: $1 and $2 are the host ids of container root and container
// 1000.
const ownersOps = `
echo "view: $(stat -c '%n=%u:%g' a owned unmapped d/f | tr '\n' ' ')"
setpriv --reuid "$1" --regid "$1" --clear-groups sh -c 'echo r > shared/by_ctr_root'
setpriv --reuid "$2" --regid "$2" --clear-groups sh -c 'echo u > shared/by_ctr_1000'
chown "$2:$2" a
echo more >> d/f
echo "after: $(stat -c '%n=%u:%g' a d/f shared/by_ctr_root shared/by_ctr_1000 | tr '\n' ' ')"
`

func ownersOf(tree fstest.Tree, paths ...string) string {
	var out []string
	for _, p := range paths {
		e, ok := tree[p]
		if !ok {
			out = append(out, p+"=missing")
			continue
		}
		out = append(out, fmt.Sprintf("%s=%d:%d", p, e.UID, e.GID))
	}
	return strings.Join(out, " ")
}

var optCases = []optCase{
	{
		name:   "uidmapping=/gidmapping= with podman's leading colon",
		lowers: [][]fstest.Applier{idFixture()},
		upper:  true,
		opts: func(d caseDirs) string {
			return d.layers() + ",uidmapping=:0:100000:65536,gidmapping=:0:100000:65536"
		},
		ops: ownersOps,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "view") == "a=100000:100000 owned=101000:101000 unmapped=65534:65534 d/f=101000:101000",
				"owners shown: %q (want layer id i shown as 100000+i, others as the overflow id)", field(r.out, "view"))
			c.expect(field(r.out, "after") == "a=101000:101000 d/f=101000:101000 shared/by_ctr_root=100000:100000 shared/by_ctr_1000=101000:101000",
				"owners after create, chown and copy-up: %q", field(r.out, "after"))
			got := ownersOf(r.upper, "a", "d/f", "shared/by_ctr_root", "shared/by_ctr_1000")
			c.expect(got == "a=1000:1000 d/f=1000:1000 shared/by_ctr_root=0:0 shared/by_ctr_1000=1000:1000",
				"owners stored in the upper: %s (want layer ids)", got)
		},
	},
	{
		// Two ranges each, the uid and gid mappings unlike: layer uid 0 is
		// mount 1000 and layer uids 1.. are mount 100000..; layer gid 1000
		// is mount 3000 (the first range that holds an id decides) and
		// layer gids 0..999 are mount 300000...
		name:   "multi-range uidmapping= with a different gidmapping=",
		lowers: [][]fstest.Applier{idFixture()},
		upper:  true,
		opts: func(d caseDirs) string {
			return d.layers() + ",uidmapping=:0:1000:1:1:100000:65536,gidmapping=:1000:3000:1:0:300000:1000"
		},
		ops: `
echo "view: $(stat -c '%n=%u:%g' a owned unmapped d/f | tr '\n' ' ')"
setpriv --reuid 1000 --regid 300000 --clear-groups sh -c 'echo r > shared/by_root'
setpriv --reuid 100999 --regid 3000 --clear-groups sh -c 'echo u > shared/by_1000'
setpriv --reuid 100004 --regid 300007 --clear-groups sh -c 'mkdir shared/dir_5_7'
chown 100999:3000 a
chown 1000:300007 owned
echo more >> d/f
echo more >> unmapped
echo o > shared/out
chown 5:5 shared/out
echo "after: $(stat -c '%n=%u:%g' a owned d/f unmapped shared/by_root shared/by_1000 shared/dir_5_7 shared/out | tr '\n' ' ')"
`,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "view") == "a=1000:300000 owned=100999:3000 unmapped=65534:65534 d/f=100999:3000",
				"owners shown: %q (want a=1000:300000 owned=100999:3000 unmapped=65534:65534 d/f=100999:3000)", field(r.out, "view"))
			c.expect(field(r.out, "after") == "a=100999:3000 owned=1000:300007 d/f=100999:3000 unmapped=65534:65534 "+
				"shared/by_root=1000:300000 shared/by_1000=100999:3000 shared/dir_5_7=100004:300007 shared/out=165533:65534",
				"owners after create, chown and copy-up: %q", field(r.out, "after"))
			// Stored in layer ids: chown and create map back through each
			// mapping apart; copy-up keeps the layer's owner, mapped or not.
			// A chown to a mount id in no range (5:5) stores the overflow
			// id 65534, which layer uid 65534 then shows as mount uid
			// 165533: fuse-overlayfs does the same (the kernel's idmapped
			// mounts refuse such a chown with EOVERFLOW).
			got := ownersOf(r.upper, "a", "owned", "d/f", "unmapped", "shared/by_root", "shared/by_1000", "shared/dir_5_7", "shared/out")
			c.expect(got == "a=1000:1000 owned=0:7 d/f=1000:1000 unmapped=70000:70000 "+
				"shared/by_root=0:0 shared/by_1000=1000:1000 shared/dir_5_7=5:7 shared/out=65534:65534",
				"owners stored in the upper: %s (want layer ids)", got)
		},
	},
	{
		name:   "uidmapping= over an idmapped lower (containers-storage's double shift)",
		lowers: [][]fstest.Applier{idFixture()},
		upper:  true,
		opts: func(d caseDirs) string {
			return "lowerdir=" + strings.Join(d.idmappedLowers, ":") + ",upperdir=" + d.upper + ",workdir=" + d.work +
				",,volatile,uidmapping=:0:100000:65536,gidmapping=:0:100000:65536"
		},
		ops: ownersOps,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "view") == "a=100000:100000 owned=101000:101000 unmapped=65534:65534 d/f=101000:101000",
				"owners shown: %q (the mapping applied once)", field(r.out, "view"))
			got := ownersOf(r.upper, "a", "d/f", "shared/by_ctr_root", "shared/by_ctr_1000")
			c.expect(got == "a=1000:1000 d/f=1000:1000 shared/by_ctr_root=0:0 shared/by_ctr_1000=1000:1000",
				"owners stored in the upper: %s (want layer ids)", got)
		},
	},
	{
		name:   "squash_to_uid=/squash_to_gid=",
		lowers: [][]fstest.Applier{idFixture()},
		upper:  true,
		opts:   func(d caseDirs) string { return d.layers() + ",squash_to_uid=5,squash_to_gid=6" },
		ops: `
echo "view: $(stat -c '%n=%u:%g' a owned unmapped d/f | tr '\n' ' ')"
echo n > new
echo "new: $(stat -c '%u:%g' new)"
`,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "view") == "a=5:6 owned=5:6 unmapped=5:6 d/f=5:6", "owners shown: %q", field(r.out, "view"))
			c.expect(field(r.out, "new") == "5:6", "a new file shows %q", field(r.out, "new"))
			c.expect(ownersOf(r.upper, "new") == "new=0:0", "the upper stores %s for root's new file", ownersOf(r.upper, "new"))
		},
	},
	{
		name:   "squash_to_root",
		lowers: [][]fstest.Applier{idFixture()},
		upper:  true,
		opts:   func(d caseDirs) string { return d.layers() + ",squash_to_root" },
		ops: `
echo "view: $(stat -c '%n=%u:%g' a owned unmapped d/f | tr '\n' ' ')"
`,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "view") == "a=0:0 owned=0:0 unmapped=0:0 d/f=0:0", "owners shown: %q", field(r.out, "view"))
		},
	},
	{
		name: "lowerdir only: a read-only mount (podman image mount)",
		lowers: [][]fstest.Applier{
			{fstest.CreateFile("top", []byte("top\n"), 0o644), fstest.AUFSWhiteout("gone")},
			{fstest.CreateFile("top", []byte("bottom\n"), 0o644), fstest.CreateFile("gone", []byte("g\n"), 0o644),
				fstest.CreateFile("kept", []byte("k\n"), 0o644)},
		},
		opts: func(d caseDirs) string { return d.layers() },
		ops: `
echo "ls: $(ls -A | tr '\n' ' ')"
echo "top: $(cat top)"
if touch x 2>/dev/null; then echo "write: allowed"; else echo "write: refused"; fi
`,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "ls") == "kept top", "ls = %q", field(r.out, "ls"))
			c.expect(field(r.out, "top") == "top", "top reads %q", field(r.out, "top"))
			c.expect(field(r.out, "write") == "refused", "a write was %s", field(r.out, "write"))
		},
	},
	{
		name:   "volatile and fsync=0 and empty elements",
		lowers: [][]fstest.Applier{idFixture()},
		upper:  true,
		opts:   func(d caseDirs) string { return "," + d.layers() + ",,volatile,fsync=0," },
		ops: `
echo n > new
echo more >> a
sync
echo "read: $(cat new a | tr '\n' ' ')"
`,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "read") == "n a more", "read back %q", field(r.out, "read"))
		},
	},
	{
		name: "lowers as symlinks: absolute and relative to the storage directory",
		lowers: [][]fstest.Applier{
			{fstest.CreateFile("top", []byte("top\n"), 0o644)},
			{fstest.CreateFile("bottom", []byte("bottom\n"), 0o644)},
		},
		upper: true,
		opts: func(d caseDirs) string {
			// As containers-storage's l/ directory: short names that are
			// symlinks to ../<layer>/diff.
			l := filepath.Join(d.root, "l")
			os.Mkdir(l, 0o700)
			var links []string
			for i, lower := range d.lowers {
				name := fmt.Sprintf("LINK%d", i)
				rel, _ := filepath.Rel(l, lower)
				os.Symlink(rel, filepath.Join(l, name))
				if i == 0 {
					links = append(links, filepath.Join(l, name)) // absolute, as podman passes them
				} else {
					links = append(links, "l/"+name) // relative to the cwd
				}
			}
			return "lowerdir=" + strings.Join(links, ":") + ",upperdir=" + d.upper + ",workdir=" + d.work
		},
		ops: `echo "ls: $(ls -A | tr '\n' ' ')"`,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "ls") == "bottom top", "ls = %q", field(r.out, "ls"))
		},
	},
	{
		name:   "unknown options: quoted context= with commas and xattr_permissions=2 and noatime",
		lowers: [][]fstest.Applier{idFixture()},
		upper:  true,
		opts: func(d caseDirs) string {
			return d.layers() + `,context="system_u:object_r:container_file_t:s0:c1,c2",xattr_permissions=2,noatime`
		},
		ops: `
echo n > new
echo "read: $(cat new a | tr '\n' ' ')"
`,
		want: func(c *check, r caseResult) {
			c.expect(field(r.out, "read") == "n a", "read back %q", field(r.out, "read"))
		},
	},
}

// TestMountProgramOptions runs every case with unionmount and with
// fuse-overlayfs and logs where they differ. (Case names hold no comma:
// they become part of the temporary directories, and so of -o strings.)
func TestMountProgramOptions(t *testing.T) {
	fstest.RequireFUSE(t)
	progs := programs(t)
	for _, oc := range optCases {
		t.Run(oc.name, func(t *testing.T) {
			results := map[string]caseResult{}
			for _, p := range progs {
				c := &check{t: t, strict: p.Name == "unionmount", out: outcome{ok: true}}
				r := runOptCase(t, p, oc)
				results[p.Name] = r
				if !c.expect(r.mountErr == "", "%s -o %s: mount failed: %s", p.Name, oc.opts(r.dirs), r.mountErr) {
					continue
				}
				if !c.expect(r.opsErr == nil, "%s: the script through the mount failed: %v\n%s", p.Name, r.opsErr, r.out) {
					continue
				}
				oc.want(c, r)
			}
			um, fo := results["unionmount"], results["fuse-overlayfs"]
			if fo.view == nil || um.view == nil {
				return
			}
			ignore := fstest.IgnoreFields(fstest.FieldMtime | fstest.FieldInoClass | fstest.FieldXattrs)
			if d := fstest.Diff(fo.view, um.view, ignore); len(d) > 0 {
				t.Logf("merged view differs (fuse-overlayfs, then unionmount):\n  %s", strings.Join(d, "\n  "))
			}
			if um.upper != nil {
				if d := fstest.Diff(fo.upper, um.upper, ignore); len(d) > 0 {
					t.Logf("upper differs (fuse-overlayfs, then unionmount):\n  %s", strings.Join(d, "\n  "))
				}
			}
		})
	}
}

// runOptCase mounts with p, runs the case's script, and snapshots.
func runOptCase(t *testing.T, p Program, oc optCase) caseResult {
	t.Helper()
	root := publicDir(t)
	d := caseDirs{root: root, mnt: filepath.Join(root, "merged")}
	for i, l := range oc.lowers {
		dir := filepath.Join(root, fmt.Sprintf("layer%d", i), "diff")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := fstest.Apply(dir, l...); err != nil {
			t.Fatal(err)
		}
		d.lowers = append(d.lowers, dir)
	}
	if oc.upper {
		d.upper, d.work = filepath.Join(root, "upper", "diff"), filepath.Join(root, "upper", "work")
		for _, p := range []string{d.upper, d.work} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	detach := func() {}
	if strings.Contains(oc.name, "idmapped") {
		d.idmappedLowers, detach = idmappedCopies(t, root, d.lowers)
	}
	r := caseResult{dirs: d}
	opts := oc.opts(d)

	cmd := exec.Command(p.Path, "-o", opts, d.mnt)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	// containers-storage detaches its idmapped mounts as soon as the
	// mount program returns.
	detach()
	if err != nil {
		r.mountErr = fmt.Sprintf("%v: %s", err, strings.TrimSpace(stderr.String()))
		return r
	}
	t.Cleanup(func() { unmountProgram(t, d.mnt) })

	ops := exec.Command("sh", "-euc", oc.ops, "sh", "100000", "101000")
	ops.Dir = d.mnt
	out, err := ops.CombinedOutput()
	r.out, r.opsErr = string(out), err
	if r.view, err = fstest.Snapshot(d.mnt); err != nil {
		t.Errorf("%s: snapshot the mount: %v", p.Name, err)
	}
	unmountProgram(t, d.mnt)
	if d.upper != "" {
		if r.upper, err = fstest.Snapshot(d.upper); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// unmountProgram unmounts mnt if mounted and waits until no process
// serving it is left.
func unmountProgram(t *testing.T, mnt string) {
	t.Helper()
	if ok, _ := fstest.IsMountpoint(mnt); ok {
		if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
			t.Errorf("fusermount3 -u %s: %v: %s", mnt, err, out)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(processesMentioning(mnt)) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("mount program still running 10s after unmounting %s: %q", mnt, processesMentioning(mnt))
			return
		}
		time.Sleep(10 * time.Millisecond) // polling for the daemon to exit
	}
}

// idmappedCopies makes, as containers-storage does for --uidmap, an
// idmapped mount of each lower's parent (shifting ids by 0:100000:65536)
// and returns the lowers seen through them, and a function that detaches
// the mounts.
func idmappedCopies(t *testing.T, root string, lowers []string) ([]string, func()) {
	t.Helper()
	// A user namespace with the mapping, held by a process.
	holder := exec.Command("sleep", "3600")
	holder.SysProcAttr = &unix.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
	}
	if err := holder.Start(); err != nil {
		testenv.Skipf(t, "needs user namespaces for an idmapped mount: %v", err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	userns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", holder.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(userns)

	var out, dsts []string
	detach := func() {
		for _, d := range dsts {
			unix.Unmount(d, unix.MNT_DETACH)
		}
	}
	t.Cleanup(detach)
	for i, l := range lowers {
		src := filepath.Dir(l)
		dst := filepath.Join(root, "mapped", fmt.Sprint(i))
		if err := os.MkdirAll(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			testenv.Skipf(t, "needs open_tree for an idmapped mount: %v", err)
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns)}
		err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr)
		if err == nil {
			err = unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
		}
		unix.Close(tree)
		if err != nil {
			testenv.Skipf(t, "needs idmapped mounts on this filesystem: %v", err)
		}
		dsts = append(dsts, dst)
		out = append(out, filepath.Join(dst, filepath.Base(l)))
	}
	return out, detach
}
