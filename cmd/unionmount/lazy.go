package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image/lazy"
	"github.com/unionmount/unionmount/image/registry"
	"github.com/unionmount/unionmount/image/store"
)

// lazyDirRE is STORE/lazy/ID.
var lazyDirRE = regexp.MustCompile(`^(.+)/lazy/([0-9a-f]{64})$`)

// lazyCacheMax bounds each lazy layer's chunk cache: a layer's chunks
// all fit (the layer is about to become an ordinary one of that size),
// so eviction is for layers larger than this.
const lazyCacheMax = 4 << 30

// mountLazyLowers serves each lazy lower (see config.lazyLowers) as a
// read-only FUSE filesystem built from its TOC, in this process, and
// starts fetching its prefetch range. The union then opens those
// directories as any lower. It returns a function that unmounts them.
func mountLazyLowers(dirs []string, directMount bool, logger *log.Logger) (func(), error) {
	var servers []*fuse.Server
	unmount := func() {
		for _, s := range servers {
			if err := s.Unmount(); err != nil {
				logger.Printf("unmount lazy lower: %v", err)
			}
		}
	}
	for _, arg := range dirs {
		dir, layerDir, ok := strings.Cut(arg, "=")
		m := lazyDirRE.FindStringSubmatch(filepath.Clean(layerDir))
		if !ok || m == nil {
			unmount()
			return nil, fmt.Errorf("--lazy-lower %q: give MNT=STORE/lazy/ID (a lower and the lazy layer to serve there)", arg)
		}
		st, err := store.Open(store.Options{Root: m[1]})
		if err != nil {
			unmount()
			return nil, fmt.Errorf("--lazy-lower %q: %w", dir, err)
		}
		id := digest.NewDigestFromEncoded(digest.SHA256, m[2])
		l, err := registry.OpenStoredLazy(context.Background(), st, id, lazy.Options{}, lazyCacheMax)
		if err != nil {
			unmount()
			return nil, fmt.Errorf("--lazy-lower %q: %w", dir, err)
		}
		srv, err := lazy.Mount(dir, l, logger, directMount)
		if err != nil {
			unmount()
			return nil, fmt.Errorf("--lazy-lower %q: serve it: %w", dir, err)
		}
		servers = append(servers, srv)
		go func() {
			if _, err := l.Prefetch(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
				logger.Printf("lazy layer %s: %v", m[2][:12], err)
			}
		}()
	}
	return unmount, nil
}
