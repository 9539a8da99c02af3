package lazy

import (
	"container/list"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Cache keeps verified chunks in one directory, one file per chunk named
// by its digest's hex, at most Max bytes in all (0: no bound), least
// recently used evicted first. Safe for concurrent use.
type Cache struct {
	dir string
	max int64

	mu    sync.Mutex // guards lru, index and size
	lru   *list.List // of *cacheEntry, most recently used at the front
	index map[digest.Digest]*list.Element
	size  int64
}

type cacheEntry struct {
	d    digest.Digest
	size int64
}

// OpenCache opens (creating it if needed) the cache in dir. The chunks a
// previous process left there are found again, their recency taken from
// their modification times.
func OpenCache(dir string, max int64) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	c := &Cache{dir: dir, max: max, lru: list.New(), index: map[digest.Digest]*list.Element{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	type found struct {
		e     cacheEntry
		mtime int64
	}
	var fs []found
	for _, e := range ents {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || d.Validate() != nil {
			// Debris of an interrupted Put (a temporary file), or junk.
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		fs = append(fs, found{cacheEntry{d, fi.Size()}, fi.ModTime().UnixNano()})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].mtime > fs[j].mtime })
	for _, f := range fs {
		e := f.e
		c.index[e.d] = c.lru.PushBack(&e)
		c.size += e.size
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	return c, nil
}

func (c *Cache) path(d digest.Digest) string { return filepath.Join(c.dir, d.Encoded()) }

// Size is the bytes cached.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// Get returns the chunk d if it is cached and still hashes to d (a file
// damaged on disk is dropped).
func (c *Cache) Get(d digest.Digest) ([]byte, bool) {
	c.mu.Lock()
	el, ok := c.index[d]
	if ok {
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	b, err := os.ReadFile(c.path(d))
	if err != nil || digest.FromBytes(b) != d {
		c.remove(d)
		return nil, false
	}
	return b, true
}

// Put stores the verified chunk b as d (written to a temporary file and
// renamed, so a crash leaves no partial chunk under a digest's name),
// evicting old chunks beyond the bound.
func (c *Cache) Put(d digest.Digest, b []byte) error {
	c.mu.Lock()
	_, ok := c.index[d]
	c.mu.Unlock()
	if ok {
		return nil
	}
	f, err := os.CreateTemp(c.dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), c.path(d))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("chunk cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.index[d]; !ok {
		c.index[d] = c.lru.PushFront(&cacheEntry{d, int64(len(b))})
		c.size += int64(len(b))
	}
	c.evictLocked()
	return nil
}

func (c *Cache) remove(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[d]; ok {
		c.removeLocked(el)
	}
}

func (c *Cache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.index, e.d)
	c.size -= e.size
	os.Remove(c.path(e.d))
}

// evictLocked drops least recently used chunks until the cache fits its
// bound. The newest chunk stays even when it alone is over the bound.
func (c *Cache) evictLocked() {
	for c.max > 0 && c.size > c.max && c.lru.Len() > 1 {
		c.removeLocked(c.lru.Back())
	}
}
