package build

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/runner"
	"github.com/unionmount/unionmount/image/store"
)

// copyRequest is a COPY or ADD after substitution.
type copyRequest struct {
	text     string // COPY or ADD
	add      bool
	sources  []string
	dest     string
	from     string
	chown    string
	chmod    string
	contents []instructions.SourceContent
}

// copy runs a COPY or ADD: the sources are resolved and checksummed
// first, so a step whose files did not change is found in the cache
// without copying anything.
func (b *builder) copy(s *stage, req copyRequest) error {
	if len(req.contents) > 0 {
		return fmt.Errorf("heredocs are not supported by this builder: put the file in the build context")
	}
	var perm *uint32
	if req.chmod != "" {
		v, err := strconv.ParseUint(req.chmod, 8, 32)
		if err != nil || v > 0o7777 {
			return fmt.Errorf("--chmod=%s: give octal permission bits such as 0755", req.chmod)
		}
		p := uint32(v)
		perm = &p
	}
	src, fromID, cleanup, err := b.copySource(s, req)
	if err != nil {
		return err
	}
	defer cleanup()
	var matches []*match
	for _, p := range req.sources {
		if req.add && isURL(p) {
			m, done, err := b.download(p)
			if err != nil {
				return err
			}
			defer done()
			matches = append(matches, m)
			continue
		}
		ms, err := src.resolve(p)
		if err != nil {
			return err
		}
		matches = append(matches, ms...)
	}
	if len(matches) > 1 && !strings.HasSuffix(req.dest, "/") {
		return fmt.Errorf("when using %s with more than one source file, the destination must be a directory and end with a /", req.text)
	}
	sum, err := checksum(matches)
	if err != nil {
		return err
	}
	flags := ""
	if req.from != "" {
		flags += " --from=" + req.from
	}
	if req.chown != "" {
		flags += " --chown=" + req.chown
	}
	if req.chmod != "" {
		flags += " --chmod=" + req.chmod
	}
	kind := "file"
	if len(matches) > 1 || (len(matches) == 1 && matches[0].isDir) {
		kind = "dir"
	}
	createdBy := fmt.Sprintf("/bin/sh -c #(nop) %s%s %s:%s in %s ", req.text, flags, kind, strings.TrimPrefix(sum, "sha256:"), req.dest)
	k := key(strings.ToLower(req.text), flags, fromID, sum, strings.Join(req.sources, "\x00"), req.dest, s.cfg.Config.WorkingDir)
	if ok, err := b.cached(s, k); ok || err != nil {
		return err
	}
	return b.inContainer(s, nil, createdBy, k, func(r *rootFS) error {
		uid, gid, err := chownIDs(r, req.chown)
		if err != nil {
			return err
		}
		dest := req.dest
		if !path.IsAbs(dest) {
			wd := s.cfg.Config.WorkingDir
			if wd == "" {
				wd = "/"
			}
			dest = path.Join(wd, dest)
		}
		toDir := strings.HasSuffix(req.dest, "/") || req.dest == "." || strings.HasSuffix(req.dest, "/.")
		for _, m := range matches {
			// Hard links are kept within one source, as buildah keeps them.
			links := map[[2]uint64]string{}
			if err := b.place(r, links, m, dest, toDir, req.add, uid, gid, perm); err != nil {
				return err
			}
		}
		return nil
	})
}

// copySource is where a COPY reads: the context, or with --from the
// root of a stage's or an image's container.
func (b *builder) copySource(s *stage, req copyRequest) (*source, string, func(), error) {
	nothing := func() {}
	if req.from == "" {
		if b.o.Context == nil || b.o.Context.Dir == "" {
			if len(req.sources) > 0 && !(req.add && allURLs(req.sources)) {
				return nil, "", nothing, fmt.Errorf("no build context: give a directory (not a Dockerfile on stdin) to %s from", req.text)
			}
			return &source{root: "/nonexistent", beneath: true}, "", nothing, nil
		}
		return &source{root: b.o.Context.Dir, ctx: b.o.Context, beneath: true}, "", nothing, nil
	}
	var img *store.Image
	for i, st := range b.stages {
		if strings.EqualFold(st.name, req.from) || strconv.Itoa(i) == req.from {
			img = st.img
		}
	}
	if img == nil {
		var err error
		if img, err = b.from(req.from); err != nil {
			return nil, "", nothing, err
		}
	}
	c, err := b.o.Store.CreateContainer(store.CreateOptions{Image: img.ID.String(), Cmd: []string{"true"}, Entrypoint: []string{}})
	if err != nil {
		return nil, "", nothing, err
	}
	cleanup := func() {
		b.o.Store.Unmount(c)
		if cur, err := b.o.Store.LookupContainer(c.ID); err == nil {
			b.o.Store.RemoveContainer(cur, true)
		}
	}
	if _, err := b.o.Store.Mount(c); err != nil {
		cleanup()
		return nil, "", nothing, err
	}
	return &source{root: b.o.Store.Merged(c)}, img.ID.String(), cleanup, nil
}

