package bench

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Groups are the report's sections, one chart each, in report order.
var Groups = []struct {
	Name, Title string
	Lines       bool // a scaling curve (absolute time per op against X), not ratio bars
	XLabel      string
}{
	{Name: "metadata", Title: "Metadata: walks, listings, lookups"},
	{Name: "layers", Title: "Lookup cost against layer count", Lines: true, XLabel: "lower layers"},
	{Name: "io", Title: "Data: sequential and random I/O"},
	{Name: "copyup", Title: "Copy-up latency against file size", Lines: true, XLabel: "file size"},
	{Name: "write", Title: "Writes: metadata copy-up, churn, deletes, chown"},
	{Name: "tree", Title: "A real tree: the Go source"},
	{Name: "requests", Title: "Per request: loops that reach the daemon on every call"},
}

// pathDirs is a PATH: the shell probes each in turn for a command name.
var pathDirs = []string{"usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin"}

// Cases returns every case for the given sizes, in run and report order.
func Cases(s Sizes) []*Case {
	tree := &Dataset{Name: "tree", Layers: 3, Params: fmt.Sprintf("files=%d", s.TreeFiles),
		build: func(g *gen) error { return buildTree(g, s.TreeFiles) }}
	bigdir := &Dataset{Name: "bigdir", Layers: 2, Params: fmt.Sprintf("entries=%d", s.DirEntries),
		build: func(g *gen) error {
			for i := 0; i < s.DirEntries; i++ {
				if err := g.file(g.rng.IntN(2), fmt.Sprintf("big/e%07d", i), 0); err != nil {
					return err
				}
			}
			return nil
		}}
	maxLayers := 1
	for _, n := range s.LayerCounts {
		maxLayers = max(maxLayers, n)
	}
	layers := &Dataset{Name: "layers", Layers: maxLayers, Params: fmt.Sprintf("lookups=%d", s.Lookups),
		build: func(g *gen) error { return buildLayers(g, maxLayers, s.Lookups) }}
	path := &Dataset{Name: "path", Layers: 3, Params: fmt.Sprintf("commands=%d", s.Commands),
		build: func(g *gen) error { return buildPath(g, s.Commands) }}
	big := &Dataset{Name: "bigfile", Layers: 2, Params: fmt.Sprintf("size=%d", s.FileSize),
		build: func(g *gen) error {
			if err := g.file(0, "top.txt", 100); err != nil {
				return err
			}
			return g.file(1, "big.bin", s.FileSize)
		}}
	empty := &Dataset{Name: "empty", Layers: 1, build: func(g *gen) error { return g.dir(0, "w") }}
	copyup := &Dataset{Name: "copyup", Layers: 2, Params: "sizes=" + intsParam(s.CopyUpSizes),
		build: func(g *gen) error {
			if err := g.dir(0, "c"); err != nil {
				return err
			}
			for _, n := range s.CopyUpSizes {
				for i := 0; i < copyUpCount(n); i++ {
					if err := g.file(1, copyUpName(n, i), n); err != nil {
						return err
					}
				}
			}
			return nil
		}}
	meta := &Dataset{Name: "meta", Layers: 2, Params: fmt.Sprintf("files=%d", s.MetaFiles),
		build: func(g *gen) error {
			for _, d := range []string{"chmod", "touch"} {
				for i := 0; i < s.MetaFiles; i++ {
					if err := g.file(1, fmt.Sprintf("m/%s/f%06d", d, i), kib); err != nil {
						return err
					}
				}
			}
			return g.dir(0, "m")
		}}
	del := &Dataset{Name: "delete", Layers: 2, Params: fmt.Sprintf("files=%d", s.DeleteFiles),
		build: func(g *gen) error {
			for i := 0; i < 10; i++ {
				if err := g.file(0, fmt.Sprintf("del/keep%02d", i), 100); err != nil {
					return err
				}
			}
			for i := 0; i < s.DeleteFiles; i++ {
				if err := g.file(1, fmt.Sprintf("del/f%06d", i), g.rng.Int64N(kib)); err != nil {
					return err
				}
			}
			return nil
		}}
	own := &Dataset{Name: "chown", Layers: 2, Params: fmt.Sprintf("files=%d", s.ChownFiles),
		build: func(g *gen) error {
			if err := g.dir(0, "own"); err != nil {
				return err
			}
			for i := 0; i < s.ChownFiles; i++ {
				size := int64(0)
				if g.rng.IntN(10) >= 3 {
					size = 1 + g.rng.Int64N(8*kib)
				}
				if err := g.file(1, fmt.Sprintf("own/d%03d/f%06d", i/100, i), size); err != nil {
					return err
				}
			}
			return nil
		}}

	var tarPath string
	treeTop := filepath.Base(s.GoSrc)

	cases := []*Case{
		{Name: "walk", Group: "metadata", Data: tree, Cold: true,
			About: fmt.Sprintf("lstat every entry of a %d-file tree over 3 layers, caches dropped and freshly mounted (find -ls, du, a backup), then the same walk again on the same mount with every cache warm (a second build, ls -R)", s.TreeFiles),
			Run: func(r *Run) error {
				for _, m := range []string{"walk cold", "walk warm"} {
					if err := r.Time(Sample{Metric: m}, func(smp *Sample) error { return walkSample(smp, r.Dir) }); err != nil {
						return err
					}
				}
				return nil
			}},
		{Name: "readdir-stat", Group: "metadata", Data: bigdir,
			About: fmt.Sprintf("list a %d-entry directory split over two layers and lstat each entry (ls -l of a huge dir, a mail spool)", s.DirEntries),
			Run: func(r *Run) error {
				return r.Time(Sample{Metric: "readdir+stat"}, func(s *Sample) error {
					n, err := statDir(r.Path("big"))
					s.Ops, s.Check = n, fmt.Sprintf("%d entries", n)
					return err
				})
			}},
		{Name: "negative-lookup", Group: "metadata", Data: path,
			About: fmt.Sprintf("look %d command names up along a 6-directory PATH, most probes missing, first on a fresh mount then again (shell, exec, dynamic linker)", s.Commands),
			Run: func(r *Run) error {
				names := commandNames(r.Env.Cfg.Seed, s.Commands)
				for _, m := range []string{"negative lookup cold", "negative lookup warm"} {
					if err := r.Time(Sample{Metric: m}, func(smp *Sample) error {
						probes, found, err := probePath(r.Dir, names)
						smp.Ops, smp.Check = probes, fmt.Sprintf("%d found", found)
						return err
					}); err != nil {
						return err
					}
				}
				return nil
			}},
	}
	for _, n := range s.LayerCounts {
		cases = append(cases, &Case{Name: fmt.Sprintf("lookup-%d", n), Group: "layers", Data: layers, Bottom: n,
			About: fmt.Sprintf("stat %d files that live in the bottom of %d layers, each once on a fresh mount (deep image stacks)", s.Lookups, n),
			Run: func(r *Run) error {
				return r.Time(Sample{Metric: fmt.Sprintf("lookup, %d layers", n), Series: "lookup", X: float64(n)},
					func(smp *Sample) error {
						for i := 0; i < s.Lookups; i++ {
							var st unix.Stat_t
							if err := unix.Lstat(r.Path(fmt.Sprintf("d/f%06d", i)), &st); err != nil {
								return err
							}
						}
						smp.Ops, smp.Check = int64(s.Lookups), "all found"
						return nil
					})
			}})
	}
	cases = append(cases,
		&Case{Name: "seq-read", Group: "io", Data: big,
			About: fmt.Sprintf("read a %s lower file start to end in 1 MiB reads, lower in the page cache, fresh mount (loading a model, an image layer, a database)", sizeLabel(s.FileSize)),
			Run: func(r *Run) error {
				if _, err := readAll(filepath.Join(r.Data.Layer(1), "big.bin")); err != nil {
					return err
				}
				return r.Time(Sample{Metric: "sequential read"}, func(smp *Sample) error {
					n, err := readAll(r.Path("big.bin"))
					smp.Bytes, smp.Check = n, strconv.FormatInt(n, 10)
					return err
				})
			}},
		&Case{Name: "rand-read", Group: "io", Data: big,
			About: fmt.Sprintf("%d reads of 4 KiB at seeded random offsets of the same lower file (a database, a package index)", s.RandReads),
			Run: func(r *Run) error {
				if _, err := readAll(filepath.Join(r.Data.Layer(1), "big.bin")); err != nil {
					return err
				}
				return r.Time(Sample{Metric: "random 4k read"}, func(smp *Sample) error {
					n, err := randomReads(r.Path("big.bin"), s.FileSize, s.RandReads, r.Env.Cfg.Seed)
					smp.Ops, smp.Bytes, smp.Check = int64(s.RandReads), n, strconv.FormatInt(n, 10)
					return err
				})
			}},
		&Case{Name: "seq-write", Group: "io", Data: empty, Writes: true,
			About: fmt.Sprintf("write a new %s file in 1 MiB writes, then fsync (a download, a build artifact, a log)", sizeLabel(s.FileSize)),
			Run: func(r *Run) error {
				return r.Time(Sample{Metric: "sequential write+fsync"}, func(smp *Sample) error {
					n, err := writeFile(r.Path("w/out.bin"), s.FileSize, r.Env.Cfg.Seed)
					smp.Bytes, smp.Check = n, strconv.FormatInt(n, 10)
					return err
				})
			}},
	)
	cases = append(cases, &Case{Name: "copy-up", Group: "copyup", Data: copyup, Writes: true,
		About: "append one byte to lower files of each size (20 of the small ones, one of 64 MiB and up): the whole file is copied up first (a log or database in an image, apt updating a file)",
		Run: func(r *Run) error {
			// Copy the directory up first, so the first timed copy-up does
			// not pay for it.
			if err := os.WriteFile(r.Path("c/.dir"), nil, 0o644); err != nil {
				return err
			}
			for _, n := range s.CopyUpSizes {
				count := copyUpCount(n)
				err := r.Time(Sample{Metric: "copy-up " + sizeLabel(n), Series: "copy-up", X: float64(n), Ops: int64(count)},
					func(smp *Sample) error {
						for i := 0; i < count; i++ {
							size, err := appendByte(r.Path(copyUpName(n, i)))
							if err != nil {
								return err
							}
							smp.Check = strconv.FormatInt(size, 10)
						}
						return nil
					})
				if err != nil {
					return err
				}
			}
			return nil
		}})
	cases = append(cases,
		&Case{Name: "meta-copy-up", Group: "write", Data: meta, Writes: true,
			About: fmt.Sprintf("chmod %d lower files, then touch %d others: copy-ups without a data change (1 KiB files; metacopy is off, as by default)", s.MetaFiles, s.MetaFiles),
			Run: func(r *Run) error {
				if err := r.Time(Sample{Metric: "chmod copy-up"}, func(smp *Sample) error {
					return forEachFile(smp, r.Path("m/chmod"), s.MetaFiles, func(p string) error { return unix.Chmod(p, 0o600) })
				}); err != nil {
					return err
				}
				return r.Time(Sample{Metric: "touch copy-up"}, func(smp *Sample) error {
					return forEachFile(smp, r.Path("m/touch"), s.MetaFiles, func(p string) error { return unix.UtimesNano(p, nil) })
				})
			}},
		&Case{Name: "churn", Group: "write", Data: empty, Writes: true,
			About: fmt.Sprintf("create %d small files (512 B) in directories of 1000, rename half, delete all (a build's object files, a package manager's temp files)", s.ChurnFiles),
			Run:   func(r *Run) error { return churn(r, s.ChurnFiles) }},
		&Case{Name: "delete-lower", Group: "write", Data: del, Writes: true, NamesOnly: true,
			About: fmt.Sprintf("unlink %d lower files (each leaves a whiteout), then list their directory (rm in a container, apt removing a package)", s.DeleteFiles),
			Run: func(r *Run) error {
				if err := r.Time(Sample{Metric: "delete lower files"}, func(smp *Sample) error {
					for i := 0; i < s.DeleteFiles; i++ {
						if err := unix.Unlink(r.Path(fmt.Sprintf("del/f%06d", i))); err != nil {
							return err
						}
					}
					smp.Ops = int64(s.DeleteFiles)
					return nil
				}); err != nil {
					return err
				}
				return r.Time(Sample{Metric: "list after delete"}, func(smp *Sample) error {
					n, err := statDir(r.Path("del"))
					smp.Check = fmt.Sprintf("%d entries", n)
					return err
				})
			}},
		&Case{Name: "chown", Group: "write", Data: own, Writes: true,
			About: fmt.Sprintf("chown -R over a lower tree of %d files (30%% empty, others up to 8 KiB): every file is copied up (fixing ownership in a Dockerfile); to 1000:1000 as root, to the user itself on the rootless drivers", s.ChownFiles),
			Run: func(r *Run) error {
				uid, gid := r.Owner()
				return r.Time(Sample{Metric: "chown -R", Ops: int64(s.ChownFiles)}, func(smp *Sample) error {
					if err := r.tool("chown", "-R", fmt.Sprintf("%d:%d", uid, gid), r.Path("own")); err != nil {
						return err
					}
					var st unix.Stat_t
					err := unix.Lstat(r.Path("own/d000/f000000"), &st)
					smp.Check = "owner as asked"
					if int(st.Uid) != uid || int(st.Gid) != gid {
						smp.Check = fmt.Sprintf("owner %d:%d, asked %d:%d", st.Uid, st.Gid, uid, gid)
					}
					return err
				})
			}},
		&Case{Name: "go-tree", Group: "tree", Data: empty, Writes: true,
			About: fmt.Sprintf("untar %s (tarred once), grep -r it, rm -rf it, all in the upper (a build context, a checkout)", s.GoSrc),
			Prepare: func(env *Env) (err error) {
				tarPath, err = tarOnce(env, s.GoSrc)
				return err
			},
			Run: func(r *Run) error { return goTree(r, tarPath, treeTop) }},
		&Case{Name: "requests", Group: "requests", Data: empty, Writes: true,
			About: fmt.Sprintf("%d calls each of getxattr, open+close, lstat of a missing name (a new name each time) and create+unlink, every call a round trip to the daemon: the cost of the request loop itself, and the daemon's CPU per request", s.Requests),
			Run:   func(r *Run) error { return requestLoops(r, s.Requests) }},
	)
	return cases
}

