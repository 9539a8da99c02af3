//go:build lockcheck

package lockrank

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
)

// Enabled reports whether this build checks the lock order.
const Enabled = true

type held struct {
	r    Ranker
	lock any
}

var (
	mu sync.Mutex
	// heldBy is what each goroutine holds, in the order taken. Guarded by
	// mu.
	heldBy = map[int64][]held{}
)

// goid is the calling goroutine's id, from its stack header.
func goid() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseInt(string(b), 10, 64)
	return id
}

func acquire(r Ranker, lock any) {
	g := goid()
	mu.Lock()
	var report string
	for _, h := range heldBy[g] {
		switch {
		case h.lock == lock:
			report = fmt.Sprintf("%s taken twice by one goroutine", r.Name())
		case h.r.Rank() > r.Rank():
			report = fmt.Sprintf("%s (rank %d) taken while holding %s (rank %d)", r.Name(), r.Rank(), h.r.Name(), h.r.Rank())
		case h.r.Rank() == r.Rank() && !r.Nests():
			report = fmt.Sprintf("two locks of %s (rank %d) held at once", r.Name(), r.Rank())
		}
		if report != "" {
			break
		}
	}
	if report == "" {
		heldBy[g] = append(heldBy[g], held{r, lock})
	}
	mu.Unlock()
	if report != "" {
		OnInversion(report)
	}
}

func release(lock any) {
	g := goid()
	mu.Lock()
	defer mu.Unlock()
	hs := heldBy[g]
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].lock == lock {
			hs = append(hs[:i], hs[i+1:]...)
			break
		}
	}
	if len(hs) == 0 {
		delete(heldBy, g)
	} else {
		heldBy[g] = hs
	}
}
