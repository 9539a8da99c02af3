package build

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
)

// ErrOutsideContext: a COPY or ADD source names a path outside the build
// context (through "..", or a symlink that leaves it).
var ErrOutsideContext = errors.New("forbidden path outside the build context")

// Context is the build context: the directory COPY and ADD read, less
// what its .dockerignore excludes.
type Context struct {
	Dir    string // "" for an empty context
	ignore *patternmatcher.PatternMatcher
}

// OpenContext opens the build context dir and reads its .dockerignore.
func OpenContext(dir string) (*Context, error) {
	if dir == "" {
		return &Context{}, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("build context %s: not a directory", dir)
	}
	c := &Context{Dir: abs}
	f, err := os.Open(filepath.Join(abs, ".dockerignore"))
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read .dockerignore: %w", err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read .dockerignore: %w", err)
	}
	if c.ignore, err = patternmatcher.New(patterns); err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return c, nil
}

// excluded reports whether .dockerignore excludes rel (slash-separated,
// relative to the context).
func (c *Context) excluded(rel string) bool {
	if c.ignore == nil || rel == "." {
		return false
	}
	ok, err := c.ignore.MatchesOrParentMatches(rel)
	return err == nil && ok
}

// source is a tree a COPY or ADD reads: the context (with exclusions) or
// the root of another image (none).
type source struct {
	root string // host directory
	ctx  *Context
	// beneath: sources must stay beneath root (the context), rather than
	// resolve in it as in a chroot (an image).
	beneath bool
}

// match is one source a COPY names, resolved.
type match struct {
	name    string // as named, for the destination's base name
	real    string // host path, symlinks followed
	rel     string // path relative to the source root
	isDir   bool
	entries []entry // a directory's contents, parents first; a file: itself
}

// entry is one file a COPY copies.
type entry struct {
	rel  string // below the match ("." for a file match)
	abs  string // host path
	info fs.FileInfo
	link string
}

// resolve finds what pattern names: one path, or with wildcards every
// path that matches, each resolved through symlinks (within the source).
func (s *source) resolve(pattern string) ([]*match, error) {
	clean := path.Clean(strings.TrimPrefix(filepath.ToSlash(pattern), "/"))
	if s.beneath && (clean == ".." || strings.HasPrefix(clean, "../")) {
		return nil, fmt.Errorf("%w: %s", ErrOutsideContext, pattern)
	}
	clean = strings.TrimPrefix(path.Clean("/"+clean), "/")
	if clean == "" {
		clean = "."
	}
	var names []string
	if strings.ContainsAny(clean, "*?[\\") {
		err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			r, _ := filepath.Rel(s.root, p)
			r = filepath.ToSlash(r)
			if r == "." {
				return nil
			}
			if ok, _ := path.Match(clean, r); ok && !s.excluded(r) {
				names = append(names, r)
			}
			if d.IsDir() && strings.Count(r, "/") >= strings.Count(clean, "/") {
				return fs.SkipDir
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%w: no source files were specified by %q", image.ErrNotFound, pattern)
		}
	} else {
		if s.excluded(clean) {
			return nil, fmt.Errorf("%w: %s: excluded by .dockerignore", image.ErrNotFound, pattern)
		}
		names = []string{clean}
	}
	var out []*match
	for _, n := range names {
		m, err := s.open(n, pattern)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *source) excluded(rel string) bool { return s.ctx != nil && s.ctx.excluded(rel) }

// open resolves the source named n and lists what it copies.
func (s *source) open(n, pattern string) (*match, error) {
	rfd, err := unix.Open(s.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rfd)
	resolve := uint64(unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS)
	if s.beneath {
		resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS
	}
	fd, err := unix.Openat2(rfd, n, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolve})
	if errors.Is(err, unix.EXDEV) {
		return nil, fmt.Errorf("%w: %s: a symlink that leaves it", ErrOutsideContext, pattern)
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, fmt.Errorf("%w: %s: no such file in the build context", image.ErrNotFound, pattern)
	}
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", pattern, err)
	}
	real, err := os.Readlink(fdPath(fd))
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", pattern, err)
	}
	relp, err := filepath.Rel(s.root, real)
	if err != nil || relp == ".." || strings.HasPrefix(relp, "../") {
		return nil, fmt.Errorf("%w: %s", ErrOutsideContext, pattern)
	}
	relp = filepath.ToSlash(relp)
	info, err := os.Lstat(real)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", pattern, err)
	}
	m := &match{name: path.Base(n), real: real, rel: relp, isDir: info.IsDir()}
	if !m.isDir {
		m.entries = []entry{{rel: ".", abs: real, info: info}}
		return m, nil
	}
	exceptions := s.ctx != nil && s.ctx.ignore != nil && s.ctx.ignore.Exclusions()
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == real {
			return nil
		}
		r, _ := filepath.Rel(real, p)
		r = filepath.ToSlash(r)
		if s.excluded(path.Join(relp, r)) {
			if d.IsDir() && !exceptions {
				return fs.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{rel: r, abs: p, info: info}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.IsDir(), info.Mode().IsRegular():
		default:
			return nil // sockets, fifos and devices are not copied
		}
		m.entries = append(m.entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", pattern, err)
	}
	sort.SliceStable(m.entries, func(i, j int) bool { return m.entries[i].rel < m.entries[j].rel })
	return m, nil
}
