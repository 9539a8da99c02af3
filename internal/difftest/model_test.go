package difftest

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// The tests in this file check the test's own machinery without mounts.

func TestShrinkFindsTheTwoCulprits(t *testing.T) {
	ops := GenScript(7, 200)
	a, b := ops[31], ops[150]
	a.Path, b.Path = "culprit-a", "culprit-b"
	ops[31], ops[150] = a, b
	has := func(ops []Op, p string) bool {
		return slices.ContainsFunc(ops, func(o Op) bool { return o.Path == p })
	}
	fails := func(ops []Op) bool { return has(ops, "culprit-a") && has(ops, "culprit-b") }
	got, calls := Shrink(ops, fails, 1000)
	if want := []Op{a, b}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Shrink = %v, want %v", got, want)
	}
	if calls > 100 {
		t.Errorf("Shrink made %d calls for 200 ops, want a logarithmic number", calls)
	}
}

func TestShrinkRespectsTheBudget(t *testing.T) {
	ops := GenScript(1, 50)
	calls := 0
	_, n := Shrink(ops, func([]Op) bool { calls++; return false }, 5)
	if calls != 5 || n != 5 {
		t.Errorf("fails called %d times, Shrink reports %d, want 5", calls, n)
	}
}

func TestGenerationIsDeterministic(t *testing.T) {
	for seed := uint64(1); seed < 30; seed++ {
		if !reflect.DeepEqual(GenStack(seed), GenStack(seed)) {
			t.Fatalf("GenStack(%d) differs between calls", seed)
		}
		if !reflect.DeepEqual(GenScript(seed, 100), GenScript(seed, 100)) {
			t.Fatalf("GenScript(%d) differs between calls", seed)
		}
	}
	if reflect.DeepEqual(GenScript(1, 100), GenScript(2, 100)) {
		t.Error("seeds 1 and 2 give the same script")
	}
}

// TestGenerationCoversTheVocabulary makes sure the generator produces every
// kind of layer entry and op, so a change of weights cannot silently drop one.
func TestGenerationCoversTheVocabulary(t *testing.T) {
	items := map[ItemKind]bool{}
	opaque, upper := false, false
	for seed := uint64(1); seed <= 20; seed++ {
		s := GenStack(seed)
		for _, l := range append(s.Lowers, s.Upper) {
			for _, it := range l.Items {
				items[it.Kind] = true
				opaque = opaque || it.Opaque
			}
		}
		upper = upper || len(s.Upper.Items) > 0
	}
	for _, k := range []ItemKind{ItemDir, ItemFile, ItemSymlink, ItemLink, ItemFIFO, ItemWhiteout} {
		if !items[k] {
			t.Errorf("20 stacks have no %s", k)
		}
	}
	if !opaque || !upper {
		t.Errorf("20 stacks: opaque dir %v, non-empty upper %v; want both", opaque, upper)
	}
	kinds := map[Kind]bool{}
	flags := map[uint32]bool{}
	for _, op := range GenScript(1, 20*150) {
		kinds[op.Kind] = true
		if op.Kind == OpRename {
			flags[op.Flags] = true
		}
	}
	for _, w := range opWeights {
		if !kinds[w.kind] {
			t.Errorf("3000 ops have no %s", w.kind)
		}
	}
	for _, f := range []uint32{0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE} {
		if !flags[f] {
			t.Errorf("3000 ops have no rename with flags %#x", f)
		}
	}
}

