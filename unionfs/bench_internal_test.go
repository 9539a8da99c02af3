package unionfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Benchmarks of the hot union paths without FUSE: resolve (one name across
// the layers, ovl_lookup), merge (a merged listing, ovl_dir_read_merged),
// each with the lookup cache on and off. The end-to-end figures are in
// bench/ (make bench); these isolate our own code from the kernel round trip.

// benchLayers writes n layers that all hold directory d: the bottom layer
// has files f000000.. (bottomFiles of them), every layer has perLayer files
// of its own, and every other layer shadows a few bottom names or deletes
// one with an AUFS ".wh." whiteout (no root needed).
func benchLayers(b *testing.B, n, bottomFiles, perLayer int) []string {
	b.Helper()
	root := b.TempDir()
	var dirs []string
	for l := 0; l < n; l++ {
		d := filepath.Join(root, fmt.Sprintf("l%03d", l), "d")
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		touch := func(name string) {
			if err := os.WriteFile(filepath.Join(d, name), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		for j := 0; j < perLayer; j++ {
			touch(fmt.Sprintf("x%03d-%04d", l, j))
		}
		if l == n-1 {
			for i := 0; i < bottomFiles; i++ {
				touch(fmt.Sprintf("f%06d", i))
			}
		} else if l%2 == 1 {
			touch(fmt.Sprintf("f%06d", l))
			touch(fmt.Sprintf(".wh.f%06d", l+1))
		}
		dirs = append(dirs, filepath.Dir(d))
	}
	return dirs
}

// benchUnion opens a union over lowers and returns it with the layers of
// its directory d.
func benchUnion(b *testing.B, lowers []string, cache int64) (*unionFS, *dirAt) {
	b.Helper()
	u, err := newUnion(Options{Lowers: lowers, LookupCacheEntries: cache, SquashUID: -1, SquashGID: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(u.close)
	pd := u.at(u.root)
	res, found, err := u.resolve(pd, "d")
	pd.done()
	if err != nil || !found {
		b.Fatalf("resolve d: found=%v err=%v", found, err)
	}
	d := u.newNode(res.top, res.dirs)
	d.parent, d.name = u.root, "d"
	dpd := u.atDirs(d, res.dirs)
	b.Cleanup(dpd.done)
	return u, dpd
}

func cacheModes() []struct {
	name    string
	entries int64
} {
	return []struct {
		name    string
		entries int64
	}{{"cache=off", 0}, {"cache=on", 1 << 20}}
}

// BenchmarkResolve looks up a name that lives in the bottom layer, as the
// lookup-N case of unionbench does, for several stack depths.
func BenchmarkResolve(b *testing.B) {
	const files = 1000
	for _, n := range []int{1, 8, 32, 128} {
		lowers := benchLayers(b, n, files, 10)
		for _, m := range cacheModes() {
			b.Run(fmt.Sprintf("layers=%d/%s", n, m.name), func(b *testing.B) {
				u, pd := benchUnion(b, lowers, m.entries)
				names := make([]string, files)
				for i := range names {
					names[i] = fmt.Sprintf("f%06d", i)
				}
				warmCache(b, u, pd, names[0])
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, _, err := u.resolve(pd, names[i%files]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkResolveMissing looks up names no layer has (PATH probing).
func BenchmarkResolveMissing(b *testing.B) {
	lowers := benchLayers(b, 8, 1000, 10)
	for _, m := range cacheModes() {
		b.Run(m.name, func(b *testing.B) {
			u, pd := benchUnion(b, lowers, m.entries)
			warmCache(b, u, pd, "nothere")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, found, err := u.resolve(pd, "nothere"); err != nil || found {
					b.Fatalf("found=%v err=%v", found, err)
				}
			}
		})
	}
}

// BenchmarkMerge builds the listing of a directory whose entries are split
// over layers (the readdir-stat case of unionbench, without the stats).
func BenchmarkMerge(b *testing.B) {
	for _, shape := range []struct{ layers, bottom, per int }{{2, 10000, 10000}, {8, 5000, 100}} {
		lowers := benchLayers(b, shape.layers, shape.bottom, shape.per)
		for _, m := range cacheModes() {
			b.Run(fmt.Sprintf("layers=%d/entries=%d/%s", shape.layers, shape.bottom+shape.layers*shape.per, m.name), func(b *testing.B) {
				u, pd := benchUnion(b, lowers, m.entries)
				if _, err := u.merge(pd); err != nil {
					b.Fatal(err)
				}
				if u.cache != nil {
					u.cache.c.Wait()
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := u.merge(pd); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// warmCache resolves once and waits for ristretto to admit what it set, so
// the timed loop measures hits, not the first directory reads.
func warmCache(b *testing.B, u *unionFS, pd *dirAt, name string) {
	b.Helper()
	if _, _, err := u.resolve(pd, name); err != nil {
		b.Fatal(err)
	}
	if u.cache != nil {
		u.cache.c.Wait()
	}
}
