package posix

import (
	"fmt"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// TestNameGoneMidListing removes and renames away names of a lower
// directory between two getdents calls of one listing, then reads the
// rest of the listing (READDIRPLUS hands the kernel an entry for every
// name the listing holds) and uses the names that went: stat, open for
// reading, open for writing. The listing was built before the change, but
// the names are gone: kernel overlayfs answers ENOENT, and so must the
// daemon, never the lower file that a whiteout now hides, nor the
// whiteout itself (ENXIO).
func TestNameGoneMidListing(t *testing.T) {
	fstest.RequireRoot(t)
	fstest.RequireOverlay(t)
	fstest.RequireFUSE(t)
	const files = 400
	var bottom []fstest.Applier
	bottom = append(bottom, fstest.CreateDir("d", 0o755))
	for i := 0; i < files; i++ {
		bottom = append(bottom, fstest.CreateFile(fmt.Sprintf("d/f%03d", i), []byte("lower\n"), 0o644))
	}
	gone := []string{"f350", "f360", "f370", "f380"}
	change := func(mnt string) error {
		if err := unix.Unlink(mnt + "/d/f350"); err != nil {
			return err
		}
		if err := unix.Rename(mnt+"/d/f360", mnt+"/d/moved"); err != nil {
			return err
		}
		if err := unix.Rename(mnt+"/d/f001", mnt+"/d/f370"); err != nil {
			return err
		}
		return unix.Unlink(mnt + "/d/f370")
	}
	got := map[bool][]string{}
	for _, tg := range targets {
		lowers, upper, work, mnt := layers(t, stack{bottom: bottom})
		tg.mount(t, lowers, upper, work, mnt)
		var steps []string
		step := func(what string, err error) { steps = append(steps, what+": "+errName(err)) }
		fd, err := unix.Open(mnt+"/d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1024)
		if _, err := unix.Getdents(fd, buf); err != nil {
			t.Fatal(err)
		}
		step("change", change(mnt))
		for {
			n, err := unix.Getdents(fd, buf)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
		unix.Close(fd)
		for _, name := range append(gone, "f390") {
			p := mnt + "/d/" + name
			var st unix.Stat_t
			step("stat "+name, unix.Lstat(p, &st))
			for _, fl := range []int{unix.O_RDONLY, unix.O_WRONLY} {
				fd, err := unix.Open(p, fl|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.Close(fd)
				}
				step(fmt.Sprintf("open %s %#o", name, fl), err)
			}
		}
		got[tg.kernel] = steps
	}
	k, u := got[true], got[false]
	if fmt.Sprint(k) != fmt.Sprint(u) {
		t.Errorf("results differ from kernel overlayfs\nunionmount: %q\nkernel:     %q", u, k)
	}
	t.Logf("kernel: %q", k)
}
