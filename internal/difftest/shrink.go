package difftest

// Shrink reduces ops to a smaller script for which fails still returns
// true, by delta debugging (Zeller's ddmin, complements only): drop chunks
// of halves, quarters, ... down to single ops, keeping every removal after
// which the script still fails. fails is called at most budget times;
// Shrink returns the smallest failing script found and the number of
// calls made. ops itself must fail.
func Shrink(ops []Op, fails func([]Op) bool, budget int) ([]Op, int) {
	calls := 0
	try := func(cand []Op) bool {
		if calls >= budget {
			return false
		}
		calls++
		return fails(cand)
	}
	cur := append([]Op(nil), ops...)
	n := 2
	for len(cur) >= 2 && calls < budget {
		chunk := (len(cur) + n - 1) / n
		reduced := false
		for start := 0; start < len(cur); start += chunk {
			end := min(start+chunk, len(cur))
			cand := append(append([]Op(nil), cur[:start]...), cur[end:]...)
			if try(cand) {
				cur = cand
				n = max(n-1, 2)
				reduced = true
				break
			}
		}
		if reduced {
			continue
		}
		if chunk == 1 {
			break
		}
		n = min(2*n, len(cur))
	}
	if len(cur) == 1 && try(nil) {
		cur = nil
	}
	return cur, calls
}
