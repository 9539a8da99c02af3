package fsx

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// File is one file of the pool: its path and the content it holds before
// the run.
type File struct {
	Path    string
	Initial []byte
}

// Config is one run.
type Config struct {
	Seed uint64
	// Ops is the number of operations, over all files.
	Ops int
	// Files is the pool. Active of them are worked on at once; a retired
	// file is replaced by the next unused one.
	Files  []File
	Active int // default min(4, len(Files))
	// RetireEvery is the mean number of operations between retirements
	// (0: never retire).
	RetireEvery int
	// MaxSize bounds every file's size (default 256 KiB); MaxOp one read
	// or write (default 64 KiB).
	MaxSize, MaxOp int64
	// CheckEvery: compare every active file whole after this many
	// operations (default 64; negative: only at retirement and the end).
	CheckEvery int
	// Disable leaves out operations by name (see the package doc).
	Disable []string
	// TraceLen is how many recent operations a failure shows (default 24).
	TraceLen int
	// NoStaleMmap maps a file only through descriptors opened after its
	// first write. Kernel overlayfs needs it: a mapping made through a
	// descriptor opened before the copy-up shows the lower file
	// (Documentation/filesystems/overlayfs.rst, "Non-standard behavior").
	NoStaleMmap bool
}

// Stats is what a run did.
type Stats struct {
	Ops          int
	ByOp         map[string]int
	Unsupported  map[string]int // operations the filesystem refused (EOPNOTSUPP), by op and mode
	FilesStarted int            // pool files taken into use (each one a copy-up on a union, once written)
	FilesWritten int            // of those, the ones that were changed
	Checks       int            // whole-file comparisons
	BytesRead    int64
	BytesWritten int64
	// Final is the content every file of the pool must hold now, by path.
	Final map[string][]byte
}

