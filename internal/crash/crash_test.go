// Package crash kills the unionmount daemon with SIGKILL in the middle of
// copy-ups, fsync'd writes, renames, unlinks and rmdir/mkdir over merged
// directories, mounts the layers again and checks that the union shows a
// state from before or after the interrupted operation, that the workdir
// was cleaned, and that every acknowledged fsync survived.
//
// Kill points come two ways. Seeded delays into an operation
// (TestKillDuring*) land anywhere, mostly between system calls; the scripts
// of renames and of rmdir/mkdir run once without a kill first, which checks
// their final state and times them. Exact kill points (TestKillAtSyscalls, syscall_test.go) use strace to
// hold the return of one system call of the daemon and kill it there, for
// every system call by which an operation changes a layer.
//
// The default run uses 6 seeded kill points per scenario and a sample of
// the exact ones; the long mode,
//
//	go test ./internal/crash -crash.points 200 -timeout 2h
//
// uses 200 seeded kill points per scenario and every exact one.
package crash

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
)

var (
	points = flag.Int("crash.points", 6, "seeded kill points per scenario; above 6 also every exact kill point (the long mode uses 200)")
	seed   = flag.Uint64("crash.seed", 1, "seed for the kill points")
)

type dirs struct {
	lower, upper, work, mnt string
}

func newDirs(t *testing.T) dirs {
	root := t.TempDir()
	d := dirs{filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work"), filepath.Join(root, "mnt")}
	for _, p := range []string{d.lower, d.upper, d.work, d.mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (d dirs) mount(t *testing.T) *fstest.Union {
	return fstest.MountUnion(t, []string{d.lower}, d.upper, d.work, d.mnt)
}

// killDuring runs op against a fresh mount and SIGKILLs the daemon after
// delay; it returns op's error and unmounts what is left.
func killDuring(t *testing.T, d dirs, delay time.Duration, op func() error) error {
	u := d.mount(t)
	done := make(chan error, 1)
	go func() { done <- op() }()
	time.Sleep(delay) // the kill point: a seeded delay into the operation
	if err := u.Kill(); err != nil {
		t.Fatal(err)
	}
	reap(t, u, d.mnt)
	err := <-done
	if uerr := u.Unmount(); uerr != nil {
		t.Fatal(uerr)
	}
	return err
}

func emptyWork(t *testing.T, d dirs) {
	entries, err := os.ReadDir(filepath.Join(d.work, "work"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("workdir not cleaned at mount: %d leftovers, first %q", len(entries), entries[0].Name())
	}
}

// TestKillDuringCopyUp: appending one byte to a large lower file copies it
// up; a kill at any point leaves either no upper copy or a complete one.
func TestKillDuringCopyUp(t *testing.T) {
	fstest.RequireRoot(t)
	fstest.RequireFUSE(t)
	rng := rand.New(rand.NewPCG(*seed, 1))
	data := make([]byte, 96<<20)
	for i := 0; i < len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	want := sha256.Sum256(data)
	var before, after int
	for i := 0; i < *points; i++ {
		d := newDirs(t)
		if err := os.WriteFile(filepath.Join(d.lower, "big"), data, 0o640); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.IntN(400)) * time.Millisecond
		opErr := killDuring(t, d, delay, func() error {
			f, err := os.OpenFile(filepath.Join(d.mnt, "big"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.Write([]byte("X"))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		})

		// The upper holds nothing or the whole copy, never a part.
		if st, err := os.Stat(filepath.Join(d.upper, "big")); err == nil {
			if st.Size() != int64(len(data)) && st.Size() != int64(len(data))+1 {
				t.Fatalf("kill at %v: partial copy-up in the upper: %d of %d bytes", delay, st.Size(), len(data))
			}
		}
		u := d.mount(t)
		emptyWork(t, d)
		got, err := os.ReadFile(filepath.Join(d.mnt, "big"))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(got) == len(data) && sha256.Sum256(got) == want:
			before++
		case len(got) == len(data)+1 && sha256.Sum256(got[:len(data)]) == want && got[len(data)] == 'X':
			after++
			if opErr != nil {
				t.Logf("kill at %v: the append landed though the writer saw %v", delay, opErr)
			}
		case len(got) == len(data) && sha256.Sum256(got) != want:
			t.Fatalf("kill at %v: merged file has the right size but wrong content", delay)
		default:
			t.Fatalf("kill at %v: merged file is %d bytes, want %d or %d", delay, len(got), len(data), len(data)+1)
		}
		if err := u.Unmount(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d kill points: %d before the copy-up, %d after", *points, before, after)
}

// TestKillDuringFsyncWrites: every record whose fsync returned is there
// after the daemon dies, the upper's filesystem loses what was not
// flushed (ext4.crash: a shutdown without writeback, then a journal
// replay), and the layers are mounted again. Killing the daemon alone
// would leave every write in the page cache, fsync'd or not.
func TestKillDuringFsyncWrites(t *testing.T) {
	fstest.RequireRoot(t)
	fstest.RequireFUSE(t)
	rng := rand.New(rand.NewPCG(*seed, 2))
	fs := newExt4(t)
	for i := 0; i < *points; i++ {
		d := newDirs(t)
		d.upper, d.work = filepath.Join(fs.dir, fmt.Sprintf("upper%d", i)), filepath.Join(fs.dir, fmt.Sprintf("work%d", i))
		for _, p := range []string{d.upper, d.work} {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		fs.sync(t) // the fixture must survive the crash
		// A lower file too, so the first write is a copy-up.
		if err := os.WriteFile(filepath.Join(d.lower, "log"), record(0), 0o644); err != nil {
			t.Fatal(err)
		}
		acked := 1
		delay := time.Duration(20+rng.IntN(300)) * time.Millisecond
		killDuring(t, d, delay, func() error {
			f, err := os.OpenFile(filepath.Join(d.mnt, "log"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			for n := 1; ; n++ {
				if _, err := f.Write(record(n)); err != nil {
					return err
				}
				if err := f.Sync(); err != nil {
					return err
				}
				acked = n + 1
			}
		})
		fs.crash(t)
		u := d.mount(t)
		emptyWork(t, d)
		got, err := os.ReadFile(filepath.Join(d.mnt, "log"))
		if err != nil {
			t.Fatal(err)
		}
		if len(got)%recordSize != 0 && len(got) < acked*recordSize {
			t.Fatalf("kill at %v: torn log of %d bytes", delay, len(got))
		}
		n := len(got) / recordSize
		if n < acked {
			t.Fatalf("kill at %v: %d records after remount, %d were fsync'd", delay, n, acked)
		}
		for r := 0; r < acked; r++ {
			if !bytes.Equal(got[r*recordSize:(r+1)*recordSize], record(r)) {
				t.Fatalf("kill at %v: record %d of %d fsync'd ones is corrupt", delay, r, acked)
			}
		}
		if err := u.Unmount(); err != nil {
			t.Fatal(err)
		}
	}
}

const recordSize = 4096

func record(n int) []byte {
	b := bytes.Repeat([]byte{byte('a' + n%26)}, recordSize)
	binary.LittleEndian.PutUint64(b, uint64(n))
	return b
}
