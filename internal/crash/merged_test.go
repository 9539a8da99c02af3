package crash

import (
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// tree is a merged view as the crash checks compare it: path -> the
// permission bits and "dir/" for a directory, the target for a symlink,
// else the permission bits and the content.
type tree map[string]string

const (
	dirMark = "dir/"
	dirVal  = "0755 " + dirMark // a directory made with 0755
)

// fileVal is the tree value of a 0644 file holding c.
func fileVal(c string) string { return "0644 " + c }

func readTree(t *testing.T, root string) tree {
	t.Helper()
	out := tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := fmt.Sprintf("%04o ", uint32(info.Mode().Perm()))
		switch {
		case d.IsDir():
			out[rel] = perm + dirMark
		case info.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "symlink -> " + target
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = perm + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeTree makes the directories (0755) and files (0644) of a tree of
// those modes under root.
func writeTree(t *testing.T, root string, tr tree) {
	t.Helper()
	var ps []string
	for p := range tr {
		ps = append(ps, p)
	}
	sort.Strings(ps) // parents first
	for _, p := range ps {
		var err error
		if v := tr[p]; v == dirVal {
			err = os.Mkdir(filepath.Join(root, p), 0o755)
		} else if c, ok := strings.CutPrefix(v, "0644 "); ok {
			err = os.WriteFile(filepath.Join(root, p), []byte(c), 0o644)
		} else {
			err = fmt.Errorf("no way to make %q", v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// diffTrees describes how got differs from want, briefly.
func diffTrees(want, got tree) string {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, p+" missing")
		case g != w:
			out = append(out, fmt.Sprintf("%s is %s, want %s", p, short(g), short(w)))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("%s (%s) unexpected", p, short(g)))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func short(s string) string {
	if strings.HasSuffix(s, " "+dirMark) {
		return "a dir " + strings.TrimSuffix(s, " "+dirMark)
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 24 {
		s = s[:24] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// step is one operation of a crash script: what it does through the mount
// and to the model.
type step struct {
	desc  string
	do    func(mnt string) error
	model func(tree)
}

// runScript applies steps through the mount one after the other, counting
// those that returned.
func runScript(mnt string, steps []step, acked *atomic.Int64) error {
	for _, s := range steps {
		if err := s.do(mnt); err != nil {
			return fmt.Errorf("%s: %w", s.desc, err)
		}
		acked.Add(1)
	}
	return nil
}

// states returns the model before and after every step.
func states(initial tree, steps []step) []tree {
	out := []tree{maps.Clone(initial)}
	cur := maps.Clone(initial)
	for _, s := range steps {
		s.model(cur)
		out = append(out, maps.Clone(cur))
	}
	return out
}

// crashScript kills the daemon at seeded points in steps, remounts, and
// checks that the merged view is the state after the last acknowledged
// step or after the one in flight, and that the workdir was cleaned. A
// first run without a kill checks the final state and times the script;
// the kill points fall within that time.
func crashScript(t *testing.T, name string, rng *rand.Rand, fixture func(lower string), initial tree,
	mkSteps func(rng *rand.Rand) []step) {
	d := newDirs(t)
	fixture(d.lower)
	steps := mkSteps(rng)
	u := d.mount(t)
	var acked atomic.Int64
	start := time.Now()
	if err := runScript(d.mnt, steps, &acked); err != nil {
		t.Fatalf("%s without a kill: %v", name, err)
	}
	maxDelay := time.Since(start)
	if diff := diffTrees(states(initial, steps)[len(steps)], readTree(t, d.mnt)); diff != "" {
		t.Fatalf("%s without a kill: %s", name, diff)
	}
	if err := u.Unmount(); err != nil {
		t.Fatal(err)
	}
	var landed, before, done int
	var ackedAt []int
	for i := 0; i < *points; i++ {
		d := newDirs(t)
		fixture(d.lower)
		steps := mkSteps(rng)
		want := states(initial, steps)
		var acked atomic.Int64
		delay := time.Duration(rng.Int64N(int64(maxDelay)))
		opErr := killDuring(t, d, delay, func() error { return runScript(d.mnt, steps, &acked) })
		n := int(acked.Load())
		ackedAt = append(ackedAt, n)
		u := d.mount(t)
		emptyWork(t, d)
		got := readTree(t, d.mnt)
		switch {
		case n == len(steps):
			done++
			if diff := diffTrees(want[n], got); diff != "" {
				t.Fatalf("%s, kill at %v after all %d steps: %s", name, delay, n, diff)
			}
		case diffTrees(want[n], got) == "":
			before++
		case diffTrees(want[n+1], got) == "":
			landed++
		default:
			t.Fatalf("%s, kill at %v: %d steps acknowledged, step %d (%s) in flight (%v); the merged view is neither the state before it nor after it:\n  vs before: %s\n  vs after:  %s",
				name, delay, n, n+1, steps[n].desc, opErr, diffTrees(want[n], got), diffTrees(want[n+1], got))
		}
		if err := u.Unmount(); err != nil {
			t.Fatal(err)
		}
	}
	sort.Ints(ackedAt)
	t.Logf("%s: %d kill points within %v (steps acknowledged at each: %v): %d showed the state before the step in flight, %d after it, %d after the whole script",
		name, *points, maxDelay.Round(time.Millisecond), ackedAt, before, landed, done)
}

// content is a file's unique content, big enough that its copy-up takes a
// while.
func content(name string) string {
	return strings.Repeat("content of "+name+"\n", 8<<10)
}

// TestKillDuringRenames: seeded renames of lower files (copy-up, rename in
// the upper, whiteout at the old name) and of files already in the upper,
// within a merged directory and between two, plain and with
// RENAME_NOREPLACE or RENAME_EXCHANGE. A kill at any point leaves the state
// before or after the rename in flight: every content exactly once, no
// name duplicated or lost.
func TestKillDuringRenames(t *testing.T) {
	fstest.RequireFUSE(t)
	rng := rand.New(rand.NewPCG(*seed, 3))
	var names []string
	initial := tree{"a": dirVal, "b": dirVal}
	for i := 0; i < 4; i++ {
		for _, dir := range []string{"a", "b"} {
			p := fmt.Sprintf("%s/f%d", dir, i)
			names = append(names, p)
			if i < 3 {
				initial[p] = fileVal(content(p))
			}
		}
	}
	fixture := func(lower string) {
		writeTree(t, lower, initial)
	}
	mkSteps := func(rng *rand.Rand) []step {
		cur := maps.Clone(initial)
		var steps []step
		for len(steps) < 40 {
			src, dst := names[rng.IntN(len(names))], names[rng.IntN(len(names))]
			_, srcOK := cur[src]
			_, dstOK := cur[dst]
			if !srcOK || src == dst {
				continue
			}
			var flags uint
			switch k := rng.IntN(4); {
			case k == 0 && !dstOK:
				flags = unix.RENAME_NOREPLACE
			case k == 1 && dstOK:
				flags = unix.RENAME_EXCHANGE
			}
			s := step{
				desc: fmt.Sprintf("rename %s %s flags %d", src, dst, flags),
				do: func(mnt string) error {
					return unix.Renameat2(unix.AT_FDCWD, filepath.Join(mnt, src), unix.AT_FDCWD, filepath.Join(mnt, dst), flags)
				},
				model: func(m tree) {
					if flags == unix.RENAME_EXCHANGE {
						m[src], m[dst] = m[dst], m[src]
						return
					}
					m[dst] = m[src]
					delete(m, src)
				},
			}
			s.model(cur)
			steps = append(steps, s)
		}
		return steps
	}
	crashScript(t, "renames", rng, fixture, initial, mkSteps)
}

// TestKillDuringRmdirMkdir: emptying merged directories (whiteouts over
// lower children), removing them (a whiteout over a merged directory),
// making them again (opaque, so the lower children stay hidden) and
// filling them. A kill at any point leaves the state before or after the
// step in flight; in particular a lower child never shows again.
func TestKillDuringRmdirMkdir(t *testing.T) {
	fstest.RequireFUSE(t)
	rng := rand.New(rand.NewPCG(*seed, 4))
	initial := tree{}
	for i := 0; i < 4; i++ {
		m := fmt.Sprintf("m%d", i)
		initial[m], initial[m+"/s"] = dirVal, dirVal
		initial[m+"/s/x"] = fileVal("lower " + m + "/s/x\n")
		for c := 0; c < 3; c++ {
			initial[fmt.Sprintf("%s/c%d", m, c)] = fileVal(fmt.Sprintf("lower %s/c%d\n", m, c))
		}
	}
	fixture := func(lower string) { writeTree(t, lower, initial) }
	unlink := func(p string) step {
		return step{"unlink " + p, func(mnt string) error { return os.Remove(filepath.Join(mnt, p)) },
			func(m tree) { delete(m, p) }}
	}
	rmdir := func(p string) step {
		return step{"rmdir " + p, func(mnt string) error { return unix.Rmdir(filepath.Join(mnt, p)) },
			func(m tree) { delete(m, p) }}
	}
	mkdir := func(p string) step {
		return step{"mkdir " + p, func(mnt string) error { return os.Mkdir(filepath.Join(mnt, p), 0o755) },
			func(m tree) { m[p] = dirVal }}
	}
	// A new file with content is two steps, as for the kernel: the create
	// (one FUSE CREATE) and the write.
	create := func(p, c string) []step {
		return []step{
			{"create " + p, func(mnt string) error {
				f, err := os.OpenFile(filepath.Join(mnt, p), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
				if err == nil {
					err = f.Close()
				}
				return err
			}, func(m tree) { m[p] = fileVal("") }},
			{"write " + p, func(mnt string) error {
				return os.WriteFile(filepath.Join(mnt, p), []byte(c), 0o644)
			}, func(m tree) { m[p] = fileVal(c) }},
		}
	}
	mkSteps := func(rng *rand.Rand) []step {
		var steps []step
		for _, i := range rng.Perm(4) {
			m := fmt.Sprintf("m%d", i)
			steps = append(steps,
				unlink(m+"/c0"), unlink(m+"/c1"), unlink(m+"/c2"), unlink(m+"/s/x"), rmdir(m+"/s"),
				rmdir(m), mkdir(m))
			steps = append(steps, create(m+"/new", "new in "+m+"\n")...)
			steps = append(steps, mkdir(m+"/s"))
			steps = append(steps, create(m+"/s/x", "new "+m+"/s/x\n")...)
			if rng.IntN(2) == 0 {
				steps = append(steps, unlink(m+"/new"), unlink(m+"/s/x"), rmdir(m+"/s"), rmdir(m), mkdir(m))
			}
		}
		return steps
	}
	crashScript(t, "rmdir/mkdir", rng, fixture, initial, mkSteps)
}
