package difftest

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// Check names a part of the comparison; a mismatch belongs to one.
type Check string

const (
	CheckOp     Check = "op"     // an op's errno or value
	CheckMtime  Check = "mtime"  // a deterministic modification time
	CheckBefore Check = "before" // the merged tree before the script
	CheckAfter  Check = "after"  // the merged tree after the script
	CheckInode  Check = "inode"  // inode equality classes over the run
	CheckUpper  Check = "upper"  // the upper directories
	// CheckCrossKernel: kernel overlayfs over unionmount's upper does not
	// show unionmount's final tree.
	CheckCrossKernel Check = "cross-kernel"
	// CheckCrossUnion: unionmount over the kernel's upper does not show
	// the kernel's final tree.
	CheckCrossUnion Check = "cross-union"
	// CheckRunner: unionmount hung, crashed or exited uncleanly while the
	// script ran.
	CheckRunner Check = "runner"
	// CheckRemount: a side shows another tree after a remount over its own
	// upper, or keeps inode numbers across it where the kernel does not
	// (or the other way round).
	CheckRemount Check = "remount"
)

// Mismatch is one difference between the kernel and unionmount.
type Mismatch struct {
	Check Check
	Op    int    // index of the op for CheckOp and op-related CheckMtime/CheckInode, else -1
	Kind  Kind   // the op's kind when Op >= 0
	Text  string // readable: what the kernel did, what unionmount did
}

// Key groups mismatches that are one bug for the shrinker: the check and,
// for op mismatches, the op kind.
func (m Mismatch) Key() string {
	if m.Op >= 0 {
		return string(m.Check) + ":" + string(m.Kind)
	}
	return string(m.Check)
}

func (m Mismatch) String() string {
	if m.Op >= 0 {
		return fmt.Sprintf("%s: op %d (%s): %s", m.Check, m.Op, m.Kind, m.Text)
	}
	return fmt.Sprintf("%s: %s", m.Check, m.Text)
}

// mtimeState says whether a path's mtime is the same on both sides.
type mtimeState uint8

const (
	// mtimeKnown: untouched since the stack was built (copy-up keeps
	// times) or set by utimes. The zero value: paths start known.
	mtimeKnown mtimeState = iota
	// mtimeWall: set from the wall clock by a create or write.
	mtimeWall
	// mtimeAlias: a hard link made by the script; writes through the
	// other name move it, so it is never compared.
	mtimeAlias
)

// MtimeTracker follows, op by op, which paths have a deterministic mtime.
// It is driven by the kernel's results (the unionmount side only matters
// when they agree).
type MtimeTracker struct {
	state map[string]mtimeState
}

// NewMtimeTracker starts with every path known.
func NewMtimeTracker() *MtimeTracker { return &MtimeTracker{state: map[string]mtimeState{}} }

// Known reports whether path's mtime is deterministic.
func (m *MtimeTracker) Known(path string) bool { return m.state[path] == mtimeKnown }

func (m *MtimeTracker) set(p string, s mtimeState) {
	if m.state[p] == mtimeAlias {
		return
	}
	m.state[p] = s
}

func under(p, root string) bool { return p == root || strings.HasPrefix(p, root+"/") }

// subtree removes and returns the states of root and below, keyed by the
// path relative to root ("" for root itself).
func (m *MtimeTracker) subtree(root string) map[string]mtimeState {
	out := map[string]mtimeState{}
	for p, s := range m.state {
		if under(p, root) {
			out[strings.TrimPrefix(p, root)] = s
			delete(m.state, p)
		}
	}
	return out
}

func (m *MtimeTracker) put(root string, sub map[string]mtimeState) {
	for rel, s := range sub {
		m.state[root+rel] = s
	}
}

