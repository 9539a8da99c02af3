package difftest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// Names is the name space of the layers, parents first. Every directory
// level reuses the same few names so that layers and ops collide.
var Names = []string{"a", "b", "c", "d", "d/x", "d/y", "d/z", "e", "e/f", "e/f/g", "e/f/h"}

// opNames are the paths ops pick from: Names and a few that only exist once
// a script made their parent a directory.
var opNames = append(append([]string(nil), Names...), "b/x", "c/y", "d/x/q")

// ItemKind is what a layer holds at a path.
type ItemKind string

const (
	ItemDir      ItemKind = "dir"
	ItemFile     ItemKind = "file"
	ItemSymlink  ItemKind = "symlink"
	ItemLink     ItemKind = "link" // hard link to the file Target of the same layer
	ItemFIFO     ItemKind = "fifo"
	ItemWhiteout ItemKind = "whiteout" // char 0/0
)

// Item is one path of one layer.
type Item struct {
	Path   string
	Kind   ItemKind
	Mode   uint32 // 07777 bits
	UID    int
	GID    int
	Data   string            // ItemFile
	Target string            // ItemSymlink: link target; ItemLink: linked path
	Opaque bool              // ItemDir: trusted.overlay.opaque=y
	Xattrs map[string]string // user.* and trusted.* (not overlay) xattrs
	Mtime  int64             // seconds; 0 for links and whiteouts
}

func (it Item) String() string {
	s := fmt.Sprintf("%s %s", it.Path, it.Kind)
	switch it.Kind {
	case ItemWhiteout:
		return s
	case ItemLink:
		return s + " -> " + it.Target
	case ItemSymlink:
		s += fmt.Sprintf(" -> %q", it.Target)
	case ItemFile:
		s += fmt.Sprintf(" %q", it.Data)
	}
	s += fmt.Sprintf(" %04o %d:%d", it.Mode, it.UID, it.GID)
	if it.Opaque {
		s += " opaque"
	}
	for _, k := range sortedKeys(it.Xattrs) {
		s += fmt.Sprintf(" %s=%q", k, it.Xattrs[k])
	}
	return s
}

// Layer is one generated layer, parents first.
type Layer struct {
	Items []Item
}

// Stack is a generated layer stack: lowers topmost first, and the initial
// content of the upper.
type Stack struct {
	Lowers []Layer
	Upper  Layer
}

