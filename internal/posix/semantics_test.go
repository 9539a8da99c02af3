package posix

// Tests that pin rows of docs/semantics.md which no other test covers.

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

func lstatT(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStDevIsTheMountsDevice pins the st_dev row of docs/semantics.md:
// with one lower on a tmpfs and the rest on disk, every entry of the union
// reports the mount's own device, and the inode numbers stay unique
// across the two filesystems; kernel overlayfs (xino=off) gives the
// tmpfs lower's files a device of their own instead.
func TestStDevIsTheMountsDevice(t *testing.T) {
	fstest.RequireRoot(t)
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			base := t.TempDir()
			d := mkdirs(t, filepath.Join(base, "fast"), filepath.Join(base, "disk"), filepath.Join(base, "upper"),
				filepath.Join(base, "work"), filepath.Join(base, "mnt"))
			fast, disk, upper, work, mnt := d[0], d[1], d[2], d[3], d[4]
			mountTmpfs(t, fast, "size=1m")
			if err := fstest.Apply(fast, fstest.CreateDir("dir", 0o755), fstest.CreateFile("dir/a", []byte("a\n"), 0o644),
				fstest.CreateFile("fa", []byte("fa\n"), 0o644)); err != nil {
				t.Fatal(err)
			}
			if err := fstest.Apply(disk, fstest.CreateDir("dir", 0o755), fstest.CreateFile("dir/b", []byte("b\n"), 0o644),
				fstest.CreateFile("fb", []byte("fb\n"), 0o644)); err != nil {
				t.Fatal(err)
			}
			tg.mount(t, []string{fast, disk}, upper, work, mnt)
			if err := os.WriteFile(filepath.Join(mnt, "fu"), []byte("fu\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			root := lstatT(t, mnt)
			devs, inos := map[string]uint64{}, map[uint64]string{}
			for _, p := range []string{"dir", "dir/a", "dir/b", "fa", "fb", "fu"} {
				st := lstatT(t, filepath.Join(mnt, p))
				devs[p] = st.Dev
				if q, dup := inos[st.Ino]; dup && devs[q] == st.Dev {
					t.Errorf("%s and %s share device %d and inode %d", p, q, st.Dev, st.Ino)
				}
				inos[st.Ino] = p
			}
			if tg.kernel {
				if devs["fa"] == root.Dev {
					t.Errorf("kernel: fa, from the tmpfs lower, reports the mount's device %d; the row says the kernel gives it its own", root.Dev)
				}
				return
			}
			for p, dev := range devs {
				if dev != root.Dev {
					t.Errorf("%s: st_dev %d, want the mount's %d", p, dev, root.Dev)
				}
			}
		})
	}
}

// TestRootlessSymlinkOriginNotKept pins the docs/semantics.md row on
// rootless mounts: in the user.overlay.* format (-o userxattr, what a
// rootless mount writes) a copied-up regular file keeps the lower's inode
// number across a remount, but a copied-up symlink gets its copy's,
// because Linux refuses user.* xattrs on symlinks and the origin cannot be
// stored.
func TestRootlessSymlinkOriginNotKept(t *testing.T) {
	fstest.RequireFUSE(t)
	lowers, upper, work, mnt := layers(t, stack{bottom: []fstest.Applier{
		fstest.CreateFile("f", []byte("f\n"), 0o644),
		fstest.Symlink("f", "s"),
	}})
	u := fstest.MountUnion(t, lowers, upper, work, mnt, "-o", "userxattr")
	lowerIno := map[string]uint64{}
	for _, name := range []string{"f", "s"} {
		lowerIno[name] = lstatT(t, filepath.Join(mnt, name)).Ino
		if err := os.Lchown(filepath.Join(mnt, name), 1, 1); err != nil { // copies up
			t.Fatal(err)
		}
	}
	if err := u.Unmount(); err != nil {
		t.Fatal(err)
	}
	names, err := fstest.ListXattrs(filepath.Join(upper, "f"))
	if err != nil || !slices.Contains(names, "user.overlay.unionmount.origin") {
		t.Fatalf("the copied-up file's xattrs: %q, %v; want user.overlay.unionmount.origin (the rootless format)", names, err)
	}
	fstest.MountUnion(t, lowers, upper, work, mnt, "-o", "userxattr")
	if got := lstatT(t, filepath.Join(mnt, "f")).Ino; got != lowerIno["f"] {
		t.Errorf("file after remount: inode %d, want the lower's %d", got, lowerIno["f"])
	}
	copyIno := lstatT(t, filepath.Join(upper, "s")).Ino
	if got := lstatT(t, filepath.Join(mnt, "s")).Ino; got != copyIno || got == lowerIno["s"] {
		t.Errorf("symlink after remount: inode %d; the row says the copy's (%d), not the lower's (%d)", got, copyIno, lowerIno["s"])
	}
}

// TestBothMarkerNamespacesRead pins the docs/semantics.md row on markers:
// a trusted.overlay.opaque and a user.overlay.opaque directory are both
// opaque in a mount of the root format and in one of the rootless format
// (-o userxattr); the kernel reads only one namespace in each.
func TestBothMarkerNamespacesRead(t *testing.T) {
	fstest.RequireFUSE(t)
	for _, args := range [][]string{nil, {"-o", "userxattr"}} {
		name := "root-format"
		if args != nil {
			name = "userxattr"
		}
		t.Run(name, func(t *testing.T) {
			lowers, upper, work, mnt := layers(t, stack{
				bottom: []fstest.Applier{
					fstest.CreateDir("t", 0o755), fstest.CreateFile("t/hidden", nil, 0o644),
					fstest.CreateDir("u", 0o755), fstest.CreateFile("u/hidden", nil, 0o644),
				},
				middle: []fstest.Applier{
					fstest.CreateDir("t", 0o755), fstest.Opaque("t"), fstest.CreateFile("t/shown", nil, 0o644),
					fstest.CreateDir("u", 0o755), fstest.UserOpaque("u"), fstest.CreateFile("u/shown", nil, 0o644),
				},
			})
			fstest.MountUnion(t, lowers, upper, work, mnt, args...)
			for _, dir := range []string{"t", "u"} {
				entries, err := os.ReadDir(filepath.Join(mnt, dir))
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) != 1 || entries[0].Name() != "shown" {
					t.Errorf("%s lists %v, want just shown (the dir is opaque)", dir, entries)
				}
				if _, err := os.Lstat(filepath.Join(mnt, dir, "hidden")); !os.IsNotExist(err) {
					t.Errorf("lstat %s/hidden: %v, want ENOENT", dir, err)
				}
			}
		})
	}
}
