package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/registrytest"
	"github.com/unionmount/unionmount/internal/fstest"
)

// checkEstargzLayout checks the image tagged tag in the OCI layout dir as
// an eStargz image: every layer is gzip whose uncompressed digest is the
// config's diff_id, carries the TOC digest and uncompressed size
// annotations, and the estargz reader verifies its TOC against the
// annotated digest.
func checkEstargzLayout(t *testing.T, dir, tag string) {
	t.Helper()
	blob := func(d digest.Digest) string { return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()) }
	readJSON := func(p string, v any) {
		t.Helper()
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var idx v1.Index
	readJSON(filepath.Join(dir, "index.json"), &idx)
	var md digest.Digest
	for _, d := range idx.Manifests {
		if n := d.Annotations[v1.AnnotationRefName]; n == tag || strings.HasSuffix(n, ":"+tag) {
			md = d.Digest
		}
	}
	if md == "" {
		t.Fatalf("no manifest tagged %s in %s: %+v", tag, dir, idx.Manifests)
	}
	var m v1.Manifest
	readJSON(blob(md), &m)
	var cfg v1.Image
	readJSON(blob(m.Config.Digest), &cfg)
	if len(m.Layers) == 0 || len(m.Layers) != len(cfg.RootFS.DiffIDs) {
		t.Fatalf("%d layers, %d diff_ids", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, d := range m.Layers {
		if d.MediaType != v1.MediaTypeImageLayerGzip {
			t.Errorf("layer %d: media type %s", i, d.MediaType)
		}
		toc := digest.Digest(d.Annotations[layer.AnnotationTOCDigest])
		if toc.Validate() != nil || d.Annotations[layer.AnnotationUncompressedSize] == "" {
			t.Errorf("layer %d: annotations %v", i, d.Annotations)
			continue
		}
		f, err := os.Open(blob(d.Digest))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		h := digest.SHA256.Digester()
		n, err := io.Copy(h.Hash(), zr)
		if err != nil {
			t.Fatalf("layer %d: gunzip: %v", i, err)
		}
		if h.Digest() != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d: uncompressed digest %s, config diff_id %s", i, h.Digest(), cfg.RootFS.DiffIDs[i])
		}
		if want := d.Annotations[layer.AnnotationUncompressedSize]; want != itoa(n) {
			t.Errorf("layer %d: uncompressed size %d, annotated %s", i, n, want)
		}
		r, err := estargz.Open(io.NewSectionReader(f, 0, d.Size))
		if err != nil {
			t.Fatalf("layer %d: estargz.Open: %v", i, err)
		}
		if _, err := r.VerifyTOC(toc); err != nil {
			t.Errorf("layer %d: VerifyTOC: %v", i, err)
		}
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestRegistryPushEstargz: push --compression-format estargz writes an
// image whose layers are eStargz (TOC digest annotation, verified TOC) and
// which every other tool reads as an ordinary gzip image: skopeo copies
// it (checking blob digests), umoci unpacks it, podman runs it, and a
// plain unionctl pull runs it too. save --compression estargz writes the
// same kind of layout. An unknown format is one line and exit 2.
func TestRegistryPushEstargz(t *testing.T) {
	fstest.RequireFUSE(t)
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 1)+":base", "bb:1")
	host := reg.Host
	s := imagetest.NewSession(t)
	s.Must(nil, "pull", "-q", "--tls-verify=false", host+"/bb:1")

	r := s.Run(nil, "push", "--tls-verify=false", "--compression-format", "zstd:chunked", host+"/bb:1", host+"/bb:esgz")
	if r.Code != 2 || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 || !strings.Contains(r.Stderr, "estargz") {
		t.Errorf("unknown format: %v", r)
	}
	out := s.Must(nil, "push", "--tls-verify=false", "--compression-format", "estargz", host+"/bb:1", host+"/bb:esgz").Stdout
	t.Logf("push: %s", out)

	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	sh(t, "", "skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://"+host+"/bb:esgz", "oci:"+lay+":esgz")
	checkEstargzLayout(t, lay, "esgz")
	sh(t, dir, "umoci", "unpack", "--image", lay+":esgz", filepath.Join(dir, "b"))
	for name, want := range map[string]string{"etc/motd": "welcome\n", "layer/1": "layer 1\n"} {
		if b, err := os.ReadFile(filepath.Join(dir, "b", "rootfs", name)); err != nil || string(b) != want {
			t.Errorf("umoci unpack: /%s = %q, %v", name, b, err)
		}
	}

	if got := s.Must(nil, "pull", "-q", "--tls-verify=false", host+"/bb:esgz").Stdout; strings.TrimSpace(got) == "" {
		t.Errorf("pull printed no ID")
	}
	if got := s.Must(nil, "run", "--rm", host+"/bb:esgz", "cat", "/etc/motd", "/layer/1").Stdout; got != "welcome\nlayer 1\n" {
		t.Errorf("run of the pulled eStargz image: %q", got)
	}

	p := newPodman(t)
	p.must("pull", "--quiet", "--tls-verify=false", host+"/bb:esgz")
	if got := p.must("run", "--rm", "--network", "none", "--runtime", "runc", host+"/bb:esgz", "cat", "/layer/1"); got != "layer 1\n" {
		t.Errorf("podman run: %q", got)
	}

	saved := filepath.Join(dir, "saved")
	s.Must(nil, "save", "--compression", "estargz", "--layout", saved, host+"/bb:1")
	checkEstargzLayout(t, saved, "1")
}

// TestRegistryPullLazy: pull --lazy of an eStargz image fetches the
// config and, per layer, the footer and the TOC (2 Range requests), and
// registers the image as lazy: images and inspect say so (0% fetched).
// It runs at once, fetching a part of its blobs, and the merged tree of
// one of its containers equals that of the same image pulled fully. What
// needs whole layers (push, save) refuses it in one line. A plain pull
// then completes it (the lazy records go) and it runs. A manifest whose toc.digest is wrong refuses the lazy pull
// in one line and stores nothing. rmi removes a lazy image's records.
func TestRegistryPullLazy(t *testing.T) {
	fstest.RequireFUSE(t)
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 1)+":base", "bb:1")
	seed := imagetest.NewSession(t)
	seed.Must(nil, "pull", "-q", "--tls-verify=false", reg.Host+"/bb:1")
	seed.Must(nil, "push", "-q", "--tls-verify=false", "--compression-format", "estargz", reg.Host+"/bb:1", reg.Host+"/bb:esgz")

	c := reg.Counting(t)
	ref := c.Host + "/bb:esgz"
	s := imagetest.NewSession(t)
	out := s.Must(nil, "pull", "--lazy", "--tls-verify=false", ref).Stdout
	n := c.Take()
	t.Logf("pull --lazy: %q; requests %v", out, n)
	if !strings.Contains(out, "2 layers, 2 lazy") || n["GET blobs"] != 5 {
		t.Errorf("pull --lazy: %q, %d blob GETs; want 2 lazy layers and 5 GETs (config, footer and TOC of each layer)", out, n["GET blobs"])
	}
	if imgs := s.Must(nil, "images").Stdout; !strings.Contains(imgs, "(lazy, 0% fetched)") {
		t.Errorf("images does not mark the lazy image:\n%s", imgs)
	}
	var lazyInsp []struct {
		Size   int64
		Lazy   *lazyInspect
		Layers []layerInspect
	}
	if err := json.Unmarshal([]byte(s.Must(nil, "inspect", "--type", "image", ref).Stdout), &lazyInsp); err != nil {
		t.Fatal(err)
	}
	li := lazyInsp[0]
	if li.Lazy == nil || li.Lazy.Layers != 2 || li.Lazy.Fetched != "0%" || li.Lazy.TotalBytes == 0 || li.Size == 0 ||
		len(li.Layers) != 2 || !li.Layers[0].Lazy || li.Layers[0].Path != "" {
		t.Errorf("inspect of the lazy image: %+v", li)
	}
	if got := s.Must(nil, "run", "--rm", ref, "cat", "/etc/motd", "/layer/1").Stdout; got != "welcome\nlayer 1\n" {
		t.Errorf("run of the lazy image: %q", got)
	}
	n = c.Take()
	t.Logf("run of the lazy image: requests %v", n)
	if n["GET blobs"] == 0 {
		t.Errorf("run of a lazy image fetched nothing")
	}
	// ps -s counts the lazy layers by their TOC sizes, as images does.
	s.Must(nil, "create", "--name", "sized", ref, "true")
	var psj struct{ SizeRw, SizeRootFs int64 }
	if err := json.Unmarshal([]byte(s.Must(nil, "ps", "-a", "-s", "--format", "json").Stdout), &psj); err != nil {
		t.Fatal(err)
	}
	if psj.SizeRootFs-psj.SizeRw != li.Size {
		t.Errorf("ps -s of a lazy image's container: virtual %d, writable %d; want the image's %d between them", psj.SizeRootFs, psj.SizeRw, li.Size)
	}
	s.Must(nil, "rm", "sized")
	lazyTree := mergedTree(t, s, ref)
	full := imagetest.NewSession(t)
	full.Must(nil, "pull", "-q", "--tls-verify=false", ref)
	if d := fstest.Diff(mergedTree(t, full, ref), lazyTree); len(d) > 0 {
		t.Errorf("merged tree of the lazy image differs from the fully pulled one:\n%s", strings.Join(d, "\n"))
	}
	if m := lazyMounts(t, s.Root); len(m) != 0 {
		t.Errorf("lazy layer mounts left after the containers are gone: %v", m)
	}
	c.Take()
	for _, args := range [][]string{
		{"push", "--tls-verify=false", ref, c.Host + "/bb:again"},
		{"save", "--layout", filepath.Join(t.TempDir(), "l"), ref},
	} {
		r := s.Run(nil, args...)
		if r.Code == 0 || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 || !strings.Contains(r.Stderr, "unionctl pull "+ref) {
			t.Errorf("%s of a lazy image: %v; want one line that says to pull it", args[0], r)
		}
	}
	out = s.Must(nil, "pull", "--tls-verify=false", ref).Stdout
	n = c.Take()
	t.Logf("pull to complete: %q; requests %v", out, n)
	if n["GET blobs"] != 3 {
		t.Errorf("completing pull made %d blob GETs, want 3 (config, 2 layers)", n["GET blobs"])
	}
	if imgs := s.Must(nil, "images").Stdout; strings.Contains(imgs, "lazy") {
		t.Errorf("completed image still marked:\n%s", imgs)
	}
	if got := s.Must(nil, "run", "--rm", ref, "cat", "/etc/motd", "/layer/1").Stdout; got != "welcome\nlayer 1\n" {
		t.Errorf("run after completing: %q", got)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root, "lazy")); len(ents) != 0 {
		t.Errorf("lazy records left after completion: %v", ents)
	}

	// rmi of a lazy image removes its records.
	s2 := imagetest.NewSession(t)
	s2.Must(nil, "pull", "-q", "--lazy", "--tls-verify=false", ref)
	s2.Must(nil, "rmi", ref)
	if ents, _ := os.ReadDir(filepath.Join(s2.Root, "lazy")); len(ents) != 0 {
		t.Errorf("lazy records left after rmi: %v", ents)
	}

	// The same manifest with the first layer's toc.digest on the second.
	raw := sh(t, "", "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+reg.Host+"/bb:esgz")
	var m v1.Manifest
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	m.Layers[1].Annotations[layer.AnnotationTOCDigest] = m.Layers[0].Annotations[layer.AnnotationTOCDigest]
	bad, _ := json.Marshal(m)
	putManifest(t, reg.Host, "bb", "bad", bad)
	s3 := imagetest.NewSession(t)
	r := s3.Run(nil, "pull", "--lazy", "--tls-verify=false", reg.Host+"/bb:bad")
	t.Logf("tampered: %s", r.Stderr)
	if r.Code == 0 || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 || !strings.Contains(r.Stderr, "toc.digest") {
		t.Errorf("lazy pull with a wrong TOC digest: %v; want one line about the TOC digest", r)
	}
	if imgs := imagetest.Lines(s3.Must(nil, "images", "-q").Stdout); len(imgs) != 0 {
		t.Errorf("a refused lazy pull stored images: %v", imgs)
	}
	if ents, _ := os.ReadDir(filepath.Join(s3.Root, "lazy")); len(ents) != 0 {
		t.Errorf("a refused lazy pull stored lazy layers: %v", ents)
	}
}

