package lazy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestCache: Put then Get; the bound evicts the least recently used (a
// Get counts as use); a reopened cache finds its chunks, with recency
// from their mtimes; a chunk damaged on disk is dropped, not served; a
// temporary file left by a crash is removed.
func TestCache(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCache(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	a, b, d := []byte("aaaa"), []byte("bbbb"), []byte("dddd")
	da, db, dd := digest.FromBytes(a), digest.FromBytes(b), digest.FromBytes(d)
	for _, x := range [][]byte{a, b} {
		if err := c.Put(digest.FromBytes(x), x); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok := c.Get(da); !ok || string(got) != "aaaa" {
		t.Fatalf("Get a: %q %v", got, ok)
	}
	c.Put(dd, d) // 12 bytes > 10: b, least recently used, goes
	if _, ok := c.Get(db); ok || c.Size() != 8 {
		t.Errorf("after eviction: b cached %v, size %d; want b gone, 8", ok, c.Size())
	}

	// Reopen: a is older than d on disk.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, da.Encoded()), old, old)
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("partial"), 0o600)
	c2, err := OpenCache(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-123")); !os.IsNotExist(err) {
		t.Errorf("temporary file kept: %v", err)
	}
	if got, ok := c2.Get(dd); !ok || string(got) != "dddd" || c2.Size() != 8 {
		t.Errorf("reopened: d %q %v, size %d", got, ok, c2.Size())
	}
	c2.Put(db, b) // a is the oldest now
	if _, ok := c2.Get(da); ok {
		t.Error("reopened cache evicted by other than recency")
	}
	os.WriteFile(filepath.Join(dir, dd.Encoded()), []byte("dxdd"), 0o600)
	if got, ok := c2.Get(dd); ok {
		t.Errorf("damaged chunk served: %q", got)
	}
}