// copyUpCount is how many files of a size the copy-up case appends to:
// enough small ones for a stable figure, one of the big ones.
func copyUpCount(size int64) int { return int(max(1, min(20, 64*mib/size))) }

func copyUpName(size int64, i int) string { return fmt.Sprintf("c/f%d-%02d", size, i) }

// walkSample walks dir into a sample.
func walkSample(s *Sample, dir string) error {
	n, err := walkTree(dir)
	s.Ops, s.Check = n, fmt.Sprintf("%d entries", n)
	return err
}

// buildTree spreads files over a directory tree (fan-out 8, about 25
// files a directory) in 3 layers: the bottom holds every directory and
// half the files, the middle 30%, the top 20%; one file in ten also has a
// shadowed copy in a lower layer.
func buildTree(g *gen, files int) error {
	ndirs := max(1, files/25)
	dirs := make([]string, ndirs)
	dirs[0] = "t"
	for i := 1; i < ndirs; i++ {
		dirs[i] = fmt.Sprintf("%s/d%04d", dirs[(i-1)/8], i)
	}
	for _, d := range dirs {
		if err := g.dir(2, d); err != nil {
			return err
		}
	}
	exts := []string{".go", ".c", ".h", ".txt", ".json", ".so", ""}
	for i := 0; i < files; i++ {
		rel := fmt.Sprintf("%s/f%06d%s", dirs[g.rng.IntN(ndirs)], i, exts[g.rng.IntN(len(exts))])
		layer := 2
		switch x := g.rng.IntN(10); {
		case x < 2:
			layer = 0
		case x < 5:
			layer = 1
		}
		if err := g.file(layer, rel, g.rng.Int64N(2*kib)); err != nil {
			return err
		}
		if layer < 2 && g.rng.IntN(10) == 0 {
			if err := g.file(layer+1, rel, g.rng.Int64N(2*kib)); err != nil {
				return err
			}
		}
	}
	return nil
}