// mergedTree is the tree of a new container of ref, mounted by unionctl
// mount (the container is removed again).
func mergedTree(t *testing.T, s *imagetest.Session, ref string) fstest.Tree {
	t.Helper()
	id := strings.TrimSpace(s.Must(nil, "create", ref, "true").Stdout)
	defer s.Run(nil, "rm", "-f", id)
	mnt := strings.TrimSpace(s.Must(nil, "mount", id).Stdout)
	defer s.Run(nil, "umount", id)
	tree, err := fstest.Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	// The container's init layer (mount points, /etc/hosts...) differs
	// between any two containers.
	initLayer := map[string]bool{".": true, "dev": true, "proc": true, "sys": true, "etc": true,
		"etc/hostname": true, "etc/hosts": true, "etc/resolv.conf": true}
	return tree.Filter(func(e fstest.Entry) bool { return !initLayer[e.Path] })
}

// lazyMounts are the mounts of lazy layers (fsname unionmount-lazy) in
// the store at root.
func lazyMounts(t *testing.T, root string) []string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "unionmount-lazy "+root+"/") {
			out = append(out, l)
		}
	}
	return out
}

// putManifest puts an OCI manifest at REPO:TAG of the registry at host
// (plain HTTP).
func putManifest(t *testing.T, host, repo, tag string, raw []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+host+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(raw))
	req.Header.Set("Content-Type", v1.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest %s:%s: %s", repo, tag, resp.Status)
	}
}

