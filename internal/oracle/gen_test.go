package oracle

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
)

// kind is what a layer holds at a path.
type kind uint8

const (
	kDir kind = iota
	kFile
	kSparse
	kSymlink
	kLink // hard link to the regular file item.target of the same layer
	kFIFO
	kChar
	kBlock
	kWhiteout // hides the path in the layers below, in the dialect's form
)

func (k kind) String() string {
	return [...]string{"dir", "file", "sparse", "symlink", "link", "fifo", "char", "block", "whiteout"}[k]
}

// item is one path of one layer, in no dialect yet.
type item struct {
	path         string
	kind         kind
	mode         uint32 // 07777 bits
	uid, gid     int
	content      []byte           // kFile
	size         int64            // kSparse
	data         map[int64][]byte // kSparse
	target       string           // kSymlink: link target; kLink: path of the linked file
	major, minor uint32           // kChar, kBlock
	opaque       bool             // kDir: hides the layers below
	xattrs       map[string]string
	mtime        time.Time
}

// layer is one generated layer: its root and its items, parents first.
type layer struct {
	root     *item
	items    []*item
	byPath   map[string]*item
	children map[string][]string // dir path -> child names
}

func newLayer(root *item) *layer {
	return &layer{root: root, byPath: map[string]*item{".": root}, children: map[string][]string{}}
}

func (l *layer) add(it *item) {
	l.items = append(l.items, it)
	l.byPath[it.path] = it
	d := path.Dir(it.path)
	l.children[d] = append(l.children[d], path.Base(it.path))
}

// inode returns the item holding the inode of it (the linked file of a
// kLink), and the number of names that inode has in the layer.
func (l *layer) inode(it *item) (*item, int) {
	if it.kind == kLink {
		it = l.byPath[it.target]
	}
	n := 1
	for _, x := range l.items {
		if x.kind == kLink && x.target == it.path {
			n++
		}
	}
	return it, n
}

// merged is one path of the merged view.
type merged struct {
	item         *item
	layer        int   // index of the item's layer, topmost first
	contributors []int // for a dir: the layers merged into it, topmost first
}

// mergeLayers computes the merged view of layers (topmost first) by the
// overlayfs rules: the topmost entry wins; a whiteout hides the name and
// a non-dir hides everything below; directories merge down to the first
// opaque one, and a whiteout or non-dir below a dir ends the merge.
func mergeLayers(ls []*layer) map[string]*merged {
	all := make([]int, len(ls))
	for i := range ls {
		all[i] = i
	}
	out := map[string]*merged{".": {item: ls[0].root, layer: 0, contributors: all}}
	var walk func(dir string, contrib []int)
	walk = func(dir string, contrib []int) {
		names := map[string]bool{}
		for _, li := range contrib {
			for _, n := range ls[li].children[dir] {
				names[n] = true
			}
		}
		for _, name := range sortedKeys(names) {
			p := path.Join(dir, name)
			var m *merged
			for _, li := range contrib {
				it := ls[li].byPath[p]
				if it == nil {
					continue
				}
				if m == nil {
					if it.kind == kWhiteout {
						break
					}
					m = &merged{item: it, layer: li}
					if it.kind != kDir {
						break
					}
				} else if it.kind != kDir {
					break
				}
				m.contributors = append(m.contributors, li)
				if it.opaque {
					break
				}
			}
			if m == nil {
				continue
			}
			out[p] = m
			if m.item.kind == kDir {
				walk(p, m.contributors)
			}
		}
	}
	walk(".", all)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// genConfig shapes a generated stack.
type genConfig struct {
	layers int
	ops    int // operations per layer
	// names is the shared name space of every directory level.
	names    []string
	maxDepth int
	// specials allows FIFOs, device nodes and sparse files.
	specials bool
	// whiteouts and opaques are the percentages of operations that delete
	// a path or add an opaque dir (both at depth 1..4).
	whiteouts, opaques int
}

// defaultNames overlap across layers and include a space, a newline and a
// colon.
var defaultNames = []string{"a", "b", "c", "d", "e", "f g", "n\nl", "x:y"}

// configFor gives stacks of n layers about the same total size.
func configFor(n int) genConfig {
	ops := 1200 / n
	if ops < 30 {
		ops = 30
	}
	if ops > 300 {
		ops = 300
	}
	cfg := genConfig{layers: n, ops: ops, names: defaultNames, maxDepth: 5, specials: true, whiteouts: 18, opaques: 10}
	if n > 16 {
		// Deep stacks keep a tree worth comparing only if each layer
		// destroys less.
		cfg.whiteouts, cfg.opaques = 7, 2
	}
	return cfg
}

type gen struct {
	r   *rand.Rand
	cfg genConfig
	t0  time.Time
	// layers so far, bottom first while generating.
	layers []*layer
}

// generate builds a stack from seed; the result is topmost first.
func generate(seed uint64, cfg genConfig) []*layer {
	g := &gen{r: rand.New(rand.NewPCG(seed, 0x5eed)), cfg: cfg, t0: time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)}
	for range cfg.layers {
		g.layers = append(g.layers, g.layer())
	}
	return reversed(g.layers)
}

