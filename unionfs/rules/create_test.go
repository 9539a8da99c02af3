package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// slotFor is what unionfs does before every create: check the name, then
// find what the upper holds there.
func slotFor(s *stack, name string) (Slot, error) {
	if err := CheckName(name); err != nil {
		return Free, err
	}
	return SlotOf(s.upperFd, name)
}

func TestCreate(t *testing.T) {
	runCases(t, []ruleCase{{
		name:  "file over a whiteout",
		lower: []fstest.Applier{file("f", "lower")},
		upper: []fstest.Applier{wh("f")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "f")
			if err != nil {
				return err
			}
			fd, err := s.up.Create(s.upperFd, "f", unix.O_WRONLY|unix.O_CLOEXEC, 0o644, slot, nil)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			_, err = unix.Write(fd, []byte("new"))
			return err
		},
		kernel: func(mnt string) error { return os.WriteFile(filepath.Join(mnt, "f"), []byte("new"), 0o644) },
		want:   []string{"f 0644 =new nlink=1"},
	}, {
		name:  "directory over a whiteout is opaque",
		lower: []fstest.Applier{dir("d"), file("d/x", "1")},
		upper: []fstest.Applier{wh("d")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "d")
			if err != nil {
				return err
			}
			return s.up.Mkdir(s.upperFd, "d", 0o755, slot, nil)
		},
		kernel: func(mnt string) error { return os.Mkdir(filepath.Join(mnt, "d"), 0o755) },
		want:   []string{"d/ 0755 opaque"},
	}, {
		name:  "directory over nothing is not opaque",
		lower: []fstest.Applier{file("other", "1")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "d")
			if err != nil {
				return err
			}
			return s.up.Mkdir(s.upperFd, "d", 0o755, slot, nil)
		},
		kernel: func(mnt string) error { return os.Mkdir(filepath.Join(mnt, "d"), 0o755) },
		want:   []string{"d/ 0755"},
	}, {
		name:  "symlink over a whiteout",
		lower: []fstest.Applier{dir("l")},
		upper: []fstest.Applier{wh("l")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "l")
			if err != nil {
				return err
			}
			return s.up.Symlink(s.upperFd, "target", "l", slot, nil)
		},
		kernel: func(mnt string) error { return os.Symlink("target", filepath.Join(mnt, "l")) },
		want:   []string{"l -> target"},
	}, {
		name:  "fifo over a whiteout",
		lower: []fstest.Applier{file("p", "1")},
		upper: []fstest.Applier{wh("p")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "p")
			if err != nil {
				return err
			}
			return s.up.Mknod(s.upperFd, "p", unix.S_IFIFO|0o644, 0, slot, nil)
		},
		kernel: func(mnt string) error { return unix.Mknod(filepath.Join(mnt, "p"), unix.S_IFIFO|0o644, 0) },
		want:   []string{"p fifo 0644"},
	}, {
		name:  "hard link over a whiteout",
		lower: []fstest.Applier{file("b", "lower")},
		upper: []fstest.Applier{file("a", "x"), wh("b")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "b")
			if err != nil {
				return err
			}
			return s.up.Place(s.upperFd, "b", slot, func(at int, name string) error {
				return unix.Linkat(s.upperFd, "a", at, name, 0)
			})
		},
		kernel: func(mnt string) error { return os.Link(filepath.Join(mnt, "a"), filepath.Join(mnt, "b")) },
		want:   []string{"a 0644 =x nlink=2", "b 0644 =x nlink=2"},
	}, {
		name:  "a name the upper holds",
		upper: []fstest.Applier{file("f", "1")},
		rules: func(s *stack) error {
			_, err := slotFor(s, "f")
			return err
		},
		kernel:  func(mnt string) error { return os.Mkdir(filepath.Join(mnt, "f"), 0o755) },
		wantErr: unix.EEXIST,
		want:    []string{"f 0644 =1 nlink=1"},
	}, {
		// The AUFS dialect (podman layers with a mount_program): the
		// entry is made beside the marker, which then goes.
		name:  "directory over an AUFS whiteout is opaque",
		lower: []fstest.Applier{dir("d"), file("d/x", "1")},
		upper: []fstest.Applier{fstest.AUFSWhiteout("d")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "d")
			if err != nil {
				return err
			}
			if slot != AUFSWhiteout {
				t.Errorf("slot %v, want AUFSWhiteout", slot)
			}
			return s.up.Mkdir(s.upperFd, "d", 0o755, slot, nil)
		},
		want: []string{"d/ 0755 opaque"},
	}, {
		name:  "file over an AUFS whiteout",
		lower: []fstest.Applier{file("f", "lower")},
		upper: []fstest.Applier{fstest.AUFSWhiteout("f")},
		rules: func(s *stack) error {
			slot, err := slotFor(s, "f")
			if err != nil {
				return err
			}
			fd, err := s.up.Create(s.upperFd, "f", unix.O_WRONLY|unix.O_CLOEXEC, 0o600, slot, nil)
			if err == nil {
				unix.Close(fd)
			}
			return err
		},
		want: []string{"f 0600 = nlink=1"},
	}, {
		// Deliberately unlike the kernel, which lets the name be made
		// (docs/semantics.md): it would read back as a whiteout here.
		name:    "a .wh. name",
		rules:   func(s *stack) error { _, err := slotFor(s, ".wh.f"); return err },
		wantErr: unix.EPERM,
	}, {
		name:    "a name too long",
		rules:   func(s *stack) error { _, err := slotFor(s, strings.Repeat("n", 256)); return err },
		wantErr: unix.ENAMETOOLONG,
	}, {
		name:    "a char 0/0 node",
		rules:   func(s *stack) error { return s.up.Mknod(s.upperFd, "c", unix.S_IFCHR|0o644, 0, Free, nil) },
		wantErr: unix.EPERM,
	}})
}

// TestCreateFinishRunsWhereTheEntryIsBuilt: over a whiteout, finish (the
// owner and mode fix-up unionfs passes) runs on the entry in the workdir,
// before it replaces the whiteout; over nothing, in the upper itself.
func TestCreateFinishRunsWhereTheEntryIsBuilt(t *testing.T) {
	s := newStack(t, []fstest.Applier{dir("d")}, []fstest.Applier{wh("d")})
	s.open(t)
	var at []int
	finish := func(dir int, name string) error {
		at = append(at, dir)
		return unix.Fchmodat(dir, name, 0o700, 0)
	}
	if err := s.up.Mkdir(s.upperFd, "d", 0o755, CharWhiteout, finish); err != nil {
		t.Fatal(err)
	}
	if err := s.up.Mkdir(s.upperFd, "e", 0o755, Free, finish); err != nil {
		t.Fatal(err)
	}
	if len(at) != 2 || at[0] != s.up.Work || at[1] != s.upperFd {
		t.Errorf("finish ran in %v, want [workdir %d, upper %d]", at, s.up.Work, s.upperFd)
	}
	want := []string{"d/ 0700 opaque", "e/ 0700"}
	if got := render(t, s.upper); !sameLines(got, want) {
		t.Errorf("upper is %q, want %q", got, want)
	}
}