func (s *Stats) String() string {
	var ops []string
	for k, v := range s.ByOp {
		ops = append(ops, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(ops)
	var un []string
	for k, v := range s.Unsupported {
		un = append(un, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(un)
	out := fmt.Sprintf("%d ops (%s); %d files started, %d written; %d whole-file checks; %d MiB written, %d MiB read",
		s.Ops, strings.Join(ops, " "), s.FilesStarted, s.FilesWritten, s.Checks, s.BytesWritten>>20, s.BytesRead>>20)
	if len(un) > 0 {
		out += "; unsupported: " + strings.Join(un, " ")
	}
	return out
}

// opKind is one kind of operation with its weight.
type opKind struct {
	name   string
	weight int
	run    func(r *runner, s *slot) error
}

var kinds = []opKind{
	{"read", 14, (*runner).read},
	{"write", 16, (*runner).write},
	{"append", 4, (*runner).appendOp},
	{"truncate", 6, (*runner).truncate},
	{"fallocate", 6, (*runner).fallocate},
	{"copyrange", 3, (*runner).copyRange},
	{"mmapread", 4, (*runner).mmapRead},
	{"mmapwrite", 6, (*runner).mmapWrite},
	{"fsync", 2, (*runner).fsync},
	{"reopen", 3, (*runner).reopen},
	{"stat", 3, (*runner).stat},
}

// slot is an active file.
type slot struct {
	f       File
	model   []byte
	ro, rw  int // descriptors, -1 when closed; ro is opened before any write
	written bool
	// roEarly: ro was opened before the first write (on a union: on the
	// lower file, before the copy-up).
	roEarly bool
}

type runner struct {
	cfg      Config
	rng      *rand.Rand
	slots    []*slot
	next     int // next pool file
	final    map[string][]byte
	stats    Stats
	trace    []string
	opNo     int
	kinds    []opKind
	total    int
	badModes map[uint32]bool // fallocate modes refused
	page     int64
}

// Run runs cfg. The files must exist with their Initial content. The error
// describes the first difference or unexpected failure, with the seed and
// the operation that showed it.
func Run(cfg Config) (*Stats, error) {
	if len(cfg.Files) == 0 {
		return nil, errors.New("fsx: no files")
	}
	if cfg.Active <= 0 {
		cfg.Active = min(4, len(cfg.Files))
	}
	cfg.Active = min(cfg.Active, len(cfg.Files))
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 256 << 10
	}
	if cfg.MaxOp <= 0 {
		cfg.MaxOp = 64 << 10
	}
	if cfg.CheckEvery == 0 {
		cfg.CheckEvery = 64
	}
	if cfg.TraceLen <= 0 {
		cfg.TraceLen = 24
	}
	r := &runner{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x667378)),
		final:    map[string][]byte{},
		badModes: map[uint32]bool{},
		page:     int64(os.Getpagesize()),
	}
	r.stats.ByOp = map[string]int{}
	r.stats.Unsupported = map[string]int{}
	for _, f := range cfg.Files {
		r.final[f.Path] = f.Initial
	}
	for _, k := range kinds {
		disabled := false
		for _, d := range cfg.Disable {
			disabled = disabled || d == k.name
		}
		if !disabled {
			r.kinds = append(r.kinds, k)
			r.total += k.weight
		}
	}
	defer r.closeAll()
	for i := 0; i < cfg.Active; i++ {
		s, err := r.start()
		if err != nil {
			return &r.stats, err
		}
		r.slots = append(r.slots, s)
	}
	for r.opNo = 1; r.opNo <= cfg.Ops; r.opNo++ {
		i := r.rng.IntN(len(r.slots))
		s := r.slots[i]
		if cfg.RetireEvery > 0 && r.next < len(cfg.Files) && r.rng.IntN(cfg.RetireEvery) == 0 {
			if err := r.retire(i); err != nil {
				return &r.stats, err
			}
			continue
		}
		k := r.pick()
		before := len(s.model)
		if err := k.run(r, s); err != nil {
			return &r.stats, r.fail(s, err)
		}
		r.stats.Ops++
		r.stats.ByOp[k.name]++
		if len(s.model) != before || k.name == "truncate" {
			if err := r.checkSize(s); err != nil {
				return &r.stats, r.fail(s, err)
			}
		}
		if cfg.CheckEvery > 0 && r.opNo%cfg.CheckEvery == 0 {
			for _, s := range r.slots {
				if err := r.checkWhole(s); err != nil {
					return &r.stats, r.fail(s, err)
				}
			}
		}
	}
	for _, s := range r.slots {
		if err := r.checkWhole(s); err != nil {
			return &r.stats, r.fail(s, err)
		}
		r.final[s.f.Path] = s.model
	}
	r.stats.Final = r.final
	return &r.stats, nil
}

func (r *runner) pick() opKind {
	n := r.rng.IntN(r.total)
	for _, k := range r.kinds {
		if n < k.weight {
			return k
		}
		n -= k.weight
	}
	return r.kinds[len(r.kinds)-1]
}

// start takes the next pool file into use: it opens the read-only
// descriptor before anything is written and checks the initial content.
func (r *runner) start() (*slot, error) {
	f := r.cfg.Files[r.next]
	r.next++
	s := &slot{f: f, model: bytes.Clone(f.Initial), ro: -1, rw: -1}
	r.stats.FilesStarted++
	if err := r.openRO(s); err != nil {
		return nil, r.fail(s, err)
	}
	if err := r.checkWhole(s); err != nil {
		return nil, r.fail(s, fmt.Errorf("initial content: %w", err))
	}
	return s, nil
}

// retire finishes slot i and starts the next pool file in its place.
func (r *runner) retire(i int) error {
	s := r.slots[i]
	r.note(s, "retire")
	if err := r.checkWhole(s); err != nil {
		return r.fail(s, err)
	}
	s.close()
	if err := r.checkFresh(s); err != nil {
		return r.fail(s, fmt.Errorf("after closing every descriptor: %w", err))
	}
	r.final[s.f.Path] = s.model
	r.stats.ByOp["retire"]++
	ns, err := r.start()
	if err != nil {
		return err
	}
	r.slots[i] = ns
	return nil
}

func (r *runner) closeAll() {
	for _, s := range r.slots {
		s.close()
	}
}

func (s *slot) close() {
	if s.ro >= 0 {
		unix.Close(s.ro)
		s.ro = -1
	}
	if s.rw >= 0 {
		unix.Close(s.rw)
		s.rw = -1
	}
}

func (r *runner) openRO(s *slot) error {
	fd, err := unix.Open(s.f.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open read-only: %w", err)
	}
	s.ro = fd
	s.roEarly = !s.written
	return nil
}

// rwFd returns the read-write descriptor, opening it (on a union: the
// copy-up) the first time.
func (r *runner) rwFd(s *slot) (int, error) {
	if s.rw >= 0 {
		return s.rw, nil
	}
	fd, err := unix.Open(s.f.Path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open read-write: %w", err)
	}
	s.rw = fd
	return fd, nil
}

// anyFd returns the read-only or the read-write descriptor at random.
func (r *runner) anyFd(s *slot) int {
	if s.rw >= 0 && r.rng.IntN(2) == 0 {
		return s.rw
	}
	return s.ro
}

func (r *runner) wrote(s *slot, n int64) {
	if !s.written {
		s.written = true
		r.stats.FilesWritten++
	}
	r.stats.BytesWritten += n
}

// note records an operation in the trace.
func (r *runner) note(s *slot, format string, args ...any) {
	line := fmt.Sprintf("op %d %s: ", r.opNo, s.f.Path) + fmt.Sprintf(format, args...) + fmt.Sprintf(" (size %d)", len(s.model))
	if len(r.trace) >= r.cfg.TraceLen {
		r.trace = r.trace[1:]
	}
	r.trace = append(r.trace, line)
}

func (r *runner) fail(s *slot, err error) error {
	return fmt.Errorf("fsx seed %d, op %d of %d, file %s: %w\nlast operations:\n  %s",
		r.cfg.Seed, r.opNo, r.cfg.Ops, s.f.Path, err, strings.Join(r.trace, "\n  "))
}

// cycle is 1..255 twice: the pattern is a window of it, repeated.
var cycle = func() []byte {
	b := make([]byte, 510)
	for i := range b {
		b[i] = byte(1 + i%255)
	}
	return b
}()

// pattern fills b with the bytes operation op writes at file offset off:
// byte i is 1 + (op*131 + off + i) mod 255.
func (r *runner) pattern(b []byte, off int64) {
	start := int((uint64(r.opNo)*131 + uint64(off)) % 255)
	for i := 0; i < len(b); i += 255 {
		copy(b[i:], cycle[start:start+255])
	}
}

// resize changes the model's size, zero-filling growth.
func (s *slot) resize(n int64) {
	if n <= int64(len(s.model)) {
		s.model = s.model[:n]
		return
	}
	s.model = append(s.model, make([]byte, n-int64(len(s.model)))...)
}

// modelWrite applies a write of b at off to the model.
func (s *slot) modelWrite(b []byte, off int64) {
	if end := off + int64(len(b)); end > int64(len(s.model)) {
		s.resize(end)
	}
	copy(s.model[off:], b)
}

// span picks an offset and length inside [0, limit) with length at most
// max (and at least 1; limit must be > 0).
func (r *runner) span(limit, max int64) (off, n int64) {
	off = r.rng.Int64N(limit)
	n = 1 + r.rng.Int64N(min(max, limit-off))
	return off, n
}

// compare reports the first difference of got and want, with context.
func compare(what string, off int64, got, want []byte) error {
	if bytes.Equal(got, want) {
		return nil
	}
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	lo, hi := max(i-8, 0), i+8
	return fmt.Errorf("%s: %d bytes at %d differ from the model (want %d bytes): first difference at offset %d: got %x, want %x",
		what, len(got), off, len(want), off+int64(i), got[lo:min(hi, len(got))], want[lo:min(hi, len(want))])
}

// preadFull reads up to len(b) bytes at off, stopping at EOF.
func preadFull(fd int, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		k, err := unix.Pread(fd, b[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			break
		}
		n += k
	}
	return n, nil
}

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		k, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[k:], off+int64(k)
	}
	return nil
}