func reversed(ls []*layer) []*layer {
	out := make([]*layer, len(ls))
	for i, l := range ls {
		out[len(ls)-1-i] = l
	}
	return out
}

func (g *gen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) mtime() time.Time {
	return g.t0.Add(time.Duration(g.r.IntN(1e6))*time.Second + time.Duration(g.r.IntN(1e9)))
}

func (g *gen) owner() (int, int) {
	ids := []int{0, 0, 0, 1, 1000, 65534}
	return ids[g.r.IntN(len(ids))], ids[g.r.IntN(len(ids))]
}

func (g *gen) newItem(p string, k kind, modes []uint32) *item {
	it := &item{path: p, kind: k, mode: modes[g.r.IntN(len(modes))], mtime: g.mtime()}
	it.uid, it.gid = g.owner()
	return it
}

var (
	dirModes  = []uint32{0o755, 0o755, 0o700, 0o1777, 0o2775, 0o555}
	fileModes = []uint32{0o644, 0o644, 0o600, 0o755, 0o4755, 0o2755, 0o6711, 0o444, 0o000}
	nodeModes = []uint32{0o644, 0o600, 0o660, 0o666}
)

// randomPath is a path of depth 1..maxDepth in the shared name space.
func (g *gen) randomPath(maxDepth int) string {
	return g.pathOfDepth(1 + g.r.IntN(maxDepth))
}

// pathOfDepth is a path of d components in the shared name space.
func (g *gen) pathOfDepth(d int) string {
	parts := make([]string, d)
	for i := range parts {
		parts[i] = g.pick(g.cfg.names)
	}
	return strings.Join(parts, "/")
}

func (g *gen) layer() *layer {
	root := g.newItem(".", kDir, []uint32{0o755, 0o755, 0o700, 0o1777})
	if g.r.IntN(4) == 0 {
		root.xattrs = map[string]string{"user.root": fmt.Sprint(len(g.layers))}
	}
	l := newLayer(root)
	var visible []string // merged paths below this layer
	below := map[string]*merged{}
	if len(g.layers) > 0 {
		below = mergeLayers(reversed(g.layers))
		for p := range below {
			if p != "." {
				visible = append(visible, p)
			}
		}
		sort.Strings(visible)
	}
	// The top four layers each plant an opaque dir, at depths 4 (lowest of
	// them) to 1 (topmost), over a visible dir of that depth if there is one.
	if d := g.cfg.layers - len(g.layers); d <= 4 && len(g.layers) > 0 {
		var dirs []string
		for _, p := range visible {
			if depth(p) == d && below[p].item.kind == kDir {
				dirs = append(dirs, p)
			}
		}
		p := g.pathOfDepth(d)
		if len(dirs) > 0 {
			p = g.pick(dirs)
		}
		if g.parents(l, p) {
			it := g.newItem(p, kDir, dirModes)
			it.opaque = true
			l.add(it)
		}
	}
	for range g.cfg.ops {
		g.op(l, visible, below)
	}
	return l
}