// buildLayers makes n layers that all hold directory d with a few files of
// their own; the bottom one also holds the files looked up.
func buildLayers(g *gen, n, lookups int) error {
	for l := 0; l < n; l++ {
		for j := 0; j < 10; j++ {
			if err := g.file(l, fmt.Sprintf("d/x%03d-%02d", l, j), 0); err != nil {
				return err
			}
		}
	}
	for i := 0; i < lookups; i++ {
		if err := g.file(n-1, fmt.Sprintf("d/f%06d", i), 0); err != nil {
			return err
		}
	}
	return nil
}

// buildPath fills the PATH directories over 3 layers: three in four
// commands exist (most in usr/bin of the bottom layer, some in bin, a few
// in the upper layers' usr/local/bin and usr/sbin), the rest nowhere.
func buildPath(g *gen, commands int) error {
	for _, d := range pathDirs {
		if err := g.dir(2, d); err != nil {
			return err
		}
	}
	for i := 0; i < commands; i++ {
		name := fmt.Sprintf("cmd%06d", i)
		var err error
		switch x := g.rng.IntN(100); {
		case x < 50:
			err = g.file(2, "usr/bin/"+name, 64)
		case x < 65:
			err = g.file(2, "bin/"+name, 64)
		case x < 70:
			err = g.file(1, "usr/local/bin/"+name, 64)
		case x < 75:
			err = g.file(0, "usr/sbin/"+name, 64)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commandNames is the name list the PATH probe looks for: every command
// number the generator considered, in a seeded order.
func commandNames(seed uint64, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("cmd%06d", i)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	rng.Shuffle(n, func(i, j int) { names[i], names[j] = names[j], names[i] })
	return names
}

// probePath looks each name up along pathDirs as a shell does (lstat in
// each directory until found) and counts the lstat calls and the hits.
func probePath(root string, names []string) (probes, found int64, err error) {
	for _, name := range names {
		for _, d := range pathDirs {
			probes++
			var st unix.Stat_t
			err := unix.Lstat(root+"/"+d+"/"+name, &st)
			if err == nil {
				found++
				break
			}
			if err != unix.ENOENT {
				return probes, found, fmt.Errorf("lstat %s/%s: %w", d, name, err)
			}
		}
	}
	return probes, found, nil
}

// forEachFile applies fn to files f000000.. of dir and counts them.
func forEachFile(s *Sample, dir string, n int, fn func(string) error) error {
	for i := 0; i < n; i++ {
		if err := fn(fmt.Sprintf("%s/f%06d", dir, i)); err != nil {
			return err
		}
	}
	s.Ops, s.Check = int64(n), fmt.Sprintf("%d files", n)
	return nil
}

// requestLoops times n calls of each of four system calls that reach the
// daemon every time (no kernel cache answers them).
func requestLoops(r *Run, n int) error {
	file := r.Path("w/file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		return err
	}
	loops := []struct {
		metric string
		call   func(i int) error
	}{
		{"getxattr loop", func(int) error {
			_, err := unix.Lgetxattr(file, "user.missing", nil)
			if err == unix.ENODATA {
				return nil
			}
			return err
		}},
		{"open+close loop", func(int) error {
			fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			return unix.Close(fd)
		}},
		{"missing-name loop", func(i int) error {
			var st unix.Stat_t
			if err := unix.Lstat(r.Path(fmt.Sprintf("w/missing%d", i)), &st); err != unix.ENOENT {
				return fmt.Errorf("lstat of a missing name: %v", err)
			}
			return nil
		}},
		{"create+unlink loop", func(i int) error {
			p := r.Path(fmt.Sprintf("w/new%d", i))
			fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			if err := unix.Close(fd); err != nil {
				return err
			}
			return unix.Unlink(p)
		}},
	}
	for _, l := range loops {
		if err := r.Time(Sample{Metric: l.metric, Ops: int64(n)}, func(smp *Sample) error {
			for i := 0; i < n; i++ {
				if err := l.call(i); err != nil {
					return err
				}
			}
			smp.Check = fmt.Sprintf("%d calls", n)
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
