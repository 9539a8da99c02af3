package fsx

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func pool(t *testing.T, dir string, n int, seed uint64) []File {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var files []File
	for i := 0; i < n; i++ {
		b := make([]byte, rng.IntN(100<<10))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Path: p, Initial: b})
	}
	return files
}

// TestPlainDirectory: on a plain directory every operation must agree with
// the model; this checks the model itself.
func TestPlainDirectory(t *testing.T) {
	dir := t.TempDir()
	files := pool(t, dir, 8, 1)
	st, err := Run(Config{Seed: 1, Ops: 2000, Files: files, RetireEvery: 200, MaxSize: 128 << 10, MaxOp: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", st)
	if st.Ops < 1950 || st.Checks == 0 || st.FilesStarted < 5 {
		t.Errorf("ran too little: %v", st)
	}
	for p, want := range st.Final {
		if err := Verify(p, want); err != nil {
			t.Error(err)
		}
	}
}

// TestDetectsDifference: a file that does not hold what the caller says is
// reported with the seed and the path.
func TestDetectsDifference(t *testing.T) {
	dir := t.TempDir()
	files := pool(t, dir, 1, 2)
	files[0].Initial = append([]byte("not what is there"), files[0].Initial...)
	_, err := Run(Config{Seed: 7, Ops: 10, Files: files})
	if err == nil {
		t.Fatal("a wrong initial content went unnoticed")
	}
	if !strings.Contains(err.Error(), "seed 7") || !strings.Contains(err.Error(), files[0].Path) {
		t.Errorf("the error does not name the seed and file: %v", err)
	}
}

// TestSeedRepeats: one seed gives one run.
func TestSeedRepeats(t *testing.T) {
	var finals []map[string][]byte
	for i := 0; i < 2; i++ {
		dir := t.TempDir()
		files := pool(t, dir, 3, 3)
		st, err := Run(Config{Seed: 3, Ops: 500, Files: files, RetireEvery: 100})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string][]byte{}
		for p, b := range st.Final {
			m[filepath.Base(p)] = b
		}
		finals = append(finals, m)
	}
	for name, b := range finals[0] {
		if string(finals[1][name]) != string(b) {
			t.Errorf("%s: two runs of one seed differ", name)
		}
	}
}
