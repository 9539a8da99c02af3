package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/internal/fstest"
)

// imageOfFiles stores an image of n small files in 100 directories and a
// container over it with one changed file in its upper.
func imageOfFiles(b *testing.B, s *Store, n int) *Container {
	b.Helper()
	es := make([]imagetest.Entry, 0, n+100)
	for i := 0; i < n; i++ {
		es = append(es, imagetest.Entry{Name: fmt.Sprintf("d%02d/f%05d", i%100, i), Body: []byte(fmt.Sprintf("file %d\n", i))})
	}
	name := fmt.Sprintf("files:%d", n)
	mustImport(b, s, imagetest.Tar(b, es), name)
	c, err := s.CreateContainer(CreateOptions{Image: name, Cmd: []string{"x"}})
	if err != nil {
		b.Fatal(err)
	}
	err = fstest.Apply(s.Upper(c),
		fstest.CreateDir("d00", 0o755),
		fstest.CreateFile("d00/f00000", []byte("changed\n"), 0o644),
	)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func commitOnce(b *testing.B, s *Store, c *Container) {
	if _, err := s.Commit(c, nil, CommitOptions{}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCommit commits one changed file over a 10-file and a
// 10,000-file image. Commit reads only the upper, so both take about the
// same time.
//
//	go test ./image/store -run '^$' -bench Commit
func BenchmarkCommit(b *testing.B) { benchSizes(b, commitOnce) }

// BenchmarkCommitRatio times both sizes in one run, alternately, and
// reports the ratio of the 10,000-file commit to the 10-file one
// (ratio/op near 1 means the cost follows the change, not the image).
func BenchmarkCommitRatio(b *testing.B) { benchRatio(b, commitOnce) }

// benchSizes runs op on a container over a 10-file and a 10,000-file
// image (one changed file each, imageOfFiles).
func benchSizes(b *testing.B, op func(*testing.B, *Store, *Container)) {
	for _, n := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			s := newStore(b)
			c := imageOfFiles(b, s, n)
			for b.Loop() {
				op(b, s, c)
			}
		})
	}
}

// benchRatio runs op on both sizes alternately and reports the ratio of
// the big one's time to the small one's.
func benchRatio(b *testing.B, op func(*testing.B, *Store, *Container)) {
	s := newStore(b)
	small := imageOfFiles(b, s, 10)
	big := imageOfFiles(b, s, 10_000)
	var tSmall, tBig time.Duration
	for b.Loop() {
		t0 := time.Now()
		op(b, s, small)
		t1 := time.Now()
		op(b, s, big)
		tSmall += t1.Sub(t0)
		tBig += time.Since(t1)
	}
	b.ReportMetric(float64(tBig)/float64(tSmall), "ratio")
	b.ReportMetric(float64(tSmall.Nanoseconds())/float64(b.N)/1e3, "small-µs/op")
	b.ReportMetric(float64(tBig.Nanoseconds())/float64(b.N)/1e3, "big-µs/op")
}

// diffOnce diffs the container of imageOfFiles and checks the answer, so
// the benchmark cannot time a diff that found nothing.
func diffOnce(b *testing.B, s *Store, c *Container) {
	ch, err := s.Diff(c)
	if err != nil {
		b.Fatal(err)
	}
	if len(ch) != 2 || ch[0].Path != "/d00" || ch[1].Path != "/d00/f00000" || ch[0].Kind != layer.Changed || ch[1].Kind != layer.Changed {
		b.Fatalf("diff: %+v, want C /d00 and C /d00/f00000", ch)
	}
}

// BenchmarkDiff diffs a container with one changed file over a 10-file
// and a 10,000-file image. Diff walks the upper and asks the lowers about
// the paths it finds there, so both take about the same time.
//
//	go test ./image/store -run '^$' -bench Diff
func BenchmarkDiff(b *testing.B) { benchSizes(b, diffOnce) }

// BenchmarkDiffRatio is BenchmarkCommitRatio for diff.
func BenchmarkDiffRatio(b *testing.B) { benchRatio(b, diffOnce) }
