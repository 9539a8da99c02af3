// Package posix runs go-fuse's POSIX conformance suite through a union
// mount (the built binary) and, as the reference, through kernel overlayfs
// over the same layers.
package posix

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/unionmount/unionmount/internal/fstest"
)

// skipped are the posixtest cases that fail on every local filesystem or
// cannot run here, with the reason; kernel overlayfs fails them as well.
var skipped = map[string]string{
	"FcntlFlockLocksFile": "expects per-process POSIX locks to conflict within one process; fails on every local filesystem",
	"XAttrLarge":          "ext4 refuses xattrs larger than a block",
}

// lowerNames pre-populates the bottom layer with the names the suite
// creates; a whiteout of each name above it (in a lower or in the upper)
// hides them again, so the suite starts from an empty view but every create
// goes over a whiteout and every new directory over a hidden one.
var lowerNames = []fstest.Applier{
	fstest.CreateFile("file", []byte("lower file\n"), 0o644),
	fstest.CreateFile("file.txt", []byte("lower\n"), 0o644),
	fstest.CreateFile("src", []byte("lower src\n"), 0o644),
	fstest.CreateFile("dst", []byte("lower dst\n"), 0o644),
	fstest.CreateFile("target", []byte("lower target\n"), 0o644),
	fstest.CreateFile("test", []byte("lower test\n"), 0o644),
	fstest.CreateDir("dir1", 0o755),
	fstest.CreateFile("dir1/old", []byte("x"), 0o644),
	fstest.CreateDir("dir2", 0o755),
	fstest.CreateFile("dir2/old", []byte("y"), 0o644),
	fstest.Symlink("file", "link"),
}

var whiteouts = []fstest.Applier{
	fstest.Whiteout("file"), fstest.Whiteout("file.txt"), fstest.Whiteout("src"),
	fstest.Whiteout("dst"), fstest.Whiteout("target"), fstest.Whiteout("test"),
	fstest.Whiteout("dir1"), fstest.Whiteout("dir2"), fstest.Whiteout("link"),
}

type stack struct {
	name   string
	bottom []fstest.Applier // the lower layer
	middle []fstest.Applier // a second lower layer above it, if not nil
	upper  []fstest.Applier
}

var stacks = []stack{
	{name: "empty-lower"},
	{name: "names-whited-out-in-upper", bottom: lowerNames, upper: whiteouts},
	{name: "names-whited-out-in-lower", bottom: lowerNames, middle: whiteouts},
}

// mustRun are the posixtest cases that skip themselves on a known FUSE
// limitation the union does not have: a skip is a failure.
var mustRun = map[string]string{
	"RenameOpenDir": "fstat of an open directory that a rename replaced reaches it, as on the kernel",
}

func names() []string {
	var out []string
	for n := range posixtest.All {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// layers makes the lowers, an upper and a workdir in a fresh temp dir.
func layers(t *testing.T, s stack) (lowers []string, upper, work, mnt string) {
	dir := t.TempDir()
	bottom, middle := filepath.Join(dir, "bottom"), filepath.Join(dir, "middle")
	upper, work, mnt = filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
	for _, d := range []string{bottom, middle, upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []struct {
		dir string
		a   []fstest.Applier
	}{{bottom, s.bottom}, {middle, s.middle}, {upper, s.upper}} {
		if err := fstest.Apply(a.dir, a.a...); err != nil {
			t.Fatal(err)
		}
	}
	lowers = []string{bottom}
	if s.middle != nil {
		lowers = []string{middle, bottom}
	}
	return
}

func run(t *testing.T, kernel bool) {
	fstest.RequireRoot(t)
	if kernel {
		fstest.RequireOverlay(t)
	} else {
		fstest.RequireFUSE(t)
	}
	for _, s := range stacks {
		t.Run(s.name, func(t *testing.T) {
			for _, name := range names() {
				t.Run(name, func(t *testing.T) {
					if why, ok := skipped[name]; ok {
						t.Skip("deliberate, fails on the oracle filesystems too: " + why)
					}
					if why, ok := mustRun[name]; ok {
						t.Cleanup(func() {
							if t.Skipped() {
								t.Errorf("%s skipped itself, but must run: %s", name, why)
							}
						})
					}
					lowers, upper, work, mnt := layers(t, s)
					if kernel {
						fstest.MountKernelOverlay(t, lowers, upper, work, mnt)
					} else {
						fstest.MountUnion(t, lowers, upper, work, mnt)
					}
					posixtest.All[name](t, mnt)
				})
			}
		})
	}
}

func TestPosixUnion(t *testing.T)  { run(t, false) }
func TestPosixKernel(t *testing.T) { run(t, true) }