// op adds one random item to l, at a path visible below (mostly) or a new
// one. Paths already used in l are left alone.
func (g *gen) op(l *layer, visible []string, below map[string]*merged) {
	// x picks the operation: [0, w) whiteout, [w, w+o) opaque dir, then the
	// rest scaled over [30, 100).
	w, o := g.cfg.whiteouts, g.cfg.opaques
	x := g.r.IntN(100)
	destroy := x < w+o
	switch {
	case x < w:
		x = 0
	case x < w+o:
		x = 20
	default:
		x = 30 + (x-w-o)*70/(100-w-o)
	}
	var p string
	if len(visible) > 0 && g.r.IntN(10) < 6 {
		p = g.pick(visible)
		if destroy && g.cfg.layers > 16 {
			// Deep stacks: prefer deep victims, or a few layers wipe
			// the tree out.
			for range 2 {
				if q := g.pick(visible); depth(q) > depth(p) {
					p = q
				}
			}
		}
		if !destroy && g.cfg.layers > 16 && below[p].item.kind == kDir && x >= 45 && g.r.IntN(5) > 0 {
			// Deep stacks: mostly add into a dir rather than replace it.
			p += "/" + g.pick(g.cfg.names)
		}
	} else if destroy {
		p = g.randomPath(4) // whiteouts and opaque dirs: depths 1..4
	} else {
		p = g.randomPath(g.cfg.maxDepth)
	}
	if l.byPath[p] != nil {
		return
	}
	switch {
	case x < 18:
		// A whiteout directly in an opaque dir of the same layer would hide
		// nothing, and in the xattr dialect opaque=y and opaque=x clash.
		if par := l.byPath[path.Dir(p)]; par != nil && par.opaque {
			return
		}
		if g.parents(l, p) {
			l.add(&item{path: p, kind: kWhiteout})
		}
	case x < 30:
		if g.parents(l, p) {
			it := g.newItem(p, kDir, dirModes)
			it.opaque = true
			g.xattrs(it)
			l.add(it)
		}
	case x < 45:
		if g.parents(l, p) {
			it := g.newItem(p, kDir, dirModes)
			g.xattrs(it)
			l.add(it)
		}
	case x < 68:
		if g.parents(l, p) {
			it := g.newItem(p, kFile, fileModes)
			it.content = g.content()
			g.xattrs(it)
			l.add(it)
		}
	case x < 76:
		if g.parents(l, p) {
			it := g.newItem(p, kSymlink, []uint32{0o777})
			it.target = g.symlinkTarget()
			g.xattrs(it)
			l.add(it)
		}
	case x < 82:
		var files []string
		for _, it := range l.items {
			if it.kind == kFile {
				files = append(files, it.path)
			}
		}
		if len(files) > 0 && g.parents(l, p) {
			l.add(&item{path: p, kind: kLink, target: g.pick(files)})
		}
	case !g.cfg.specials:
		return
	case x < 85:
		if g.parents(l, p) {
			it := g.newItem(p, kFIFO, nodeModes)
			g.xattrs(it)
			l.add(it)
		}
	case x < 88:
		if g.parents(l, p) {
			it := g.newItem(p, kChar, nodeModes)
			it.major, it.minor = 1+uint32(g.r.IntN(10)), uint32(g.r.IntN(256)) // never 0/0
			g.xattrs(it)
			l.add(it)
		}
	case x < 91:
		if g.parents(l, p) {
			it := g.newItem(p, kBlock, nodeModes)
			it.major, it.minor = 7+uint32(g.r.IntN(2)), uint32(g.r.IntN(64))
			g.xattrs(it)
			l.add(it)
		}
	default:
		if g.parents(l, p) {
			it := g.newItem(p, kSparse, fileModes[:4])
			it.size = int64(1+g.r.IntN(8)) << 17 // up to 1 MiB: every snapshot hashes it
			it.data = map[int64][]byte{}
			for range 1 + g.r.IntN(3) {
				off := int64(g.r.IntN(int(it.size>>12))) << 12
				it.data[off] = []byte(fmt.Sprintf("data at %d\n", off))
			}
			l.add(it)
		}
	}
}

// coverage counts, in the merged view m of ls, the situations the generator
// is meant to produce, so that a test can show it produced them.
func coverage(ls []*layer, m map[string]*merged) map[string]int {
	c := map[string]int{}
	for p, e := range m {
		if p == "." {
			continue
		}
		c["visible "+e.item.kind.String()]++
		if e.item.kind == kDir && ls[e.contributors[len(e.contributors)-1]].byPath[p].opaque {
			c[fmt.Sprintf("opaque dir at depth %d", depth(p))]++
		}
		// What the winning entry hides in the layers below it.
		for li := e.layer + 1; li < len(ls); li++ {
			below := ls[li].byPath[p]
			if below == nil {
				continue
			}
			switch {
			case below.kind == kWhiteout:
				c["re-created above a whiteout"]++
			case e.item.kind == kDir && below.kind != kDir:
				c["non-dir replaced by a dir"]++
			case e.item.kind != kDir && below.kind == kDir:
				c["dir replaced by a non-dir"]++
			}
			break
		}
	}
	// Deletions: whiteouts in a visible dir that hide something below.
	for li, l := range ls {
		for _, it := range l.items {
			if it.kind != kWhiteout {
				continue
			}
			parent := m[path.Dir(it.path)]
			if parent == nil || !slices.Contains(parent.contributors, li) {
				continue
			}
			for lj := li + 1; lj < len(ls); lj++ {
				if below := ls[lj].byPath[it.path]; below != nil && below.kind != kWhiteout {
					if below.kind == kDir {
						c["dir deleted"]++
					} else {
						c["non-dir deleted"]++
					}
					break
				}
			}
		}
	}
	return c
}

