package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/registrytest"
	"github.com/unionmount/unionmount/internal/fstest"
)

// benchLayout writes an OCI layout of layers layers of about size bytes
// each (files of seeded random bytes, so gzip cannot shrink them and the
// transfer is the whole size), tagged "bench".
func benchLayout(b *testing.B, layers int, size int) string {
	b.Helper()
	dir := b.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		b.Fatal(err)
	}
	put := func(data []byte) v1.Descriptor {
		d := digest.FromBytes(data)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), data, 0o644); err != nil {
			b.Fatal(err)
		}
		return v1.Descriptor{Digest: d, Size: int64(len(data))}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var descs []v1.Descriptor
	var diffIDs []digest.Digest
	for i := range layers {
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		const files = 8
		for f := range files {
			body := make([]byte, size/files)
			for j := 0; j < len(body); j += 8 {
				v := rng.Uint64()
				for k := 0; k < 8 && j+k < len(body); k++ {
					body[j+k] = byte(v >> (8 * k))
				}
			}
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/%d/%d", i, f), Mode: 0o644, Size: int64(len(body)), ModTime: imagetest.T0, Typeflag: tar.TypeReg})
			tw.Write(body)
		}
		tw.Close()
		diffIDs = append(diffIDs, digest.FromBytes(tb.Bytes()))
		var gz bytes.Buffer
		zw, _ := layer.Compress(&gz, layer.Gzip)
		zw.Write(tb.Bytes())
		zw.Close()
		d := put(gz.Bytes())
		d.MediaType = v1.MediaTypeImageLayerGzip
		descs = append(descs, d)
	}
	cfg, _ := json.Marshal(v1.Image{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cd := put(cfg)
	cd.MediaType = v1.MediaTypeImageConfig
	m := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: cd, Layers: descs}
	m.SchemaVersion = 2
	mb, _ := json.Marshal(m)
	md := put(mb)
	md.MediaType = v1.MediaTypeImageManifest
	md.Annotations = map[string]string{v1.AnnotationRefName: "bench"}
	idx, _ := json.Marshal(v1.Index{Versioned: m.Versioned, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{md}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return dir
}

// BenchmarkPullVsPodman: pull of a 10-layer, ~100 MB image from a
// loopback registry, by unionctl and by podman (root, the same registry,
// its own temporary storage, overlay driver), side by side in one run,
// three times each, alternating. It reports the medians and their ratio
// (unionctl / podman: below 1 is faster), and writes them to
// $PULL_BENCH_OUT when set (make bench: bench/results/pull.txt).
func BenchmarkPullVsPodman(b *testing.B) {
	fstest.RequireRoot(b)
	registrytest.Require(b, "skopeo", "podman")
	reg := registrytest.Start(b, registrytest.Options{})
	reg.Seed(b, "oci:"+benchLayout(b, 10, 10<<20)+":bench", "bench:1")
	ref := reg.Host + "/bench:1"
	bin := imagetest.Unionctl(b)

	pdir := b.TempDir()
	storage := filepath.Join(pdir, "storage.conf")
	os.WriteFile(storage, []byte("[storage]\ndriver = \"overlay\"\ngraphroot = \""+filepath.Join(pdir, "root")+
		"\"\nrunroot = \""+filepath.Join(pdir, "run")+"\"\n"), 0o644)
	conf := filepath.Join(pdir, "containers.conf")
	os.WriteFile(conf, []byte("[engine]\nevents_logger = \"file\"\n"), 0o644)
	podman := func(args ...string) error {
		cmd := exec.Command("podman", append([]string{"--root", filepath.Join(pdir, "root"), "--runroot", filepath.Join(pdir, "run"),
			"--storage-driver", "overlay", "--tmpdir", filepath.Join(pdir, "tmp")}, args...)...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf, "CONTAINERS_STORAGE_CONF="+storage)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	b.Cleanup(func() {
		podman("rmi", "-af")
		unmountUnder(pdir)
	})

	timeIt := func(f func() error) time.Duration {
		exec.Command("sync").Run()
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var ours, theirs []time.Duration
	for range 3 {
		root := b.TempDir()
		ours = append(ours, timeIt(func() error {
			out, err := exec.Command(bin, "--root", root, "pull", "-q", "--tls-verify=false", ref).CombinedOutput()
			if err != nil {
				return fmt.Errorf("unionctl pull: %v\n%s", err, out)
			}
			return nil
		}))
		theirs = append(theirs, timeIt(func() error { return podman("pull", "-q", "--tls-verify=false", ref) }))
		if err := podman("rmi", "-af"); err != nil {
			b.Fatal(err)
		}
	}
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mo, mp := median(ours), median(theirs)
	ratio := mo.Seconds() / mp.Seconds()
	b.ReportMetric(mo.Seconds(), "unionctl-s")
	b.ReportMetric(mp.Seconds(), "podman-s")
	b.ReportMetric(ratio, "ratio")
	load, _ := os.ReadFile("/proc/loadavg")
	report := fmt.Sprintf("load average before the report: %s", load) + fmt.Sprintf("pull of a 10-layer, 100 MiB (gzip, incompressible) image from a loopback docker-registry 2.8, median of 3, alternating\n"+
		"unionctl pull  %.2fs  %v\npodman pull    %.2fs  %v  (root, overlay driver, own storage)\nratio unionctl/podman  %.2f\n",
		mo.Seconds(), ours, mp.Seconds(), theirs, ratio)
	b.Log("\n" + report)
	if p := os.Getenv("PULL_BENCH_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(report), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
	}
}