// faultProxy is a reverse proxy to a registry that can fail: "down"
// drops every connection (a registry gone), "tamper" answers blob range
// requests with a well-formed gzip member of other bytes.
type faultProxy struct {
	host string
	mode atomic.Value // string
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	u, _ := url.Parse("http://" + target)
	p := &faultProxy{}
	p.mode.Store("")
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p.mode.Load().(string) {
		case "down":
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		case "tamper":
			var start, end int64
			if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end); err == nil && strings.Contains(r.URL.Path, "/blobs/") {
				var b bytes.Buffer
				zw := gzip.NewWriter(&b)
				zw.Write(bytes.Repeat([]byte("X"), int(end-start+1)))
				zw.Close()
				body := make([]byte, end-start+1)
				copy(body, b.Bytes())
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", start, end))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(body)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// TestRegistryLazyFaults: through a container's mount of a lazy image,
// with the registry gone a read of data not fetched yet fails with EIO
// while fetched data is still served, and the same read works when the
// registry is back, without a remount; a chunk the registry tampers with
// fails with EIO, never other bytes. A daemon started again (umount,
// mount) serves what its cache holds with the registry gone.
func TestRegistryLazyFaults(t *testing.T) {
	fstest.RequireFUSE(t)
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 1)+":base", "bb:1")
	seed := imagetest.NewSession(t)
	seed.Must(nil, "pull", "-q", "--tls-verify=false", reg.Host+"/bb:1")
	seed.Must(nil, "push", "-q", "--tls-verify=false", "--compression-format", "estargz", reg.Host+"/bb:1", reg.Host+"/bb:esgz")
	p := newFaultProxy(t, reg.Host)
	ref := p.host + "/bb:esgz"
	s := imagetest.NewSession(t)
	s.Must(nil, "pull", "-q", "--lazy", "--tls-verify=false", ref)
	id := strings.TrimSpace(s.Must(nil, "create", ref, "true").Stdout)
	mnt := strings.TrimSpace(s.Must(nil, "mount", id).Stdout)
	t.Cleanup(func() { s.Run(nil, "umount", id) })

	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(mnt, name))
		return string(b), err
	}
	if got, err := read("etc/motd"); err != nil || got != "welcome\n" {
		t.Fatalf("etc/motd: %q, %v", got, err)
	}
	p.mode.Store("down")
	if got, err := read("layer/1"); !errors.Is(err, syscall.EIO) {
		t.Errorf("registry gone, unfetched layer/1: %q, %v; want EIO", got, err)
	}
	if got, err := read("etc/motd"); err != nil || got != "welcome\n" {
		t.Errorf("registry gone, fetched etc/motd: %q, %v", got, err)
	}
	p.mode.Store("")
	if got, err := read("layer/1"); err != nil || got != "layer 1\n" {
		t.Errorf("registry back: layer/1 %q, %v", got, err)
	}
	p.mode.Store("tamper")
	if got, err := read("etc/group"); !errors.Is(err, syscall.EIO) || got != "" {
		t.Errorf("tampered chunk: %q, %v; want EIO and no bytes", got, err)
	}
	// A new daemon finds the cache: fetched files read with the registry
	// gone.
	p.mode.Store("down")
	s.Must(nil, "umount", id)
	mnt = strings.TrimSpace(s.Must(nil, "mount", id).Stdout)
	for name, want := range map[string]string{"etc/motd": "welcome\n", "layer/1": "layer 1\n"} {
		if got, err := read(name); err != nil || got != want {
			t.Errorf("after a remount with the registry gone: %s = %q, %v", name, got, err)
		}
	}
	p.mode.Store("")
	if got, err := read("etc/group"); err != nil || !strings.HasPrefix(got, "root:") {
		t.Errorf("etc/group once the registry is honest again: %q, %v", got, err)
	}
}