// checksum hashes what the matches copy: names, types, modes, sizes,
// link targets, which files are hard links of which, and contents.
func checksum(ms []*match) (string, error) {
	h := sha256.New()
	for i, m := range ms {
		inodes := map[[2]uint64]string{} // hard links: the first entry of each inode
		fmt.Fprintf(h, "match %d %s %t\n", i, m.name, m.isDir)
		for _, e := range m.entries {
			fmt.Fprintf(h, "%q %o %d %q\n", e.rel, uint32(e.info.Mode()), e.info.Size(), e.link)
			if st, ok := e.info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && e.info.Mode().IsRegular() {
				ino := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := inodes[ino]; ok {
					fmt.Fprintf(h, "link to %s\n", first)
					continue
				}
				inodes[ino] = fmt.Sprintf("%d %q", i, e.rel)
			}
			if !e.info.Mode().IsRegular() {
				continue
			}
			f, err := os.Open(e.abs)
			if err != nil {
				return "", fmt.Errorf("read %s: %w", e.abs, err)
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return "", fmt.Errorf("read %s: %w", e.abs, err)
			}
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// userIDs resolves a USER in the image being built (uid and primary gid).
func userIDs(r *rootFS, spec string) (int, int, error) {
	if spec == "" {
		return 0, 0, nil
	}
	uid, gid, err := resolveUser(r, spec)
	if err != nil {
		return 0, 0, fmt.Errorf("USER %s: %w", spec, err)
	}
	return uid, gid, nil
}

// resolveUser looks USER[:GROUP] up in the image's /etc/passwd and
// /etc/group: its uid and gid.
func resolveUser(r *rootFS, spec string) (int, int, error) {
	files, done := passwdFiles(r)
	defer done()
	uid, gid, _, _, err := runner.ResolveUser(spec, files["etc/passwd"], files["etc/group"])
	return uid, gid, err
}

// passwdFiles opens the image's /etc/passwd and /etc/group, as paths.
func passwdFiles(r *rootFS) (map[string]string, func()) {
	files := map[string]string{}
	var fds []int
	for _, f := range []string{"etc/passwd", "etc/group"} {
		fd, err := r.open(f, unix.O_RDONLY)
		if err != nil {
			continue
		}
		fds = append(fds, fd)
		files[f] = fdPath(fd)
	}
	return files, func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// chownIDs resolves --chown USER[:GROUP] in the image being built; 0:0
// without it. A user without a group gets the group of the same number,
// as docker's reference says.
func chownIDs(r *rootFS, spec string) (int, int, error) {
	if spec == "" {
		return 0, 0, nil
	}
	uid, gid, err := resolveUser(r, spec)
	if err != nil {
		return 0, 0, fmt.Errorf("--chown=%s: %w", spec, err)
	}
	if !strings.Contains(spec, ":") {
		gid = uid
	}
	return uid, gid, nil
}

// place copies one match to dest: a directory's contents into dest, a
// file to dest or, when dest is a directory, into it; ADD unpacks a
// local tar archive into dest.
func (b *builder) place(r *rootFS, links map[[2]uint64]string, m *match, dest string, toDir, add bool, uid, gid int, perm *uint32) error {
	mode := func(info fs.FileInfo) uint32 {
		if perm != nil {
			return *perm
		}
		return unixPerm(info.Mode())
	}
	if m.isDir {
		if err := r.mkdirAll(dest, uid, gid, 0o755); err != nil {
			return err
		}
		for _, e := range m.entries {
			if err := copyEntry(r, links, path.Join(dest, e.rel), e, uid, gid, mode(e.info)); err != nil {
				return err
			}
		}
		return nil
	}
	e := m.entries[0]
	if add && !isURL(m.name) && m.real != "" {
		ok, err := untarIfArchive(r, e.abs, dest)
		if ok || err != nil {
			return err
		}
	}
	target := dest
	if !toDir {
		if st, ok, err := r.stat(dest); err != nil {
			return err
		} else if ok && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			toDir = true
		}
	}
	if toDir {
		target = path.Join(dest, m.name)
		if err := r.mkdirAll(dest, uid, gid, 0o755); err != nil {
			return err
		}
	} else if err := r.mkdirAll(path.Dir(dest), uid, gid, 0o755); err != nil {
		return err
	}
	return copyEntry(r, links, target, e, uid, gid, mode(e.info))
}

func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		p |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		p |= unix.S_ISVTX
	}
	return p
}

// copyEntry copies one entry to target. Files hard-linked to each other
// in the source are hard-linked in the image too (links maps a source
// inode to the first target written for it), as docker and buildah copy
// them.
func copyEntry(r *rootFS, links map[[2]uint64]string, target string, e entry, uid, gid int, perm uint32) error {
	switch {
	case e.info.IsDir():
		return r.mkdir(target, uid, gid, perm, e.info.ModTime())
	case e.link != "" || e.info.Mode()&fs.ModeSymlink != 0:
		return r.symlink(target, e.link, uid, gid, e.info.ModTime())
	}
	if st, ok := e.info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		ino := [2]uint64{uint64(st.Dev), st.Ino}
		if first, ok := links[ino]; ok {
			return r.link(first, target)
		}
		links[ino] = target
	}
	f, err := os.Open(e.abs)
	if err != nil {
		return err
	}
	defer f.Close()
	return r.writeFile(target, f, uid, gid, perm, e.info.ModTime())
}