// parents makes sure every ancestor of p is a directory in l, adding plain
// (non-opaque) directories where l has none; false if l has a non-dir there.
func (g *gen) parents(l *layer, p string) bool {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		a := strings.Join(parts[:i], "/")
		if it := l.byPath[a]; it != nil {
			if it.kind != kDir {
				return false
			}
			continue
		}
		l.add(g.newItem(a, kDir, dirModes))
	}
	return true
}

func (g *gen) content() []byte {
	switch g.r.IntN(10) {
	case 0:
		return nil
	case 1:
		return []byte("shared content\n")
	case 2:
		b := make([]byte, 4096+g.r.IntN(64<<10))
		for i := range b {
			b[i] = byte(g.r.Uint32())
		}
		return b
	default:
		return []byte(fmt.Sprintf("%x\n", g.r.Uint64()))
	}
}

func (g *gen) symlinkTarget() string {
	switch g.r.IntN(5) {
	case 0:
		return "../" + g.pick(g.cfg.names)
	case 1:
		return g.pick(g.cfg.names)
	case 2:
		return "/" + g.randomPath(3) // absolute: points outside the mount
	case 3:
		return "nowhere/" + g.pick(g.cfg.names) // dangling
	default:
		return "/etc/passwd"
	}
}

// xattrs gives it some xattrs: user.* only on regular files and dirs (the
// kernel refuses them elsewhere), trusted.* anywhere, and rarely an
// overlay-looking name that no union may show.
func (g *gen) xattrs(it *item) {
	set := func(k, v string) {
		if it.xattrs == nil {
			it.xattrs = map[string]string{}
		}
		it.xattrs[k] = v
	}
	userOK := it.kind == kFile || it.kind == kDir
	if userOK && g.r.IntN(4) == 0 {
		set("user.k", fmt.Sprintf("%x", g.r.Uint32()))
	}
	if g.r.IntN(7) == 0 {
		set("trusted.t", fmt.Sprintf("%x", g.r.Uint32()))
	}
	if it.kind == kFile && g.r.IntN(25) == 0 {
		set("trusted.overlay.fake", "1")
	}
}

// dialect is how whiteouts and opaque dirs are written on disk.
type dialect struct {
	name     string
	whiteout func(path string) fstest.Applier
	opaque   func(dir string) fstest.Applier
	// root is applied to every layer root (AUFS metadata dirs).
	root []fstest.Applier
	// kernelOpts are the options the kernel needs to read the dialect
	// (AUFS and fuse-overlayfs it cannot read at all).
	kernelOpts []string
}

var (
	dialectChar  = dialect{name: "chardev", whiteout: fstest.Whiteout, opaque: fstest.Opaque}
	dialectXattr = dialect{name: "xattr", whiteout: fstest.XattrWhiteout, opaque: fstest.Opaque}
	dialectUser  = dialect{name: "user", whiteout: fstest.Whiteout, opaque: fstest.UserOpaque,
		kernelOpts: []string{"userxattr"}}
	dialectUserXattr = dialect{name: "userxattr", whiteout: fstest.UserXattrWhiteout, opaque: fstest.UserOpaque,
		kernelOpts: []string{"userxattr"}}
	dialectAUFS = dialect{name: "aufs", whiteout: fstest.AUFSWhiteout, opaque: fstest.AUFSOpaque,
		root: []fstest.Applier{
			fstest.AUFSMeta(".", fstest.AUFSPlink), fstest.AUFSMeta(".", fstest.AUFSAufs), fstest.AUFSMeta(".", fstest.AUFSOrph),
		}}
	dialectFuseOverlayfs = dialect{name: "fuse-overlayfs", whiteout: fstest.Whiteout, opaque: fstest.FuseOverlayfsOpaque}
)

// render writes l into the existing directory root in dialect d.
func (l *layer) render(root string, d dialect) error {
	var a []fstest.Applier
	for _, it := range l.items {
		a = append(a, it.create(d)...)
	}
	for _, it := range l.items {
		if it.kind == kDir && it.opaque {
			a = append(a, d.opaque(it.path))
		}
	}
	a = append(a, d.root...)
	a = append(a, l.root.attrs()...)
	a = append(a, l.times()...)
	return fstest.Apply(root, a...)
}