// String lists the layers, for reports.
func (s Stack) String() string {
	var b strings.Builder
	for i, l := range s.Lowers {
		fmt.Fprintf(&b, "  lower %d (%s):\n", i, map[bool]string{true: "top", false: "below"}[i == 0])
		for _, it := range l.Items {
			b.WriteString("    " + it.String() + "\n")
		}
	}
	b.WriteString("  upper:\n")
	for _, it := range s.Upper.Items {
		b.WriteString("    " + it.String() + "\n")
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// baseTime is the epoch of generated mtimes.
const baseTime = 1600000000

// GenStack generates a stack of 2 or 3 lowers and an initial upper (empty
// for half of the seeds) from seed.
func GenStack(seed uint64) Stack {
	r := rand.New(rand.NewPCG(seed, 1))
	n := 2 + r.IntN(2)
	var s Stack
	bottomFirst := make([]Layer, n)
	for i := range n {
		bottomFirst[i] = genLayer(r, i == 0, false)
	}
	for i := n - 1; i >= 0; i-- {
		s.Lowers = append(s.Lowers, bottomFirst[i])
	}
	if r.IntN(2) == 0 {
		s.Upper = genLayer(r, false, true)
		s.Upper.Items = slices.DeleteFunc(s.Upper.Items, func(it Item) bool {
			return it.Kind == ItemWhiteout && len(s.mergedDir(path.Dir(it.Path))) < 2
		})
	}
	return s
}

// mergedDir returns the layers (0 the upper, 1.. the lowers) merged into
// the directory p of the union, by the overlayfs rules, or nil when p is
// not a directory there.
//
// The generator keeps whiteouts out of upper directories that merge with
// nothing: the kernel never makes those, and treats them in ways that
// are not worth copying (it lists them in readdir, and its rmdir of such
// a directory fails with ENOTEMPTY).
func (s Stack) mergedDir(p string) []int {
	layers := append([]Layer{s.Upper}, s.Lowers...)
	byPath := make([]map[string]Item, len(layers))
	for i, l := range layers {
		byPath[i] = map[string]Item{}
		for _, it := range l.Items {
			byPath[i][it.Path] = it
		}
	}
	cur := make([]int, len(layers))
	for i := range cur {
		cur[i] = i
	}
	if p == "." {
		return cur
	}
	prefix := ""
	for _, name := range strings.Split(p, "/") {
		prefix = path.Join(prefix, name)
		var next []int
	layers:
		for _, li := range cur {
			it, ok := byPath[li][prefix]
			switch {
			case !ok:
				continue
			case it.Kind == ItemWhiteout, it.Kind != ItemDir && len(next) > 0:
				break layers
			case it.Kind != ItemDir:
				return nil
			}
			next = append(next, li)
			if it.Opaque {
				break
			}
		}
		if len(next) == 0 {
			return nil
		}
		cur = next
	}
	return cur
}

func genLayer(r *rand.Rand, bottom, upper bool) Layer {
	var l Layer
	kinds := map[string]ItemKind{".": ItemDir}
	var files []string
	for _, p := range Names {
		if kinds[path.Dir(p)] != ItemDir {
			continue
		}
		x := r.IntN(100)
		if upper {
			x = x*2 - 100 // the upper starts thin: about half absent
		}
		it := Item{Path: p, UID: pick(r, 0, 0, 1000), GID: pick(r, 0, 0, 2000), Mtime: baseTime + r.Int64N(1e6)}
		switch {
		case x < 30:
			continue
		case x < 50:
			it.Kind = ItemFile
			it.Mode = pick[uint32](r, 0o644, 0o644, 0o600, 0o755, 0o4755, 0o444)
			it.Data = randData(r)
			files = append(files, p)
		case x < 70:
			it.Kind = ItemDir
			it.Mode = pick[uint32](r, 0o755, 0o755, 0o700, 0o1777, 0o2755)
			it.Opaque = !bottom && r.IntN(5) == 0
		case x < 77:
			it.Kind = ItemSymlink
			it.Mode = 0o777
			it.Target = symlinkTarget(r, p)
		case x < 83 && len(files) > 0 && !upper:
			it = Item{Path: p, Kind: ItemLink, Target: files[r.IntN(len(files))]}
		case x < 86:
			it.Kind = ItemFIFO
			it.Mode = pick[uint32](r, 0o644, 0o600)
		case !bottom || r.IntN(4) == 0:
			it = Item{Path: p, Kind: ItemWhiteout}
		default:
			continue
		}
		if (it.Kind == ItemFile || it.Kind == ItemDir) && r.IntN(4) == 0 {
			it.Xattrs = map[string]string{pick(r, "user.a", "user.b", "trusted.t"): randData(r)}
		}
		kinds[p] = it.Kind
		l.Items = append(l.Items, it)
	}
	return l
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func randData(r *rand.Rand) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, r.IntN(12))
	for i := range b {
		b[i] = letters[r.IntN(len(letters))]
	}
	return string(b)
}

// symlinkTarget points a symlink at p to another name of the tree (relative
// or absolute: the runner chroots into the mount) or to nothing.
func symlinkTarget(r *rand.Rand, p string) string {
	switch r.IntN(8) {
	case 0:
		return "nowhere"
	case 1:
		return "/" + pick(r, Names...)
	}
	up := strings.Repeat("../", strings.Count(p, "/"))
	return up + pick(r, Names...)
}

// Build creates the stack under dir: lower0 (topmost), lower1, ..., upper
// and work. It returns the lowers topmost first.
func (s Stack) Build(dir string) (lowers []string, upper, work string, err error) {
	for i, l := range s.Lowers {
		p := filepath.Join(dir, fmt.Sprintf("lower%d", i))
		if err := buildLayer(p, l); err != nil {
			return nil, "", "", err
		}
		lowers = append(lowers, p)
	}
	upper, work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	if err := buildLayer(upper, s.Upper); err != nil {
		return nil, "", "", err
	}
	if err := os.Mkdir(work, 0o755); err != nil {
		return nil, "", "", fmt.Errorf("build stack: %w", err)
	}
	return lowers, upper, work, nil
}

func buildLayer(root string, l Layer) error {
	if err := os.Mkdir(root, 0o755); err != nil {
		return fmt.Errorf("build layer: %w", err)
	}
	var a []fstest.Applier
	for _, it := range l.Items {
		switch it.Kind {
		case ItemDir:
			a = append(a, fstest.CreateDir(it.Path, 0o700))
			if it.Opaque {
				a = append(a, fstest.Opaque(it.Path))
			}
		case ItemFile:
			a = append(a, fstest.CreateFile(it.Path, []byte(it.Data), 0o600))
		case ItemSymlink:
			a = append(a, fstest.Symlink(it.Target, it.Path))
		case ItemLink:
			a = append(a, fstest.Link(it.Target, it.Path))
		case ItemFIFO:
			a = append(a, fstest.Mkfifo(it.Path, 0o600))
		case ItemWhiteout:
			a = append(a, fstest.Whiteout(it.Path))
		}
		if it.Kind == ItemLink || it.Kind == ItemWhiteout {
			continue
		}
		for _, k := range sortedKeys(it.Xattrs) {
			a = append(a, fstest.SetXattr(it.Path, k, []byte(it.Xattrs[k])))
		}
		a = append(a, fstest.Chown(it.Path, it.UID, it.GID))
		if it.Kind != ItemSymlink {
			a = append(a, fstest.Chmod(it.Path, os.FileMode(it.Mode)))
		}
	}
	// Times last, deepest first: adding an entry moves a directory's mtime.
	for i := len(l.Items) - 1; i >= 0; i-- {
		it := l.Items[i]
		if it.Mtime != 0 {
			t := time.Unix(it.Mtime, 7)
			a = append(a, fstest.Chtimes(it.Path, t, t))
		}
	}
	if err := fstest.Apply(root, a...); err != nil {
		return fmt.Errorf("build layer %s: %w", root, err)
	}
	return nil
}

// GenScript generates steps random ops from seed.
func GenScript(seed uint64, steps int) []Op {
	r := rand.New(rand.NewPCG(seed, 2))
	ops := make([]Op, 0, steps)
	for range steps {
		ops = append(ops, genOp(r))
	}
	return ops
}

type weighted struct {
	kind   Kind
	weight int
}

var opWeights = []weighted{
	{OpCreate, 10}, {OpCreateExcl, 3}, {OpAppend, 6}, {OpWriteAt, 4}, {OpTruncate, 4},
	{OpOpenW, 5}, {OpChmod, 4}, {OpChown, 3}, {OpUtimes, 4}, {OpSetxattr, 4}, {OpRemovexattr, 3},
	{OpMkdir, 8}, {OpRmdir, 5}, {OpUnlink, 8}, {OpRename, 12}, {OpLink, 4}, {OpSymlink, 4}, {OpMkfifo, 2},
	{OpReaddir, 6}, {OpLstat, 6}, {OpStat, 3}, {OpReadlink, 2}, {OpRead, 5}, {OpListxattr, 3}, {OpGetxattr, 2},
	{OpReadOld, 3}, {OpUnlinkOpen, 2},
}

var totalWeight = func() int {
	n := 0
	for _, w := range opWeights {
		n += w.weight
	}
	return n
}()

// xattrNames: user.* and trusted.* ones, and overlay names that both must
// escape instead of taking them as markers.
var xattrNames = []string{"user.a", "user.a", "user.b", "user.b", "trusted.t", "trusted.overlay.opaque", "user.overlay.opaque"}

func genOp(r *rand.Rand) Op {
	x := r.IntN(totalWeight)
	var k Kind
	for _, w := range opWeights {
		if x < w.weight {
			k = w.kind
			break
		}
		x -= w.weight
	}
	op := Op{Kind: k, Path: pick(r, opNames...)}
	switch k {
	case OpCreate, OpCreateExcl:
		op.Mode = pick[uint32](r, 0o644, 0o600, 0o755)
		op.Data = randData(r)
	case OpAppend, OpReadOld:
		op.Data = randData(r)
	case OpWriteAt:
		op.Off = r.Int64N(8)
		op.Data = randData(r)
	case OpTruncate:
		op.Off = pick[int64](r, 0, 0, 1, 3, 100)
	case OpChmod:
		op.Mode = pick[uint32](r, 0o644, 0o600, 0o755, 0o700, 0o4755, 0o1777, 0o2750)
	case OpChown:
		op.UID, op.GID = pick(r, 0, 1000, 3000, -1), pick(r, 0, 2000, 3000, -1)
		op.NoFollow = r.IntN(2) == 0
	case OpUtimes:
		op.Sec = baseTime + 2e6 + r.Int64N(1e6)
		op.NoFollow = r.IntN(2) == 0
	case OpSetxattr:
		op.Name = pick(r, xattrNames...)
		// Never "y" or "x": a user's value must not read as an opaque marker.
		op.Data = "v" + randData(r)
		op.Flags = pick[uint32](r, 0, 0, unix.XATTR_CREATE, unix.XATTR_REPLACE)
	case OpRemovexattr, OpGetxattr:
		op.Name = pick(r, xattrNames...)
	case OpMkdir:
		op.Mode = pick[uint32](r, 0o755, 0o700, 0o1777)
	case OpMkfifo:
		op.Mode = 0o644
	case OpRename:
		op.Path2 = pick(r, opNames...)
		op.Flags = pick[uint32](r, 0, 0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE)
	case OpLink:
		op.Path2 = pick(r, opNames...)
	case OpSymlink:
		op.Target = symlinkTarget(r, op.Path)
	}
	return op
}
