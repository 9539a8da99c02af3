package copyup

// Tests that need a process of their own: one killed with SIGKILL in the
// middle of a copy-up, and one running as an unprivileged user. The test
// binary re-executes itself; TestMain sends it to the helper named in the
// environment.

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const helperEnv = "UNIONMOUNT_COPYUP_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "stop":
		helperStop()
	case "unprivileged":
		helperUnprivileged()
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperFail reports a helper failure to the parent test.
func helperFail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// helperLayout opens base/{lower,upper,work} like newLayout, without a T.
func helperLayout(base string) *layout {
	l := &layout{lower: base + "/lower", upper: base + "/upper", work: base + "/work"}
	for _, p := range []struct {
		fd    *int
		path  string
		flags int
	}{{&l.lowerFd, l.lower, dirFlags.lower}, {&l.upperFd, l.upper, dirFlags.upper}, {&l.workFd, l.work, dirFlags.work}} {
		fd, err := unix.Open(p.path, p.flags|unix.O_CLOEXEC, 0)
		if err != nil {
			helperFail("open %s: %v", p.path, err)
		}
		*p.fd = fd
	}
	return l
}

// helperStop copies up lower/NAME and, on reaching STEP, says "stopped" on
// stdout and waits to be killed.
func helperStop() {
	l := helperLayout(os.Getenv("BASE"))
	name := os.Getenv("NAME")
	step, _ := strconv.Atoi(os.Getenv("STEP"))
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(l.lower, name), &st); err != nil {
		helperFail("%v", err)
	}
	opts := keepOwner()
	opts.noTmpfile = os.Getenv("NOTMPFILE") != ""
	opts.hook = func(s Step) error {
		if s == Step(step) {
			fmt.Println("stopped")
			for { // until SIGKILL; a bare select{} could trip the deadlock detector
				time.Sleep(time.Hour)
			}
		}
		return nil
	}
	err := Entry(Source{DirFd: l.lowerFd, Name: name, Stat: st}, l.upperFd, name, l.workFd, opts)
	helperFail("copy-up finished without stopping: %v", err)
}

// TestCrashLeavesUpperWhole kills a copy-up process at each step: the upper
// holds nothing or the complete entry, and CleanWorkdir removes what is left
// in the workdir. A regular file is built as an O_TMPFILE file, so nothing
// is left at all; the named temp it falls back to is killed too.
func TestCrashLeavesUpperWhole(t *testing.T) {
	exe, err := os.Executable()
	must(t, err)
	type variant struct {
		fx        fixture
		noTmpfile bool
	}
	var variants []variant
	for _, fx := range []fixture{everyType[2], everyType[4], everyType[5]} {
		variants = append(variants, variant{fx, false})
	}
	variants = append(variants, variant{everyType[2], true})
	for _, v := range variants {
		fx := v.fx
		for s := StepCreate; s <= StepSyncDir; s++ {
			label := fx.name
			if v.noTmpfile {
				label += "-named"
			}
			t.Run(fmt.Sprintf("%s/%s", label, s), func(t *testing.T) {
				base := t.TempDir()
				l := newLayoutIn(t, base)
				src := filepath.Join(l.lower, fx.name)
				fx.make(t, src)
				srcSt, srcX := lstat(t, src), xattrsOf(t, src)

				cmd := exec.Command(exe, "-test.run=^$")
				cmd.Env = append(os.Environ(), helperEnv+"=stop", "BASE="+base, "NAME="+fx.name, "STEP="+strconv.Itoa(int(s)))
				if v.noTmpfile {
					cmd.Env = append(cmd.Env, "NOTMPFILE=1")
				}
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.StdoutPipe()
				must(t, err)
				must(t, cmd.Start())
				line, err := bufio.NewReader(out).ReadString('\n')
				if line != "stopped\n" {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("helper did not stop at %s: %q %v; stderr: %s", s, line, err, stderr.String())
				}
				must(t, cmd.Process.Kill())
				io.Copy(io.Discard, out)
				if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
					t.Fatalf("helper: %v, want killed; stderr: %s", err, stderr.String())
				}

				dst := filepath.Join(l.upper, fx.name)
				if s > StepRename {
					checkCopy(t, src, srcSt, srcX, dst, keepOwner())
				} else {
					l.requireAbsent(t, fx.name)
				}
				left := dirNames(t, l.work)
				unnamed := srcSt.Mode&unix.S_IFMT == unix.S_IFREG && !v.noTmpfile
				if unnamed && len(left) != 0 {
					t.Errorf("workdir after a kill at %s of an O_TMPFILE copy-up holds %q, want nothing", s, left)
				}
				if !unnamed && s > StepCreate && s <= StepRename && (len(left) != 1 || !strings.HasPrefix(left[0], TempPrefix)) {
					t.Errorf("workdir after a kill at %s holds %q, want one temp", s, left)
				}
				must(t, CleanWorkdir(l.workFd))
				l.requireWorkEmpty(t)
			})
		}
	}
}

