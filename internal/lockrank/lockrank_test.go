package lockrank

import (
	"os"
	"strings"
	"testing"
)

type outer struct{}

func (outer) Rank() int    { return 1 }
func (outer) Name() string { return "outer" }
func (outer) Nests() bool  { return false }

type inner struct{}

func (inner) Rank() int    { return 2 }
func (inner) Name() string { return "inner" }
func (inner) Nests() bool  { return false }

type chain struct{}

func (chain) Rank() int    { return 3 }
func (chain) Name() string { return "chain" }
func (chain) Nests() bool  { return true }

// catch runs f and returns what the checker reported.
func catch(t *testing.T, f func()) string {
	t.Helper()
	if !Enabled {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs the lock-order checks: go test -tags lockcheck ./internal/lockrank")
		}
		t.Skip("the lock order is checked only with -tags lockcheck (make test runs it)")
	}
	var got string
	old := OnInversion
	OnInversion = func(r string) { got = r }
	defer func() { OnInversion = old }()
	f()
	return got
}

func TestInOrder(t *testing.T) {
	var a Mutex[outer]
	var b RWMutex[inner]
	var c1, c2 Mutex[chain]
	if r := catch(t, func() {
		a.Lock()
		b.RLock()
		c1.Lock()
		c2.Lock() // a rank that nests
		c2.Unlock()
		c1.Unlock()
		b.RUnlock()
		a.Unlock()
	}); r != "" {
		t.Errorf("in order, reported %q", r)
	}
}

// TestInversionCaught takes two locks in the wrong order on purpose.
func TestInversionCaught(t *testing.T) {
	var a Mutex[outer]
	var b RWMutex[inner]
	r := catch(t, func() {
		b.Lock()
		a.Lock()
		a.Unlock()
		b.Unlock()
	})
	if !strings.Contains(r, "outer (rank 1) taken while holding inner (rank 2)") {
		t.Errorf("inversion reported as %q", r)
	}
}

func TestSameRankCaught(t *testing.T) {
	var a1, a2 Mutex[outer]
	r := catch(t, func() {
		a1.Lock()
		a2.Lock()
		a2.Unlock()
		a1.Unlock()
	})
	if !strings.Contains(r, "two locks of outer") {
		t.Errorf("reported %q", r)
	}
}

func TestRecursiveReadLockCaught(t *testing.T) {
	var b RWMutex[inner]
	r := catch(t, func() {
		b.RLock()
		b.RLock()
		b.RUnlock()
		b.RUnlock()
	})
	if !strings.Contains(r, "taken twice") {
		t.Errorf("reported %q", r)
	}
}