// Step applies op with its (kernel) result.
func (m *MtimeTracker) Step(op Op, r Result) {
	if r.Err != "" {
		return
	}
	res := func(i int, fallback string) string {
		if i < len(r.Resolved) {
			return r.Resolved[i]
		}
		return fallback
	}
	switch op.Kind {
	case OpCreate, OpCreateExcl, OpAppend, OpWriteAt, OpTruncate, OpMkdir, OpMkfifo, OpSymlink, OpReadOld:
		m.set(res(0, op.Path), mtimeWall)
	case OpUtimes:
		m.set(res(0, op.Path), mtimeKnown)
	case OpUnlinkOpen:
		if len(r.Resolved) > 0 { // else not a regular file: nothing happened
			m.subtree(r.Resolved[0])
		}
	case OpUnlink, OpRmdir:
		m.subtree(res(0, op.Path))
	case OpLink:
		m.state[res(0, op.Path)] = mtimeAlias
		m.state[res(1, op.Path2)] = mtimeAlias
	case OpRename:
		from, to := res(0, op.Path), res(1, op.Path2)
		if from == to {
			return
		}
		if m.state[from] == mtimeAlias && m.state[to] == mtimeAlias {
			// Maybe two names of one inode: rename(2) did nothing then.
			m.state[from], m.state[to] = mtimeAlias, mtimeAlias
			return
		}
		a, b := m.subtree(from), m.subtree(to)
		m.put(to, a)
		if op.Flags&unix.RENAME_EXCHANGE != 0 {
			m.put(from, b)
		}
	}
}

// TrackMtimes runs the tracker over a whole script with the kernel's
// results.
func TrackMtimes(ops []Op, kernel []Result) *MtimeTracker {
	m := NewMtimeTracker()
	for i, op := range ops {
		if i < len(kernel) {
			m.Step(op, kernel[i])
		}
	}
	return m
}

// inodeMatch checks that the kernel's and unionmount's inode numbers form
// the same equality classes over a run: every pair of observations (one
// per side of the same thing) must keep a one-to-one correspondence
// between the numbers, so a file keeps its number across copy-up and
// rename exactly when the kernel's does, and two names share a number
// exactly when they do on the kernel. Raw numbers are never compared.
type inodeMatch struct {
	k2u map[DevIno]DevIno
	u2k map[DevIno]DevIno
	// where each number was first seen, for reports.
	kSeen, uSeen map[DevIno]string
}

func newInodeMatch() *inodeMatch {
	return &inodeMatch{k2u: map[DevIno]DevIno{}, u2k: map[DevIno]DevIno{},
		kSeen: map[DevIno]string{}, uSeen: map[DevIno]string{}}
}

// pair records that the kernel showed k and unionmount u for the same
// observation (described by what). It returns "" or the inconsistency.
func (m *inodeMatch) pair(k, u DevIno, what string) string {
	ku, kok := m.k2u[k]
	uk, uok := m.u2k[u]
	var msg string
	switch {
	case kok && ku != u && uok:
		msg = fmt.Sprintf("%s: the kernel's inode is the one of %s, unionmount's the one of %s", what, m.kSeen[k], m.uSeen[u])
	case kok && ku != u:
		msg = fmt.Sprintf("%s: the kernel's inode is the one of %s, unionmount's is new", what, m.kSeen[k])
	case uok && uk != k:
		msg = fmt.Sprintf("%s: unionmount's inode is the one of %s, the kernel's is new", what, m.uSeen[u])
	}
	if !kok {
		m.k2u[k] = u
		m.kSeen[k] = what
	}
	if !uok {
		m.u2k[u] = k
		m.uSeen[u] = what
	}
	return msg
}

func entryIno(e fstest.Entry) DevIno { return DevIno{Dev: e.Dev, Ino: e.Ino} }

// treeFields is what the merged trees are compared on: fstest's defaults
// without mtime, which CompareRuns checks itself where it is deterministic.
var treeFields = []fstest.DiffOption{fstest.IgnoreFields(fstest.FieldMtime)}