// helperUnprivileged runs as an ordinary user: it copies up read-only
// entries that carry user.* xattrs (which need write permission on the
// copy, so xattrs must come before the mode), then cleans a leftover temp
// tree with read-only and locked directories.
func helperUnprivileged() {
	l := helperLayout(os.Getenv("BASE"))
	for _, name := range []string{"ro-file", "ro-dir"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(l.lower, name), &st); err != nil {
			helperFail("%v", err)
		}
		if err := Entry(Source{DirFd: l.lowerFd, Name: name, Stat: st}, l.upperFd, name, l.workFd, keepOwner()); err != nil {
			helperFail("%v", err)
		}
	}
	if err := CleanWorkdir(l.workFd); err != nil {
		helperFail("%v", err)
	}
	os.Exit(0)
}

// TestUnprivileged copies up as uid/gid 65534 (nobody).
func TestUnprivileged(t *testing.T) {
	requireRoot(t)
	const id = 65534
	// A directory nobody can reach, holding a copy of the test binary.
	base, err := os.MkdirTemp("", "copyup-unprivileged-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	must(t, os.Chmod(base, 0o755))
	exe, err := os.Executable()
	must(t, err)
	bin, err := os.ReadFile(exe)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(base, "copyup.test"), bin, 0o755))

	l := newLayoutIn(t, base)
	for _, d := range []string{l.lower, l.upper, l.work} {
		must(t, os.Chown(d, id, id))
	}
	file := filepath.Join(l.lower, "ro-file")
	must(t, os.WriteFile(file, []byte("read only"), 0o644))
	must(t, unix.Setxattr(file, "user.k", []byte("file"), 0))
	dir := filepath.Join(l.lower, "ro-dir")
	must(t, os.Mkdir(dir, 0o755))
	must(t, unix.Setxattr(dir, "user.k", []byte("dir"), 0))
	for p, mode := range map[string]os.FileMode{file: 0o444, dir: 0o555} {
		must(t, os.Chown(p, id, id))
		must(t, os.Chmod(p, mode))
	}
	// A leftover of a crashed copy-up of a 0555 directory with a locked child.
	tree := filepath.Join(l.work, TempPrefix+"tree")
	must(t, os.MkdirAll(filepath.Join(tree, "locked"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "locked/f"), nil, 0o644))
	must(t, filepath.Walk(tree, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, id, id) }))
	must(t, os.Chmod(filepath.Join(tree, "locked"), 0))
	must(t, os.Chmod(tree, 0o555))

	srcX := map[string]map[string]string{"ro-file": xattrsOf(t, file), "ro-dir": xattrsOf(t, dir)}
	srcSt := map[string]unix.Stat_t{"ro-file": lstat(t, file), "ro-dir": lstat(t, dir)}

	cmd := exec.Command(filepath.Join(base, "copyup.test"), "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=unprivileged", "BASE="+base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id, Gid: id}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper as %d: %v: %s", id, err, out)
	}
	for _, n := range []string{"ro-file", "ro-dir"} {
		checkCopy(t, filepath.Join(l.lower, n), srcSt[n], srcX[n], filepath.Join(l.upper, n), keepOwner())
	}
	l.requireWorkEmpty(t)
}