func TestMtimeTracker(t *testing.T) {
	m := NewMtimeTracker()
	ok := Result{}
	step := func(op Op, resolved ...string) { r := ok; r.Resolved = resolved; m.Step(op, r) }
	step(Op{Kind: OpCreate, Path: "a"}, "a")
	step(Op{Kind: OpMkdir, Path: "d"}, "d")
	step(Op{Kind: OpCreate, Path: "d/x"}, "d/x")
	step(Op{Kind: OpUtimes, Path: "b"}, "b")
	step(Op{Kind: OpRename, Path: "d", Path2: "e"}, "d", "e")
	step(Op{Kind: OpRename, Path: "a", Path2: "c", Flags: unix.RENAME_EXCHANGE}, "a", "c")
	step(Op{Kind: OpLink, Path: "b", Path2: "f"}, "b", "f")
	step(Op{Kind: OpUtimes, Path: "f"}, "f")
	m.Step(Op{Kind: OpCreate, Path: "g"}, Result{Err: "ENOENT"})
	step(Op{Kind: OpLink, Path: "b", Path2: "h"}, "b", "h")
	step(Op{Kind: OpRename, Path: "f", Path2: "h"}, "f", "h") // a no-op: f and h are one inode
	step(Op{Kind: OpMkdir, Path: "i"}, "i")
	step(Op{Kind: OpLink, Path: "b", Path2: "i/j"}, "b", "i/j")
	step(Op{Kind: OpRename, Path: "i", Path2: "b", Flags: unix.RENAME_EXCHANGE}, "i", "b")
	for p, want := range map[string]bool{
		"a": true, "c": false, // exchanged
		"d": true, "d/x": true, "e": false, "e/x": false, // moved
		"b": false, "f": false, "h": false, // hard links are never known
		"b/j": false, "i": false, // exchanged with a hard link: moved
		"g": true, // failed ops change nothing
	} {
		if got := m.Known(p); got != want {
			t.Errorf("Known(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestInodeMatch(t *testing.T) {
	m := newInodeMatch()
	a, b, c := DevIno{1, 1}, DevIno{1, 2}, DevIno{1, 3}
	x, y := DevIno{2, 10}, DevIno{2, 20}
	for _, tc := range []struct {
		k, u DevIno
		bad  bool
	}{
		{a, x, false},
		{a, x, false},
		{b, y, false},
		{a, y, true}, // the kernel says a again, unionmount says another known inode
		{c, x, true}, // the kernel has a new one, unionmount an old one
	} {
		if msg := m.pair(tc.k, tc.u, "obs"); (msg != "") != tc.bad {
			t.Errorf("pair(%v, %v) = %q, want a mismatch: %v", tc.k, tc.u, msg, tc.bad)
		}
	}
}

// TestRunnerIsDeterministic runs one script in the runner process on two
// plain directories built from the same stack (the upper layer's content)
// and expects CompareRuns to find nothing: the comparison must not see
// differences that come from the clock or the inode allocator.
func TestRunnerIsDeterministic(t *testing.T) {
	fstest.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, root: mountTmpfs(t), exe: exe}
	for seed := uint64(1); seed <= 4; seed++ {
		ops := GenScript(seed, 150)
		var runs []*Run
		for range 2 {
			dir, err := os.MkdirTemp(h.root, "plain-")
			if err != nil {
				t.Fatal(err)
			}
			// A plain directory: the top lower of the stack.
			if err := buildLayer(filepath.Join(dir, "root"), GenStack(seed).Lowers[0]); err != nil {
				t.Fatal(err)
			}
			r, err := h.runner(dir, filepath.Join(dir, "root"), Job{Ops: ops, Before: true})
			if err != nil {
				t.Fatal(err)
			}
			runs = append(runs, r)
		}
		if ms := CompareRuns(ops, runs[0], runs[1]); len(ms) > 0 {
			t.Errorf("seed %d: two runs on identical plain directories differ:\n%s", seed, listMismatches(ms, 20))
		}
		errs := 0
		for _, r := range runs[0].Results {
			if r.Err != "" {
				errs++
			}
		}
		if errs == len(ops) || errs == 0 {
			t.Errorf("seed %d: %d of %d ops failed; a useful script has both", seed, errs, len(ops))
		}
	}
}

func TestMergedDir(t *testing.T) {
	s := Stack{
		Upper: Layer{Items: []Item{{Path: "d", Kind: ItemDir}, {Path: "o", Kind: ItemDir, Opaque: true}, {Path: "u", Kind: ItemDir}}},
		Lowers: []Layer{
			{Items: []Item{{Path: "d", Kind: ItemDir}, {Path: "d/x", Kind: ItemDir}, {Path: "o", Kind: ItemDir}, {Path: "w", Kind: ItemWhiteout}}},
			{Items: []Item{{Path: "d", Kind: ItemDir, Opaque: true}, {Path: "w", Kind: ItemDir}, {Path: "f", Kind: ItemFile}}},
			{Items: []Item{{Path: "d", Kind: ItemDir}, {Path: "u", Kind: ItemFile}}},
		},
	}
	for p, want := range map[string][]int{
		".":   {0, 1, 2, 3},
		"d":   {0, 1, 2}, // opaque in lower 2
		"d/x": {1},
		"o":   {0}, // opaque in the upper
		"u":   {0}, // a file below a dir is hidden
		"w":   nil, // whited out
		"f":   nil, // not a dir
		"nx":  nil,
	} {
		if got := s.mergedDir(p); !slices.Equal(got, want) {
			t.Errorf("mergedDir(%q) = %v, want %v", p, got, want)
		}
	}
}