func (r *runner) read(s *slot) error {
	size := int64(len(s.model))
	off, n := r.span(size+r.cfg.MaxOp/4+1, r.cfg.MaxOp)
	fd := r.anyFd(s)
	which := "ro"
	if fd == s.rw {
		which = "rw"
	}
	r.note(s, "read %s off=%d len=%d", which, off, n)
	b := make([]byte, n)
	k, err := preadFull(fd, b, off)
	if err != nil {
		return fmt.Errorf("pread %d at %d: %w", n, off, err)
	}
	r.stats.BytesRead += int64(k)
	want := []byte{}
	if off < size {
		want = s.model[off:min(off+n, size)]
	}
	return compare("pread", off, b[:k], want)
}

func (r *runner) write(s *slot) error {
	off, n := r.span(r.cfg.MaxSize, r.cfg.MaxOp)
	if r.rng.IntN(4) == 0 && int64(len(s.model)) < r.cfg.MaxSize {
		// Often right at or near the end, as appending programs do.
		off = int64(len(s.model)) - r.rng.Int64N(min(int64(len(s.model)), 64)+1)
		off = max(off, 0)
		n = 1 + r.rng.Int64N(min(r.cfg.MaxOp, r.cfg.MaxSize-off))
	}
	r.note(s, "write off=%d len=%d", off, n)
	fd, err := r.rwFd(s)
	if err != nil {
		return err
	}
	b := make([]byte, n)
	r.pattern(b, off)
	if err := pwriteFull(fd, b, off); err != nil {
		return fmt.Errorf("pwrite %d at %d: %w", n, off, err)
	}
	s.modelWrite(b, off)
	r.wrote(s, n)
	return nil
}