// untarIfArchive unpacks p into dest when it is a tar archive (plain,
// gzip or zstd), as ADD does; ok is false when it is not one.
func untarIfArchive(r *rootFS, p, dest string) (ok bool, err error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	dr, _, err := layer.Decompress(f)
	if err != nil {
		return false, nil
	}
	defer dr.Close()
	tr := tar.NewReader(dr)
	hdr, err := tr.Next()
	if err != nil {
		return false, nil
	}
	if err := r.mkdirAll(dest, 0, 0, 0o755); err != nil {
		return true, err
	}
	// The archive unpacks into dest as into a root of its own: its
	// symlinks resolve inside dest, and nothing lands outside it.
	dfd, err := r.open(dest, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return true, err
	}
	sub := &rootFS{fd: dfd}
	defer sub.close()
	r = sub
	for ; err == nil; hdr, err = tr.Next() {
		name, cerr := layer.CleanName(strings.TrimLeft(hdr.Name, "/"))
		if cerr != nil {
			return true, fmt.Errorf("ADD %s: %w", path.Base(p), cerr)
		}
		if name == "" || name == "." {
			continue
		}
		target := name
		if err := r.mkdirAll(path.Dir(target), 0, 0, 0o755); err != nil {
			return true, err
		}
		perm := uint32(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = r.mkdir(target, hdr.Uid, hdr.Gid, perm, hdr.ModTime)
		case tar.TypeReg:
			err = r.writeFile(target, tr, hdr.Uid, hdr.Gid, perm, hdr.ModTime)
		case tar.TypeSymlink:
			err = r.symlink(target, hdr.Linkname, hdr.Uid, hdr.Gid, hdr.ModTime)
		case tar.TypeLink:
			err = r.link(hdr.Linkname, target)
		default:
			continue // devices and fifos are not unpacked
		}
		if err != nil {
			return true, fmt.Errorf("ADD %s: %s: %w", path.Base(p), hdr.Name, err)
		}
	}
	if !errors.Is(err, io.EOF) {
		return true, fmt.Errorf("ADD %s: %w: %w", path.Base(p), image.ErrCorrupt, err)
	}
	return true, nil
}

func isURL(s string) bool { return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") }

func allURLs(l []string) bool {
	for _, s := range l {
		if !isURL(s) {
			return false
		}
	}
	return true
}

// download fetches an ADD URL into a temporary file: a file of mode 0600
// named after the URL's last path element, with the server's
// Last-Modified time.
func (b *builder) download(raw string) (*match, func(), error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("ADD %s: %w", raw, err)
	}
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("ADD %s: %w", raw, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("ADD %s: %w", raw, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("ADD %s: the server answered %s", raw, resp.Status)
	}
	f, err := os.CreateTemp("", "unionctl-add-")
	if err != nil {
		return nil, nil, err
	}
	done := func() { os.Remove(f.Name()) }
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		done()
		return nil, nil, fmt.Errorf("ADD %s: %w", raw, err)
	}
	mtime := time.Now()
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		mtime = lm
	}
	os.Chmod(f.Name(), 0o600)
	os.Chtimes(f.Name(), mtime, mtime)
	info, err := os.Lstat(f.Name())
	if err != nil {
		done()
		return nil, nil, err
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		done()
		return nil, nil, fmt.Errorf("ADD %s: the URL names no file: give a destination file name", raw)
	}
	return &match{name: name, entries: []entry{{rel: ".", abs: f.Name(), info: info}}}, done, nil
}
