package rules

import (
	"path/filepath"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// renameAs is what unionfs does for a rename in the root (a merged
// directory) of name, which the union shows as src, to newName, which it
// shows as dst (nil: nothing): the checks, the copy-up of what moves,
// then Rename. srcLower says whether a lower layer shows name; dstEmpty
// whether a target directory's merged listing is empty.
func renameAs(name, newName string, flags uint32, src Entry, srcLower bool, dst *Entry, dstEmpty bool) func(*stack) error {
	return func(s *stack) error {
		if err := CheckRenameArgs(flags, newName); err != nil {
			return err
		}
		if err := CheckRename(src, dst, flags, func() (bool, error) { return dstEmpty, nil }); err != nil {
			return err
		}
		exchange := flags&unix.RENAME_EXCHANGE != 0
		if !src.Upper {
			if err := s.copyUp(name); err != nil {
				return err
			}
		}
		if exchange && !dst.Upper {
			if err := s.copyUp(newName); err != nil {
				return err
			}
		}
		m := Move{Exchange: exchange, Src: src, SrcParentMerged: true, DstParentMerged: true}
		m.Src.Lower = srcLower
		if dst != nil {
			m.Dst = *dst
		}
		return s.up.Rename(s.upperFd, name, s.upperFd, newName, m)
	}
}

func renameAt(name, newName string, flags uint32) func(string) error {
	return func(mnt string) error {
		return unix.Renameat2(unix.AT_FDCWD, filepath.Join(mnt, name), unix.AT_FDCWD, filepath.Join(mnt, newName), uint(flags))
	}
}

func TestRename(t *testing.T) {
	var (
		lowerFile   = Entry{}
		lowerDir    = Entry{Dir: true}
		upperFile   = Entry{Upper: true}
		upperDir    = Entry{Dir: true, Upper: true}
		mergedDir   = Entry{Dir: true, Upper: true, Merged: true}
		noreplace   = uint32(unix.RENAME_NOREPLACE)
		exchange    = uint32(unix.RENAME_EXCHANGE)
		other       = file("other", "1") // makes the root a merged directory
		lowerOther  = []fstest.Applier{other}
		upperOnDisk = func(lines ...string) []string { return lines }
	)
	runCases(t, []ruleCase{{
		name:   "lower file is copied up and leaves a whiteout",
		lower:  []fstest.Applier{file("a", "1")},
		rules:  renameAs("a", "b", 0, lowerFile, true, nil, false),
		kernel: renameAt("a", "b", 0),
		want:   []string{"a whiteout", "b 0644 =1 nlink=1"},
	}, {
		name:   "upper file replaces a lower file",
		lower:  []fstest.Applier{file("b", "old")},
		upper:  []fstest.Applier{file("a", "new")},
		rules:  renameAs("a", "b", 0, upperFile, false, &lowerFile, false),
		kernel: renameAt("a", "b", 0),
		want:   []string{"b 0644 =new nlink=1"},
	}, {
		name:   "upper file replaces a whiteout",
		lower:  []fstest.Applier{file("b", "old")},
		upper:  []fstest.Applier{file("a", "new"), wh("b")},
		rules:  renameAs("a", "b", 0, upperFile, false, nil, false),
		kernel: renameAt("a", "b", 0),
		want:   []string{"b 0644 =new nlink=1"},
	}, {
		name:   "upper file replaces an upper file over a lower one",
		lower:  []fstest.Applier{file("b", "old")},
		upper:  []fstest.Applier{file("a", "new"), file("b", "mid")},
		rules:  renameAs("a", "b", 0, upperFile, false, &Entry{Upper: true, Lower: true}, false),
		kernel: renameAt("a", "b", 0),
		want:   []string{"b 0644 =new nlink=1"},
	}, {
		name:   "upper directory moved in a merged directory becomes opaque",
		lower:  lowerOther,
		upper:  []fstest.Applier{dir("s"), file("s/f", "1")},
		rules:  renameAs("s", "t", 0, upperDir, false, nil, false),
		kernel: renameAt("s", "t", 0),
		want:   []string{"t/ 0755 opaque", "t/f 0644 =1 nlink=1"},
	}, {
		name:   "upper directory replaces the whiteout of a lower directory",
		lower:  []fstest.Applier{dir("d"), file("d/x", "1")},
		upper:  []fstest.Applier{dir("s"), wh("d")},
		rules:  renameAs("s", "d", 0, upperDir, false, nil, false),
		kernel: renameAt("s", "d", 0),
		want:   []string{"d/ 0755 opaque"},
	}, {
		name:   "opaque directory over a lower one replaces a whiteout and leaves one",
		lower:  []fstest.Applier{dir("s"), file("s/y", "1"), dir("d"), file("d/x", "1")},
		upper:  []fstest.Applier{dir("s"), opq("s"), wh("d")},
		rules:  renameAs("s", "d", 0, upperDir, true, nil, false),
		kernel: renameAt("s", "d", 0),
		want:   []string{"d/ 0755 opaque", "s whiteout"},
	}, {
		name:   "upper directory replaces a merged directory emptied by whiteouts",
		lower:  []fstest.Applier{dir("d"), file("d/x", "1")},
		upper:  []fstest.Applier{dir("d"), wh("d/x"), dir("s")},
		rules:  renameAs("s", "d", 0, upperDir, false, &Entry{Dir: true, Upper: true, Merged: true, Lower: true}, true),
		kernel: renameAt("s", "d", 0),
		want:   []string{"d/ 0755 opaque"},
	}, {
		name:   "exchange of two upper files",
		lower:  lowerOther,
		upper:  []fstest.Applier{file("a", "1"), file("b", "2")},
		rules:  renameAs("a", "b", exchange, upperFile, false, &upperFile, false),
		kernel: renameAt("a", "b", exchange),
		want:   []string{"a 0644 =2 nlink=1", "b 0644 =1 nlink=1"},
	}, {
		name:   "exchange of an upper directory and an upper file",
		lower:  lowerOther,
		upper:  []fstest.Applier{dir("s"), file("f", "1")},
		rules:  renameAs("s", "f", exchange, upperDir, false, &upperFile, false),
		kernel: renameAt("s", "f", exchange),
		want:   []string{"f/ 0755 opaque", "s 0644 =1 nlink=1"},
	}, {
		name:   "exchange of a lower file and an upper file",
		lower:  []fstest.Applier{file("a", "1")},
		upper:  []fstest.Applier{file("b", "2")},
		rules:  renameAs("a", "b", exchange, lowerFile, true, &upperFile, false),
		kernel: renameAt("a", "b", exchange),
		want:   []string{"a 0644 =2 nlink=1", "b 0644 =1 nlink=1"},
	}, {
		name:    "lower directory",
		lower:   []fstest.Applier{dir("d")},
		rules:   renameAs("d", "e", 0, lowerDir, true, nil, false),
		kernel:  renameAt("d", "e", 0),
		wantErr: unix.EXDEV,
	}, {
		name:    "merged directory",
		lower:   []fstest.Applier{dir("d"), file("d/x", "1")},
		upper:   []fstest.Applier{dir("d")},
		rules:   renameAs("d", "e", 0, mergedDir, true, nil, false),
		kernel:  renameAt("d", "e", 0),
		wantErr: unix.EXDEV,
		want:    upperOnDisk("d/ 0755"),
	}, {
		name:    "exchange with a merged directory",
		lower:   []fstest.Applier{dir("d"), file("d/x", "1")},
		upper:   []fstest.Applier{dir("d"), file("f", "1")},
		rules:   renameAs("f", "d", exchange, upperFile, false, &mergedDir, false),
		kernel:  renameAt("f", "d", exchange),
		wantErr: unix.EXDEV,
		want:    upperOnDisk("d/ 0755", "f 0644 =1 nlink=1"),
	}, {
		name:    "RENAME_WHITEOUT",
		lower:   lowerOther,
		upper:   []fstest.Applier{file("a", "1")},
		rules:   renameAs("a", "b", unix.RENAME_WHITEOUT, upperFile, false, nil, false),
		kernel:  renameAt("a", "b", unix.RENAME_WHITEOUT),
		wantErr: unix.EINVAL,
		want:    upperOnDisk("a 0644 =1 nlink=1"),
	}, {
		name:    "RENAME_NOREPLACE over a lower file",
		lower:   []fstest.Applier{file("b", "old")},
		upper:   []fstest.Applier{file("a", "1")},
		rules:   renameAs("a", "b", noreplace, upperFile, false, &lowerFile, false),
		kernel:  renameAt("a", "b", noreplace),
		wantErr: unix.EEXIST,
		want:    upperOnDisk("a 0644 =1 nlink=1"),
	}, {
		name:   "RENAME_NOREPLACE over a whiteout",
		lower:  []fstest.Applier{file("b", "old")},
		upper:  []fstest.Applier{file("a", "1"), wh("b")},
		rules:  renameAs("a", "b", noreplace, upperFile, false, nil, false),
		kernel: renameAt("a", "b", noreplace),
		want:   []string{"b 0644 =1 nlink=1"},
	}, {
		name:    "exchange with nothing",
		lower:   lowerOther,
		upper:   []fstest.Applier{file("a", "1"), wh("b")},
		rules:   renameAs("a", "b", exchange, upperFile, false, nil, false),
		kernel:  renameAt("a", "b", exchange),
		wantErr: unix.ENOENT,
		want:    upperOnDisk("a 0644 =1 nlink=1", "b whiteout"),
	}, {
		name:    "file over a directory",
		lower:   []fstest.Applier{dir("d")},
		upper:   []fstest.Applier{file("a", "1")},
		rules:   renameAs("a", "d", 0, upperFile, false, &lowerDir, true),
		kernel:  renameAt("a", "d", 0),
		wantErr: unix.EISDIR,
		want:    upperOnDisk("a 0644 =1 nlink=1"),
	}, {
		name:    "directory over a file",
		lower:   []fstest.Applier{file("f", "1")},
		upper:   []fstest.Applier{dir("s")},
		rules:   renameAs("s", "f", 0, upperDir, false, &lowerFile, false),
		kernel:  renameAt("s", "f", 0),
		wantErr: unix.ENOTDIR,
		want:    upperOnDisk("s/ 0755"),
	}, {
		name:    "directory over a directory that is not empty",
		lower:   []fstest.Applier{dir("d"), file("d/x", "1")},
		upper:   []fstest.Applier{dir("s")},
		rules:   renameAs("s", "d", 0, upperDir, false, &lowerDir, false),
		kernel:  renameAt("s", "d", 0),
		wantErr: unix.ENOTEMPTY,
		want:    upperOnDisk("s/ 0755"),
	}, {
		// The AUFS dialect: the marker beside the target goes once the
		// entry hides it.
		name:  "upper file replaces an AUFS whiteout",
		lower: []fstest.Applier{file("b", "old")},
		upper: []fstest.Applier{file("a", "1"), fstest.AUFSWhiteout("b")},
		rules: renameAs("a", "b", 0, upperFile, false, nil, false),
		want:  []string{"b 0644 =1 nlink=1"},
	}, {
		name:    "a .wh. name",
		upper:   []fstest.Applier{file("a", "1")},
		rules:   renameAs("a", ".wh.b", 0, upperFile, false, nil, false),
		wantErr: unix.EPERM,
		want:    upperOnDisk("a 0644 =1 nlink=1"),
	}})
}

// renameBetween is renameAs for a move from the upper directory sdir to
// ddir (paths below the upper; both already up), whose merged-ness the
// case states. The entry that moves is already up.
func renameBetween(sdir, name, ddir, newName string, srcParentMerged, dstParentMerged bool, src Entry, srcLower bool) func(*stack) error {
	return func(s *stack) error {
		if err := CheckRename(src, nil, 0, nil); err != nil {
			return err
		}
		open := func(p string) (int, error) {
			return unix.Openat(s.upperFd, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		sfd, err := open(sdir)
		if err != nil {
			return err
		}
		defer unix.Close(sfd)
		dfd, err := open(ddir)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		m := Move{Src: src, SrcParentMerged: srcParentMerged, DstParentMerged: dstParentMerged}
		m.Src.Lower = srcLower
		return s.up.Rename(sfd, name, dfd, newName, m)
	}
}

func TestRenameBetweenDirectories(t *testing.T) {
	upperDir := Entry{Dir: true, Upper: true}
	runCases(t, []ruleCase{{
		name:   "upper directory into an upper-only directory stays as it is",
		lower:  []fstest.Applier{file("other", "1")},
		upper:  []fstest.Applier{dir("p"), dir("s")},
		rules:  renameBetween(".", "s", "p", "s", true, false, upperDir, false),
		kernel: renameAt("s", "p/s", 0),
		want:   []string{"p/ 0755", "p/s/ 0755"},
	}, {
		name:   "upper directory from an upper-only directory into a merged one becomes opaque",
		lower:  []fstest.Applier{dir("d"), file("d/x", "1")},
		upper:  []fstest.Applier{dir("d"), dir("p"), dir("p/s")},
		rules:  renameBetween("p", "s", "d", "s", false, true, upperDir, false),
		kernel: renameAt("p/s", "d/s", 0),
		want:   []string{"d/ 0755", "d/s/ 0755 opaque", "p/ 0755"},
	}, {
		name:   "upper file over a lower one leaves a whiteout in its merged directory",
		lower:  []fstest.Applier{dir("d"), file("d/f", "old")},
		upper:  []fstest.Applier{dir("d"), file("d/f", "new"), dir("p")},
		rules:  renameBetween("d", "f", "p", "f", true, false, Entry{Upper: true}, true),
		kernel: renameAt("d/f", "p/f", 0),
		want:   []string{"d/ 0755", "d/f whiteout", "p/ 0755", "p/f 0644 =new nlink=1"},
	}})
}
