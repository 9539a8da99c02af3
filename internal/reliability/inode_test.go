package reliability

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// The tests here check that an operation on an open file or a looked-up
// inode reaches that inode, as on a local filesystem, and not whatever its
// path names when the daemon gets to it.

// TestOpenUnlinkedFileOperations: fstat, fchmod, fchown, futimens,
// ftruncate, fsetxattr, fgetxattr, write, read and fsync on a file that is
// open and unlinked all work on kernel overlayfs, whether the file was
// created in the upper, copied up from a lower, or made with O_TMPFILE.
// (mkstemp, unlink, ftruncate is a common way to get scratch space.)
func TestOpenUnlinkedFileOperations(t *testing.T) {
	fstest.RequireFUSE(t)
	fstest.RequireOverlay(t)
	targets := []target{{"kernel", true, nil}}
	targets = append(targets, unionTargets...)
	results := map[string]string{}
	for _, tg := range targets {
		l := newLayers(t, "")
		if err := fstest.Apply(l.lower, fstest.CreateFile("low", []byte("from the lower\n"), 0o644)); err != nil {
			t.Fatal(err)
		}
		mountTarget(t, tg, l.lower, l.upper, l.work, l.mnt)
		var seen []string
		for _, name := range []string{"new", "low", "O_TMPFILE"} {
			p := filepath.Join(l.mnt, name)
			var fd int
			var err error
			if name == "O_TMPFILE" {
				fd, err = unix.Open(l.mnt, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o644)
			} else if fd, err = unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644); err == nil {
				err = unix.Unlink(p)
			}
			if err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			ts := []unix.Timespec{{Sec: 1_000_000}, {Sec: 1_000_000}}
			for _, op := range []struct {
				name string
				f    func() error
			}{
				{"fstat", func() error { return unix.Fstat(fd, &st) }},
				{"fchmod", func() error { return unix.Fchmod(fd, 0o600) }},
				{"fchown", func() error { return unix.Fchown(fd, 1, 1) }},
				{"futimens", func() error { return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH) }},
				{"ftruncate", func() error { return unix.Ftruncate(fd, 3) }},
				{"fsetxattr", func() error { return unix.Fsetxattr(fd, "user.x", []byte("1"), 0) }},
				{"fgetxattr", func() error { _, err := unix.Fgetxattr(fd, "user.x", make([]byte, 8)); return err }},
				{"pwrite", func() error { _, err := unix.Pwrite(fd, []byte("abc"), 0); return err }},
				{"pread", func() error { _, err := unix.Pread(fd, make([]byte, 3), 0); return err }},
				{"fsync", func() error { return unix.Fsync(fd) }},
				{"fstat-after", func() error {
					if err := unix.Fstat(fd, &st); err != nil {
						return err
					}
					if st.Mode&0o777 != 0o600 || st.Uid != 1 || st.Size != 3 {
						return fmt.Errorf("mode %o uid %d size %d", st.Mode&0o777, st.Uid, st.Size)
					}
					return nil
				}},
			} {
				if res := errnoName(op.f()); res != "" {
					seen = append(seen, fmt.Sprintf("%s %s: %s", name, op.name, res))
				}
			}
			unix.Close(fd)
		}
		results[tg.name] = strings.Join(seen, "; ")
	}
	t.Logf("failures by target: %q", results)
	for name, r := range results {
		if r != "" {
			t.Errorf("%s: on an open, unlinked file: %s", name, r)
		}
	}
}

// TestOpenRacingRenameReachesTheFile: an open(2) of a name whose inode
// the kernel has looked up reaches that inode even when another process
// renames it meanwhile. A daemon that opened by a path rebuilt from its
// tree of names opened the whiteout the rename left (ENXIO) or, with a
// new file in its place, the wrong file; the node's link now moves with
// the rename under one lock. (The same race hit the xattr calls:
// TestXattrRacingRenameReachesTheFile.)
func TestOpenRacingRenameReachesTheFile(t *testing.T) {
	fstest.RequireFUSE(t)
	for _, tg := range unionTargets {
		t.Run(tg.name, func(t *testing.T) {
			raceRenames(t, tg, 4*time.Second, "opens", func(a string) error {
				fd, err := unix.Open(a, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.Close(fd)
				}
				return err
			})
		})
	}
}

