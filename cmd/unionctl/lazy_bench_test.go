package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/registrytest"
	"github.com/unionmount/unionmount/internal/fstest"
)

// throttle is a reverse proxy to a registry that adds a delay to every
// request and limits the bandwidth of response bodies (shared by all
// connections, as one link), and counts the body bytes it forwards.
type throttle struct {
	host    string
	delay   time.Duration
	bytesPS float64

	mu    sync.Mutex
	next  time.Time // when the link is free again
	bytes int64
}

func newThrottle(tb testing.TB, target string, delay time.Duration, bitsPerSecond float64) *throttle {
	u, _ := url.Parse("http://" + target)
	th := &throttle{delay: delay, bytesPS: bitsPerSecond / 8}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(th.delay)
		rp.ServeHTTP(&throttledWriter{ResponseWriter: w, th: th}, r)
	}))
	tb.Cleanup(srv.Close)
	th.host = strings.TrimPrefix(srv.URL, "http://")
	return th
}

func (th *throttle) take() int64 {
	th.mu.Lock()
	defer th.mu.Unlock()
	n := th.bytes
	th.bytes = 0
	return n
}

type throttledWriter struct {
	http.ResponseWriter
	th *throttle
}

func (w *throttledWriter) Write(b []byte) (int, error) {
	th := w.th
	th.mu.Lock()
	now := time.Now()
	if th.next.Before(now) {
		th.next = now
	}
	th.next = th.next.Add(time.Duration(float64(len(b)) / th.bytesPS * float64(time.Second)))
	until := th.next
	th.bytes += int64(len(b))
	th.mu.Unlock()
	time.Sleep(time.Until(until))
	return w.ResponseWriter.Write(b)
}

// BenchmarkLazyVsFullPull: start-up of a container (run a command that
// reads one small file) of a busybox image with three 30 MiB layers of
// incompressible data, pushed as eStargz, through a link of 100 Mbit/s
// with 10 ms per request: pull + run against pull --lazy + run, from an
// empty store each time, three times each, alternating. It reports the
// medians, their ratio (full / lazy: above 1 is the lazy gain) and the
// blob bytes each fetched, and writes them to $LAZY_BENCH_OUT when set
// (make bench: bench/results/lazy.txt).
func BenchmarkLazyVsFullPull(b *testing.B) {
	fstest.RequireRoot(b)
	fstest.RequireFUSE(b)
	registrytest.Require(b, "skopeo", "umoci")
	reg := registrytest.Start(b, registrytest.Options{})
	reg.Seed(b, "oci:"+registrytest.BusyboxLayout(b, 0)+":base", "bb:1")
	bin := imagetest.Unionctl(b)
	seed := imagetest.NewSession(b)
	seed.Must(nil, "pull", "-q", "--tls-verify=false", reg.Host+"/bb:1")
	// Three layers of incompressible data over busybox, one COPY each.
	ctx := b.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	dockerfile := "FROM " + reg.Host + "/bb:1\n"
	for i := range 3 {
		data := make([]byte, 30<<20)
		for j := 0; j < len(data); j += 8 {
			binary.LittleEndian.PutUint64(data[j:], rng.Uint64())
		}
		imagetest.WriteFile(b, ctx, fmt.Sprintf("data%d", i), data)
		dockerfile += fmt.Sprintf("COPY data%d /data/%d\n", i, i)
	}
	imagetest.WriteFile(b, ctx, "Dockerfile", []byte(dockerfile))
	seed.Must(nil, "build", "-q", "-t", reg.Host+"/all:1", ctx)
	seed.Must(nil, "push", "-q", "--tls-verify=false", "--compression-format", "estargz", reg.Host+"/all:1", reg.Host+"/all:esgz")

	th := newThrottle(b, reg.Host, 10*time.Millisecond, 100e6)
	ref := th.host + "/all:esgz"
	startUp := func(lazy bool) (time.Duration, int64) {
		root := b.TempDir()
		s := &imagetest.Session{T: b, Bin: bin, Root: root, Unionmount: fstest.Binary(b)}
		defer s.Run(nil, "rmi", "-f", ref)
		pull := []string{"pull", "-q", "--tls-verify=false", ref}
		if lazy {
			pull = []string{"pull", "-q", "--lazy", "--tls-verify=false", ref}
		}
		th.take()
		start := time.Now()
		s.Must(nil, pull...)
		if got := s.Must(nil, "run", "--rm", ref, "cat", "/etc/motd").Stdout; got != "welcome\n" {
			b.Fatalf("run: %q", got)
		}
		return time.Since(start), th.take()
	}
	var full, lazy []time.Duration
	var fullBytes, lazyBytes int64
	for range 3 {
		exec.Command("sync").Run()
		d, n := startUp(false)
		full, fullBytes = append(full, d), n
		exec.Command("sync").Run()
		d, n = startUp(true)
		lazy, lazyBytes = append(lazy, d), n
	}
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mf, ml := median(full), median(lazy)
	ratio := mf.Seconds() / ml.Seconds()
	b.ReportMetric(mf.Seconds(), "full-s")
	b.ReportMetric(ml.Seconds(), "lazy-s")
	b.ReportMetric(ratio, "ratio")
	load, _ := os.ReadFile("/proc/loadavg")
	report := fmt.Sprintf("load average before the report: %s", load) +
		fmt.Sprintf("start-up (pull, then run cat /etc/motd) of busybox + 3 x 30 MiB incompressible layers, eStargz, "+
			"through 100 Mbit/s and 10 ms per request to a loopback docker-registry 2.8, median of 3, alternating\n"+
			"pull + run          %.2fs  %v  %d bytes fetched\npull --lazy + run   %.2fs  %v  %d bytes fetched\nratio full/lazy  %.1f\n",
			mf.Seconds(), full, fullBytes, ml.Seconds(), lazy, lazyBytes, ratio)
	b.Log("\n" + report)
	if p := os.Getenv("LAZY_BENCH_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(report), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
	}
}