func (r *runner) appendOp(s *slot) error {
	size := int64(len(s.model))
	if size >= r.cfg.MaxSize-1 {
		return r.truncate(s)
	}
	n := 1 + r.rng.Int64N(min(r.cfg.MaxOp, r.cfg.MaxSize-size))
	r.note(s, "append len=%d", n)
	fd, err := unix.Open(s.f.Path, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open O_APPEND: %w", err)
	}
	b := make([]byte, n)
	r.pattern(b, size)
	_, werr := unix.Write(fd, b)
	cerr := unix.Close(fd)
	if werr != nil {
		return fmt.Errorf("append %d: %w", n, werr)
	}
	if cerr != nil {
		return fmt.Errorf("close after append: %w", cerr)
	}
	s.modelWrite(b, size)
	r.wrote(s, n)
	return nil
}

func (r *runner) truncate(s *slot) error {
	n := r.rng.Int64N(r.cfg.MaxSize + 1)
	if r.rng.IntN(8) == 0 {
		n = 0
	}
	if r.rng.IntN(2) == 0 {
		r.note(s, "truncate(path) to %d", n)
		if err := unix.Truncate(s.f.Path, n); err != nil {
			return fmt.Errorf("truncate to %d: %w", n, err)
		}
	} else {
		r.note(s, "ftruncate to %d", n)
		fd, err := r.rwFd(s)
		if err != nil {
			return err
		}
		if err := unix.Ftruncate(fd, n); err != nil {
			return fmt.Errorf("ftruncate to %d: %w", n, err)
		}
	}
	s.resize(n)
	r.wrote(s, 0)
	return nil
}

var fallocModes = []struct {
	name string
	mode uint32
}{
	{"alloc", 0},
	{"keepsize", unix.FALLOC_FL_KEEP_SIZE},
	{"punchhole", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE},
	{"zerorange", unix.FALLOC_FL_ZERO_RANGE},
	{"zerorange-keepsize", unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE},
}

func (r *runner) fallocate(s *slot) error {
	m := fallocModes[r.rng.IntN(len(fallocModes))]
	if r.badModes[m.mode] {
		return r.write(s)
	}
	off, n := r.span(r.cfg.MaxSize, r.cfg.MaxOp)
	r.note(s, "fallocate %s off=%d len=%d", m.name, off, n)
	fd, err := r.rwFd(s)
	if err != nil {
		return err
	}
	if err := unix.Fallocate(fd, m.mode, off, n); err != nil {
		if err == unix.EOPNOTSUPP {
			r.badModes[m.mode] = true
			r.stats.Unsupported["fallocate-"+m.name]++
			return nil
		}
		return fmt.Errorf("fallocate %s %d at %d: %w", m.name, n, off, err)
	}
	size := int64(len(s.model))
	end := off + n
	keep := m.mode&unix.FALLOC_FL_KEEP_SIZE != 0
	if !keep && end > size {
		s.resize(end)
		size = end
	}
	if m.mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 && off < size {
		clear(s.model[off:min(end, size)])
	}
	r.wrote(s, 0)
	return nil
}

func (r *runner) copyRange(s *slot) error {
	size := int64(len(s.model))
	if size < 2 {
		return r.write(s)
	}
	src, n := r.span(size, r.cfg.MaxOp)
	// A destination that does not overlap the source (the kernel refuses
	// overlapping ranges of one file).
	var dst int64
	if r.rng.IntN(2) == 0 && src >= n {
		dst = r.rng.Int64N(src - n + 1)
	} else {
		lo := src + n
		if lo+n > r.cfg.MaxSize {
			return r.write(s)
		}
		dst = lo + r.rng.Int64N(min(r.cfg.MaxSize-n-lo+1, size-lo+r.cfg.MaxOp))
	}
	r.note(s, "copy_file_range %d from %d to %d", n, src, dst)
	fd, err := r.rwFd(s)
	if err != nil {
		return err
	}
	want := bytes.Clone(s.model[src : src+n])
	in := s.ro
	done := int64(0)
	for done < n {
		ioff, ooff := src+done, dst+done
		k, err := unix.CopyFileRange(in, &ioff, fd, &ooff, int(n-done), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("copy_file_range %d from %d to %d (after %d): %w", n, src, dst, done, err)
		}
		if k == 0 {
			return fmt.Errorf("copy_file_range %d from %d to %d: stopped after %d bytes", n, src, dst, done)
		}
		done += int64(k)
	}
	s.modelWrite(want, dst)
	r.wrote(s, n)
	return nil
}

