// Package lockrank gives mutexes a rank so that taking them out of order
// is caught, as gVisor's lock checker does: a goroutine may take a lock
// only while every lock it holds has a lower rank (or the same rank, for
// ranks that allow it). Built with -tags lockcheck, every Lock checks the
// locks its goroutine holds and stops the process on an inversion,
// naming both locks; without the tag the check compiles to nothing and a
// Mutex is a sync.Mutex.
//
// A rank is a type: Mutex[R] takes R's Rank() and Name(), so the order is
// written once, beside the declarations (see unionfs/locks.go).
package lockrank

import (
	"fmt"
	"os"
	"runtime"
	"sync"
)

// OnInversion is called with a report when a lock is taken out of order
// (only with -tags lockcheck). The default prints it with the stack and
// exits with status 70, which fails the test that mounted the daemon;
// tests of this package replace it.
var OnInversion = func(report string) {
	buf := make([]byte, 64<<10)
	fmt.Fprintf(os.Stderr, "lockrank: %s\n%s\n", report, buf[:runtime.Stack(buf, false)])
	os.Exit(70)
}

// Ranker names a rank: a lower rank is taken first (outer).
type Ranker interface {
	// Rank orders the lock: it may be taken while holding locks of lower
	// rank only.
	Rank() int
	// Name names the lock in reports.
	Name() string
	// Nests reports whether two locks of this rank may be held at once
	// (one copy-up lock per node, taken from a node towards the root).
	Nests() bool
}

// Mutex is a sync.Mutex of rank R.
type Mutex[R Ranker] struct {
	mu sync.Mutex
}

func (m *Mutex[R]) Lock() {
	var r R
	acquire(r, m)
	m.mu.Lock()
}

func (m *Mutex[R]) Unlock() {
	m.mu.Unlock()
	release(m)
}

// RWMutex is a sync.RWMutex of rank R.
type RWMutex[R Ranker] struct {
	mu sync.RWMutex
}

func (m *RWMutex[R]) Lock() {
	var r R
	acquire(r, m)
	m.mu.Lock()
}

func (m *RWMutex[R]) Unlock() {
	m.mu.Unlock()
	release(m)
}

// RLock takes the lock for reading. Taking it twice in one goroutine is
// an error too (a writer waiting in between deadlocks it).
func (m *RWMutex[R]) RLock() {
	var r R
	acquire(r, m)
	m.mu.RLock()
}

func (m *RWMutex[R]) RUnlock() {
	m.mu.RUnlock()
	release(m)
}
