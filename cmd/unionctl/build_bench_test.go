package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkBuildRebuild builds a Dockerfile that copies a 10,000-file
// context and runs a 5-second RUN, then builds it again with nothing
// changed, and reports the rebuild's time over the first build's as
// ratio (the goal: under 0.05). The rebuild finds every step in the
// cache: it checksums the context and reads image records, and mounts
// and runs nothing.
//
//	go test ./cmd/unionctl -run '^$' -bench BuildRebuild -benchtime 1x
func BenchmarkBuildRebuild(b *testing.B) {
	requireBuild(b)
	s := plainSession(b)
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox:base\nCOPY . /ctx/\nRUN sleep 5\nCMD [\"true\"]\n"), 0o644)
	for i := 0; i < 10_000; i++ {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%05d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(fmt.Sprintf("file %d\n", i)), 0o644)
	}
	var first, again time.Duration
	for b.Loop() {
		s.Run(nil, "rmi", "bench:1") // the previous round's image and steps
		t0 := time.Now()
		s.Must(nil, "build", "--no-cache", "-q", "-t", "bench:1", dir)
		t1 := time.Now()
		out := s.Must(nil, "build", "-t", "bench:1", dir).Stdout
		again += time.Since(t1)
		first += t1.Sub(t0)
		if strings.Count(out, "Using cache") != 3 {
			b.Fatalf("the rebuild ran a step:\n%s", out)
		}
	}
	b.ReportMetric(float64(again)/float64(first), "ratio")
	b.ReportMetric(first.Seconds()/float64(b.N), "first-s/op")
	b.ReportMetric(again.Seconds()/float64(b.N), "rebuild-s/op")
}