// TestXattrRacingRenameReachesTheFile: setxattr and getxattr of a name
// whose inode the kernel has looked up reach that inode while another
// process renames it back and forth. The daemon used to go by the path,
// which for a moment names the whiteout the rename leaves (EPERM: user.*
// xattrs are refused on a device) or nothing.
func TestXattrRacingRenameReachesTheFile(t *testing.T) {
	fstest.RequireFUSE(t)
	for _, tg := range unionTargets {
		t.Run(tg.name, func(t *testing.T) {
			buf := make([]byte, 16)
			raceRenames(t, tg, 3*time.Second, "xattr calls", func(a string) error {
				err := unix.Setxattr(a, "user.k", []byte("v"), 0)
				if err == nil {
					_, err = unix.Getxattr(a, "user.k", buf)
				}
				return err
			})
		})
	}
}

// raceRenames mounts tg over a lower file "a", then renames a to b and
// back for d (or until op fails) while three goroutines call op on a. Any
// failure but ENOENT, which a call between the two renames explains, is
// an error: the call did not reach the file the kernel had looked up.
func raceRenames(t *testing.T, tg target, d time.Duration, calls string, op func(a string) error) {
	l := newLayers(t, "")
	if err := fstest.Apply(l.lower, fstest.CreateFile("a", []byte("lower a\n"), 0o644)); err != nil {
		t.Fatal(err)
	}
	mountTarget(t, tg, l.lower, l.upper, l.work, l.mnt)
	a, b := filepath.Join(l.mnt, "a"), filepath.Join(l.mnt, "b")
	var stop atomic.Bool
	var mu sync.Mutex
	errs := map[string]int{}
	n := 0
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				err := op(a)
				mu.Lock()
				n++
				if err != nil && !errors.Is(err, unix.ENOENT) {
					errs[errnoName(err)]++
				}
				mu.Unlock()
			}
		}()
	}
	renames := 0
	for deadline := time.Now().Add(d); time.Now().Before(deadline); renames++ {
		if err := os.Rename(a, b); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(b, a); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		bad := len(errs) > 0
		mu.Unlock()
		if bad {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	var list []string
	for e, k := range errs {
		list = append(list, fmt.Sprintf("%s x%d", e, k))
	}
	sort.Strings(list)
	t.Logf("%d %s during %d rename pairs", n, calls, renames)
	if len(list) > 0 {
		t.Errorf("%s on a file being renamed failed with %s (only ENOENT, between the renames, is explained)", calls, strings.Join(list, ", "))
	}
}

// TestCopyUpRacingLookup: lookups (the mount has --timeout 0, so every
// stat asks the daemon) race the copy-up of lower files by appends and
// setxattr. A lookup that probed the layers before a copy-up finished
// used to put the node back on the lower file: the next write failed
// with EBADF, and an xattr set landed on the lower layer.
func TestCopyUpRacingLookup(t *testing.T) {
	fstest.RequireFUSE(t)
	const files = 600
	for _, tg := range unionTargets {
		t.Run(tg.name, func(t *testing.T) {
			l := newLayers(t, "")
			if err := fstest.Apply(l.lower, numberedFiles(files, func(int) []byte { return []byte("lower\n") })...); err != nil {
				t.Fatal(err)
			}
			mountTarget(t, tg, l.lower, l.upper, l.work, l.mnt)
			var stop atomic.Bool
			var current atomic.Int64 // the file being copied up
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var st unix.Stat_t
					for !stop.Load() {
						unix.Lstat(filepath.Join(l.mnt, fmt.Sprintf("f%03d", current.Load())), &st)
					}
				}()
			}
			var failures []string
			for i := 0; i < files; i++ {
				current.Store(int64(i))
				p := filepath.Join(l.mnt, fmt.Sprintf("f%03d", i))
				var err error
				if i%2 == 0 {
					err = appendFile(p, []byte("up\n"))
					if err == nil {
						err = appendFile(p, []byte("up\n"))
					}
				} else {
					err = unix.Setxattr(p, "user.race", []byte("1"), 0)
					if err == nil {
						err = unix.Setxattr(p, "user.race", []byte("2"), 0)
					}
				}
				if err != nil {
					failures = append(failures, fmt.Sprintf("f%03d: %v", i, err))
				}
			}
			stop.Store(true)
			wg.Wait()
			for i := 0; i < files; i++ {
				lp := filepath.Join(l.lower, fmt.Sprintf("f%03d", i))
				if b, err := os.ReadFile(lp); err != nil || string(b) != "lower\n" {
					failures = append(failures, fmt.Sprintf("lower f%03d changed: %q %v", i, b, err))
				}
				if _, err := unix.Getxattr(lp, "user.race", make([]byte, 8)); err == nil {
					failures = append(failures, fmt.Sprintf("lower f%03d got the xattr set through the mount", i))
				}
			}
			if len(failures) > 0 {
				sort.Strings(failures)
				t.Errorf("%d failures racing copy-ups with lookups, e.g. %q", len(failures), failures[:min(5, len(failures))])
			}
		})
	}
}