// create makes it, with owner, mode and xattrs; whiteouts in dialect d.
func (it *item) create(d dialect) []fstest.Applier {
	var a []fstest.Applier
	switch it.kind {
	case kDir:
		a = append(a, fstest.CreateDir(it.path, 0o755))
	case kFile:
		a = append(a, fstest.CreateFile(it.path, it.content, 0o644))
	case kSparse:
		a = append(a, fstest.CreateSparseFile(it.path, it.size, it.data))
	case kSymlink:
		a = append(a, fstest.Symlink(it.target, it.path))
	case kLink:
		return []fstest.Applier{fstest.Link(it.target, it.path)}
	case kFIFO:
		a = append(a, fstest.Mkfifo(it.path, 0o644))
	case kChar:
		a = append(a, fstest.Mknod(it.path, os.ModeDevice|os.ModeCharDevice|0o644, it.major, it.minor))
	case kBlock:
		a = append(a, fstest.Mknod(it.path, os.ModeDevice|0o644, it.major, it.minor))
	case kWhiteout:
		return []fstest.Applier{d.whiteout(it.path)}
	}
	return append(a, it.attrs()...)
}

// attrs sets owner, then mode (chown clears setuid), then xattrs.
func (it *item) attrs() []fstest.Applier {
	a := []fstest.Applier{fstest.Chown(it.path, it.uid, it.gid)}
	if it.kind != kSymlink {
		a = append(a, fstest.Chmod(it.path, os.FileMode(it.mode)))
	}
	for _, k := range sortedKeys(it.xattrs) {
		a = append(a, fstest.SetXattr(it.path, k, []byte(it.xattrs[k])))
	}
	return a
}

// times sets every item's times, deepest first, since adding an entry to a
// dir moves the dir's mtime.
func (l *layer) times() []fstest.Applier {
	items := append([]*item{l.root}, l.items...)
	sort.SliceStable(items, func(i, j int) bool { return depth(items[i].path) > depth(items[j].path) })
	var a []fstest.Applier
	for _, it := range items {
		if it.kind != kLink && it.kind != kWhiteout {
			a = append(a, fstest.Chtimes(it.path, it.mtime, it.mtime))
		}
	}
	return a
}

func depth(p string) int {
	if p == "." {
		return 0
	}
	return strings.Count(p, "/") + 1
}

// renderMerged writes the merged view m of ls into root as a plain tree,
// hard links kept among the visible names of one layer's inode. It returns
// the link count each regular file has in its layer, which the overlay
// reports and the plain tree cannot.
func renderMerged(root string, ls []*layer, m map[string]*merged) (map[string]uint64, error) {
	type inodeKey struct {
		layer int
		path  string
	}
	made := map[inodeKey]string{}
	nlink := map[string]uint64{}
	var a []fstest.Applier
	var timed []*item
	var timedPaths []string
	for _, p := range sortedKeys(m) {
		e := m[p]
		if p == "." {
			continue
		}
		l := ls[e.layer]
		it := e.item
		if it.kind == kLink || it.kind == kFile {
			src, n := l.inode(it)
			nlink[p] = uint64(n)
			k := inodeKey{e.layer, src.path}
			if first, ok := made[k]; ok {
				a = append(a, fstest.Link(first, p))
				continue
			}
			made[k] = p
			it = src
		}
		c := *it
		c.path = p
		a = append(a, c.create(dialectChar)...)
		timed = append(timed, &c)
		timedPaths = append(timedPaths, p)
	}
	top := *ls[0].root
	a = append(a, top.attrs()...)
	timed = append(timed, &top)
	sort.SliceStable(timed, func(i, j int) bool { return depth(timed[i].path) > depth(timed[j].path) })
	for _, it := range timed {
		a = append(a, fstest.Chtimes(it.path, it.mtime, it.mtime))
	}
	return nlink, fstest.Apply(root, a...)
}

// stack is a generated stack written to disk.
type stack struct {
	model  []*layer
	dirs   []string // layer directories, topmost first
	merged map[string]*merged
}

// writeStack renders ls under base/name/<i> (the layer dirs may hold
// characters that need escaping), layer i in dialectOf(i).
func writeStack(base, name string, ls []*layer, dialectOf func(i int) dialect) (*stack, error) {
	s := &stack{model: ls, merged: mergeLayers(ls)}
	dir := filepath.Join(base, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	for i, l := range ls {
		d := filepath.Join(dir, layerDirName(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
		if err := l.render(d, dialectOf(i)); err != nil {
			return nil, fmt.Errorf("render layer %d: %w", i, err)
		}
		s.dirs = append(s.dirs, d)
	}
	return s, nil
}

// layerDirName names layer i; every fourth name needs escaping in a lower
// list, unless the subject cannot take escapes.
func layerDirName(i int) string {
	if i%4 == 3 && !plainLayerNames {
		return fmt.Sprintf("l%d:esc,aped\\", i)
	}
	return fmt.Sprintf("l%d", i)
}