// CompareRuns compares the kernel's run k with unionmount's run u of ops:
// op results, deterministic mtimes, the trees before and after, and inode
// equality classes over everything observed. The runs must already be
// normalised for known differences.
func CompareRuns(ops []Op, k, u *Run) []Mismatch {
	var out []Mismatch
	add := func(c Check, op int, format string, args ...any) {
		m := Mismatch{Check: c, Op: op, Text: fmt.Sprintf(format, args...)}
		if op >= 0 {
			m.Kind = ops[op].Kind
		}
		out = append(out, m)
	}
	if len(k.Results) != len(ops) || len(u.Results) != len(ops) {
		add(CheckOp, -1, "runner returned %d (kernel) and %d (unionmount) results for %d ops",
			len(k.Results), len(u.Results), len(ops))
		return out
	}

	// The trees before the script.
	if k.Before != nil && u.Before != nil {
		for _, d := range fstest.Diff(k.Before, u.Before, treeFields...) {
			add(CheckBefore, -1, "%s (kernel != unionmount)", d)
		}
		for _, d := range DiffMtimes(k.Before, u.Before, func(string) bool { return true }) {
			add(CheckMtime, -1, "before the script: %s", d)
		}
	}

	// Every op.
	mt := NewMtimeTracker()
	sameVal := make([]bool, len(ops))
	for i, op := range ops {
		kr, ur := k.Results[i], u.Results[i]
		if kr.Err != ur.Err || kr.Val != ur.Val {
			add(CheckOp, i, "kernel %s; unionmount %s", kr, ur)
		} else {
			sameVal[i] = true
			if op.Kind == OpLstat && kr.Err == "" && len(kr.Resolved) > 0 && mt.Known(kr.Resolved[0]) &&
				!strings.HasPrefix(kr.Val, "dir ") && kr.Mtime != ur.Mtime {
				add(CheckMtime, i, "mtime kernel %s; unionmount %s", nsStamp(kr.Mtime), nsStamp(ur.Mtime))
			}
		}
		mt.Step(op, kr)
	}

	// The trees after the script.
	for _, d := range fstest.Diff(k.After, u.After, treeFields...) {
		add(CheckAfter, -1, "%s (kernel != unionmount)", d)
	}
	for _, d := range DiffMtimes(k.After, u.After, mt.Known) {
		add(CheckMtime, -1, "after the script: %s", d)
	}

	// Inode classes over the whole run.
	im := newInodeMatch()
	compareTree := func(when string, kt, ut fstest.Tree) {
		for _, p := range kt.Paths() {
			ke, ue := kt[p], ut[p]
			if _, ok := ut[p]; !ok || ke.Type == fstest.TypeVanished || ue.Type == fstest.TypeVanished {
				continue
			}
			if msg := im.pair(entryIno(ke), entryIno(ue), fmt.Sprintf("%s %s the script", p, when)); msg != "" {
				add(CheckInode, -1, "%s", msg)
			}
		}
	}
	if k.Before != nil && u.Before != nil {
		compareTree("before", k.Before, u.Before)
	}
	for i, op := range ops {
		kr, ur := k.Results[i], u.Results[i]
		if !sameVal[i] || len(kr.Inos) != len(ur.Inos) {
			continue
		}
		if kr.Pre != nil && ur.Pre != nil {
			if msg := im.pair(*kr.Pre, *ur.Pre, fmt.Sprintf("op %d (%s) before the op", i, op)); msg != "" {
				add(CheckInode, i, "%s", msg)
			}
		} else if (kr.Pre == nil) != (ur.Pre == nil) {
			add(CheckInode, i, "the path existed before the op on one side only (kernel %v, unionmount %v)", kr.Pre != nil, ur.Pre != nil)
		}
		for j := range kr.Inos {
			what := fmt.Sprintf("op %d (%s)", i, op)
			if len(kr.Inos) > 1 {
				what = fmt.Sprintf("op %d (%s) entry %d", i, op, j)
			}
			if msg := im.pair(kr.Inos[j], ur.Inos[j], what); msg != "" {
				add(CheckInode, i, "%s", msg)
			}
		}
	}
	compareTree("after", k.After, u.After)
	return out
}

// DiffMtimes compares the mtimes of non-directories that are in both trees
// and known; whiteouts (char 0/0, only in uppers) are made when the script
// runs and never compared.
func DiffMtimes(want, got fstest.Tree, known func(string) bool) []string {
	var out []string
	for _, p := range want.Paths() {
		w, g := want[p], got[p]
		if _, ok := got[p]; !ok || w.Type != g.Type || w.Type == fstest.TypeDir ||
			w.Type == fstest.TypeVanished || (w.Type == fstest.TypeChar && w.Rdev == 0) || !known(p) {
			continue
		}
		if !w.Mtime.Equal(g.Mtime) {
			out = append(out, fmt.Sprintf("%s: mtime %s != %s", p, stamp(w.Mtime), stamp(g.Mtime)))
		}
	}
	sort.Strings(out)
	return out
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func nsStamp(ns int64) string { return stamp(time.Unix(0, ns)) }
