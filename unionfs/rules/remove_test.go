package rules

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// removeAs is what unionfs does for unlink (rmdir false) and rmdir of a
// name the union shows as e, whose merged listing (for a directory) is
// empty or not.
func removeAs(name string, e Entry, rmdir, empty bool) func(s *stack) error {
	return func(s *stack) error {
		err := CheckRemove(e, rmdir, func() (bool, error) { return empty, nil })
		if err != nil {
			return err
		}
		return s.up.Remove(s.upperFd, name, e)
	}
}

func unlinkAt(name string) func(string) error {
	return func(mnt string) error { return unix.Unlink(filepath.Join(mnt, name)) }
}

func rmdirAt(name string) func(string) error {
	return func(mnt string) error { return unix.Rmdir(filepath.Join(mnt, name)) }
}

func TestRemove(t *testing.T) {
	runCases(t, []ruleCase{{
		name:   "lower file leaves a whiteout",
		lower:  []fstest.Applier{file("f", "1")},
		rules:  removeAs("f", Entry{}, false, false),
		kernel: unlinkAt("f"),
		want:   []string{"f whiteout"},
	}, {
		name:   "upper file with nothing below leaves nothing",
		lower:  []fstest.Applier{file("other", "1")},
		upper:  []fstest.Applier{file("f", "1")},
		rules:  removeAs("f", Entry{Upper: true}, false, false),
		kernel: unlinkAt("f"),
	}, {
		name:   "upper file over a lower file leaves a whiteout",
		lower:  []fstest.Applier{file("f", "lower")},
		upper:  []fstest.Applier{file("f", "upper")},
		rules:  removeAs("f", Entry{Upper: true, Lower: true}, false, false),
		kernel: unlinkAt("f"),
		want:   []string{"f whiteout"},
	}, {
		name:   "upper file over a lower directory leaves a whiteout",
		lower:  []fstest.Applier{dir("f"), file("f/x", "1")},
		upper:  []fstest.Applier{file("f", "upper")},
		rules:  removeAs("f", Entry{Upper: true, Lower: true}, false, false),
		kernel: unlinkAt("f"),
		want:   []string{"f whiteout"},
	}, {
		name:   "hard link of an upper file leaves the other name",
		lower:  []fstest.Applier{file("other", "1")},
		upper:  []fstest.Applier{file("a", "x"), fstest.Link("a", "b")},
		rules:  removeAs("b", Entry{Upper: true}, false, false),
		kernel: unlinkAt("b"),
		want:   []string{"a 0644 =x nlink=1"},
	}, {
		name:   "lower directory leaves a whiteout",
		lower:  []fstest.Applier{dir("d")},
		rules:  removeAs("d", Entry{Dir: true}, true, true),
		kernel: rmdirAt("d"),
		want:   []string{"d whiteout"},
	}, {
		name:   "merged directory emptied by whiteouts leaves one whiteout",
		lower:  []fstest.Applier{dir("d"), file("d/x", "1"), file("d/y", "2")},
		upper:  []fstest.Applier{dir("d"), wh("d/x"), wh("d/y")},
		rules:  removeAs("d", Entry{Dir: true, Upper: true, Merged: true, Lower: true}, true, true),
		kernel: rmdirAt("d"),
		want:   []string{"d whiteout"},
	}, {
		name:   "opaque upper directory over a lower one leaves a whiteout",
		lower:  []fstest.Applier{dir("d"), file("d/x", "1")},
		upper:  []fstest.Applier{dir("d"), opq("d")},
		rules:  removeAs("d", Entry{Dir: true, Upper: true, Lower: true}, true, true),
		kernel: rmdirAt("d"),
		want:   []string{"d whiteout"},
	}, {
		name:   "upper directory with nothing below leaves nothing",
		lower:  []fstest.Applier{file("other", "1")},
		upper:  []fstest.Applier{dir("d")},
		rules:  removeAs("d", Entry{Dir: true, Upper: true}, true, true),
		kernel: rmdirAt("d"),
	}, {
		name:    "rmdir of a file",
		lower:   []fstest.Applier{file("f", "1")},
		rules:   removeAs("f", Entry{}, true, false),
		kernel:  rmdirAt("f"),
		wantErr: unix.ENOTDIR,
	}, {
		name:    "unlink of a directory",
		lower:   []fstest.Applier{dir("d")},
		rules:   removeAs("d", Entry{Dir: true}, false, true),
		kernel:  unlinkAt("d"),
		wantErr: unix.EISDIR,
	}, {
		name:    "rmdir of a merged directory that shows a lower entry",
		lower:   []fstest.Applier{dir("d"), file("d/x", "1"), file("d/y", "2")},
		upper:   []fstest.Applier{dir("d"), wh("d/x")},
		rules:   removeAs("d", Entry{Dir: true, Upper: true, Merged: true, Lower: true}, true, false),
		kernel:  rmdirAt("d"),
		wantErr: unix.ENOTEMPTY,
		want:    []string{"d/ 0755", "d/x whiteout"},
	}})
}

// TestRemoveDirectoryGoesThroughTheWorkdir: an upper directory that holds
// whiteouts (empty in the union) is moved into the workdir, leaving its
// whiteout in the same step, and deleted there with everything in it.
func TestRemoveDirectoryGoesThroughTheWorkdir(t *testing.T) {
	s := newStack(t, []fstest.Applier{dir("d"), file("d/x", "1")},
		[]fstest.Applier{dir("d"), wh("d/x"), dir("d/sub"), wh("d/sub/y")})
	s.open(t)
	if err := s.up.Remove(s.upperFd, "d", Entry{Dir: true, Upper: true, Merged: true, Lower: true}); err != nil {
		t.Fatal(err)
	}
	if got, want := render(t, s.upper), []string{"d whiteout"}; !sameLines(got, want) {
		t.Errorf("upper is %q, want %q", got, want)
	}
	if left, err := os.ReadDir(s.work); err != nil || len(left) > 0 {
		t.Errorf("workdir holds %v (%v)", left, err)
	}
}