// mapRange maps [off, off+n) of fd with the page-aligned start the call
// needs, and returns the mapping and the range inside it.
func (r *runner) mapRange(fd int, off, n int64, prot int) (m, b []byte, err error) {
	start := off &^ (r.page - 1)
	m, err = unix.Mmap(fd, start, int(off+n-start), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return m, m[off-start : off-start+n], nil
}

func (r *runner) mmapRead(s *slot) error {
	size := int64(len(s.model))
	if size == 0 {
		return r.write(s)
	}
	off, n := r.span(size, r.cfg.MaxOp)
	fd := r.anyFd(s)
	if fd == s.ro && s.roEarly && s.written && r.cfg.NoStaleMmap {
		var err error
		if fd, err = r.rwFd(s); err != nil {
			return err
		}
	}
	which := "ro"
	if fd == s.rw {
		which = "rw"
	}
	r.note(s, "mmap read %s off=%d len=%d", which, off, n)
	m, b, err := r.mapRange(fd, off, n, unix.PROT_READ)
	if err != nil {
		return fmt.Errorf("mmap %d at %d: %w", n, off, err)
	}
	defer unix.Munmap(m)
	r.stats.BytesRead += n
	return compare("mmap read", off, b, s.model[off:off+n])
}

func (r *runner) mmapWrite(s *slot) error {
	size := int64(len(s.model))
	if size == 0 {
		return r.write(s)
	}
	off, n := r.span(size, r.cfg.MaxOp)
	r.note(s, "mmap write off=%d len=%d", off, n)
	fd, err := r.rwFd(s)
	if err != nil {
		return err
	}
	m, b, err := r.mapRange(fd, off, n, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return fmt.Errorf("mmap %d at %d for writing: %w", n, off, err)
	}
	r.pattern(b, off)
	s.modelWrite(b, off)
	err = unix.Msync(m, unix.MS_SYNC)
	if uerr := unix.Munmap(m); err == nil && uerr != nil {
		err = fmt.Errorf("munmap: %w", uerr)
	}
	if err != nil {
		return fmt.Errorf("msync %d at %d: %w", n, off, err)
	}
	r.wrote(s, n)
	return nil
}

func (r *runner) fsync(s *slot) error {
	fd, err := r.rwFd(s)
	if err != nil {
		return err
	}
	if r.rng.IntN(2) == 0 {
		r.note(s, "fdatasync")
		err = unix.Fdatasync(fd)
	} else {
		r.note(s, "fsync")
		err = unix.Fsync(fd)
	}
	if err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	return nil
}

func (r *runner) reopen(s *slot) error {
	r.note(s, "reopen")
	s.close()
	return r.openRO(s)
}

func (r *runner) stat(s *slot) error {
	r.note(s, "stat")
	return r.checkSize(s)
}

// checkSize compares the size every descriptor and the path report.
func (r *runner) checkSize(s *slot) error {
	want := int64(len(s.model))
	var st unix.Stat_t
	for _, fd := range []int{s.ro, s.rw} {
		if fd < 0 {
			continue
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("fstat: %w", err)
		}
		if st.Size != want {
			return fmt.Errorf("fstat size %d, model %d", st.Size, want)
		}
	}
	if err := unix.Stat(s.f.Path, &st); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if st.Size != want {
		return fmt.Errorf("stat size %d, model %d", st.Size, want)
	}
	return nil
}

// checkWhole compares the whole file through the old read-only
// descriptor, then through a fresh open.
func (r *runner) checkWhole(s *slot) error {
	r.stats.Checks++
	if err := r.checkSize(s); err != nil {
		return err
	}
	if s.ro >= 0 {
		b := make([]byte, len(s.model)+1)
		k, err := preadFull(s.ro, b, 0)
		if err != nil {
			return fmt.Errorf("read whole file (descriptor opened before the first write): %w", err)
		}
		r.stats.BytesRead += int64(k)
		if err := compare("whole file through the first descriptor", 0, b[:k], s.model); err != nil {
			return err
		}
	}
	return r.checkFresh(s)
}

func (r *runner) checkFresh(s *slot) error {
	got, err := os.ReadFile(s.f.Path)
	if err != nil {
		return fmt.Errorf("read whole file: %w", err)
	}
	r.stats.BytesRead += int64(len(got))
	return compare("whole file through a fresh open", 0, got, s.model)
}

// Verify compares the file at path with want, for checks after the run
// (say, after a remount).
func Verify(path string, want []byte) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := compare(path, 0, got, want); err != nil {
		return err
	}
	return nil
}
