package bench

import (
	"slices"
	"strings"
	"testing"
)

// TestInterleave checks the run order of the drivers: every repetition
// runs each driver once, the start rotates by one each repetition, and
// over as many repetitions as drivers each driver holds each position
// once, so that drift on the machine hits all of them alike.
func TestInterleave(t *testing.T) {
	drivers := []string{"A", "B", "C"}
	want := []string{"ABC", "BCA", "CAB", "ABC"}
	for rep, w := range want {
		if got := strings.Join(interleave(drivers, rep), ""); got != w {
			t.Errorf("repetition %d: order %s, want %s", rep, got, w)
		}
	}
	for _, n := range []int{1, 2, 5, 6} {
		ds := make([]int, n)
		for i := range ds {
			ds[i] = i
		}
		seen := make([]map[int]bool, n) // seen[position][driver]
		for i := range seen {
			seen[i] = map[int]bool{}
		}
		for rep := range n {
			order := interleave(ds, rep)
			sorted := slices.Sorted(slices.Values(order))
			if !slices.Equal(sorted, ds) {
				t.Fatalf("%d drivers, repetition %d: order %v is not each driver once", n, rep, order)
			}
			for pos, d := range order {
				seen[pos][d] = true
			}
		}
		for pos, s := range seen {
			if len(s) != n {
				t.Errorf("%d drivers over %d repetitions: position %d held only %d drivers", n, n, pos, len(s))
			}
		}
	}
	if got := interleave([]string{}, 3); len(got) != 0 {
		t.Errorf("no drivers: order %v", got)
	}
	if got := strings.Join(interleave(drivers, 0), ""); strings.Join(drivers, "") != "ABC" || got != "ABC" {
		t.Errorf("interleave changed its input or first order: %v, %s", drivers, got)
	}
}
