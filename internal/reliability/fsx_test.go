package reliability

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/fsx"
)

// fsxPool writes the exerciser's files into lower: n files of up to 160
// KiB in a few directories (so that parents are copied up too), a third of
// them sparse, and returns them with paths under mnt.
func fsxPool(t *testing.T, rng *rand.Rand, lower, mnt string, n int) []fsx.File {
	t.Helper()
	var files []fsx.File
	for i := 0; i < n; i++ {
		dir := fmt.Sprintf("d%d", i%4)
		if err := os.MkdirAll(filepath.Join(lower, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		rel := fmt.Sprintf("%s/f%04d", dir, i)
		size := rng.IntN(160 << 10)
		content := make([]byte, size)
		if i%3 == 0 && size > 0 {
			// Sparse: data at a few places, holes between.
			dataAt := map[int64][]byte{}
			for k := 0; k < 3; k++ {
				off := rng.Int64N(int64(size))
				dataAt[off] = randomBytes(rng, min(int(int64(size)-off), 8<<10)&^7)
			}
			dataAt = disjoint(dataAt)
			for off, b := range dataAt {
				copy(content[off:], b)
			}
			if err := fstest.Apply(lower, fstest.CreateSparseFile(rel, int64(size), dataAt)); err != nil {
				t.Fatal(err)
			}
		} else {
			content = randomBytes(rng, size)
			if err := os.WriteFile(filepath.Join(lower, rel), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		files = append(files, fsx.File{Path: filepath.Join(mnt, rel), Initial: content})
	}
	return files
}

// disjoint drops the pieces that overlap an earlier one (by offset).
func disjoint(m map[int64][]byte) map[int64][]byte {
	out := map[int64][]byte{}
	var ends [][2]int64
	for off, b := range m {
		end := off + int64(len(b))
		ok := true
		for _, e := range ends {
			if off < e[1] && e[0] < end {
				ok = false
			}
		}
		if ok && len(b) > 0 {
			out[off] = b
			ends = append(ends, [2]int64{off, end})
		}
	}
	return out
}

// TestFsx runs the exerciser through unionmount with and without
// passthrough (8,000 operations each; -reliability.fsxops, a million in
// the long mode) and through kernel overlayfs (half as many), on files
// that all start in the lower layer, then checks the upper on disk and,
// after a remount, the merged view against the exerciser's final model.
// The layers are on a tmpfs so that the run measures the mount, not the
// disk's fsync, and the daemon is built without -race (TestLoad looks for
// races): this test is about the bytes.
func TestFsx(t *testing.T) {
	fstest.RequireFUSE(t)
	bin := daemonBinary(t, false)
	for i, tg := range allTargets {
		ops := fsxOps()
		if tg.kernel {
			ops /= 2
		}
		pool := min(1024, max(24, ops/300))
		t.Run(tg.name, func(t *testing.T) {
			t.Setenv("UNIONMOUNT_BIN", bin)
			base := publicTempDir(t)
			fsDir := filepath.Join(base, "fs")
			if err := os.Mkdir(fsDir, 0o755); err != nil {
				t.Fatal(err)
			}
			mountTmpfs(t, fsDir, "size=1g")
			l := newLayers(t, fsDir)
			l.mnt = filepath.Join(base, "mnt")
			if err := os.Mkdir(l.mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			seed := *seedFlag + uint64(i)
			files := fsxPool(t, rand.New(rand.NewPCG(seed, 20)), l.lower, l.mnt, pool)
			remount := func() func() error {
				if tg.kernel {
					k := fstest.MountKernelOverlay(t, []string{l.lower}, l.upper, l.work, l.mnt)
					return k.Unmount
				}
				u := fstest.MountUnion(t, []string{l.lower}, l.upper, l.work, l.mnt, tg.args...)
				return u.Unmount
			}
			unmount := remount()
			start := time.Now()
			st, err := fsx.Run(fsx.Config{
				Seed:        seed,
				Ops:         ops,
				Files:       files,
				RetireEvery: max(ops/pool, 50),
				MaxSize:     256 << 10,
				MaxOp:       64 << 10,
				NoStaleMmap: tg.kernel,
			})
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %v in %v (%.0f ops/s)", tg.name, st, elapsed.Round(time.Millisecond), float64(st.Ops)/elapsed.Seconds())
			if err := unmount(); err != nil {
				t.Fatal(err)
			}

			// The upper holds exactly the final content of every file that
			// was copied up; the others still equal the lower.
			copied := 0
			for _, f := range files {
				rel, _ := filepath.Rel(l.mnt, f.Path)
				want := st.Final[f.Path]
				got, err := os.ReadFile(filepath.Join(l.upper, rel))
				switch {
				case errors.Is(err, os.ErrNotExist):
					if !bytes.Equal(want, f.Initial) {
						t.Errorf("upper %s: missing, but the file was changed", rel)
					}
				case err != nil:
					t.Fatal(err)
				default:
					copied++
					if !bytes.Equal(got, want) {
						t.Errorf("upper %s: %d bytes on disk differ from the model's %d", rel, len(got), len(want))
					}
				}
			}
			if !tg.kernel {
				if left := l.workLeftovers(t); len(left) > 0 {
					t.Errorf("workdir holds %q after the run", left)
				}
			}
			remount()
			for _, f := range files {
				if err := fsx.Verify(f.Path, st.Final[f.Path]); err != nil {
					t.Errorf("after a remount: %v", err)
				}
			}
			t.Logf("%s: %d of %d pool files copied up, all equal to the model on disk and after a remount", tg.name, copied, len(files))
		})
	}
}
