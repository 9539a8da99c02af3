// Package registrytest runs a real registry for tests: Debian's
// docker-registry (distribution 2.8) on a free loopback port with its
// storage in the test's temporary directory, plain HTTP or TLS with a CA
// the test makes (openssl) and htpasswd basic auth. Images get there with
// skopeo from OCI layouts that umoci builds out of busybox.
//
// A tool that is missing skips the test, except under CI=true, where it
// fails it: CI must run every registry test.
package registrytest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/internal/testenv"
)

// Require skips the test (fails it under CI=true) unless every tool is
// on PATH.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Skipf(t, "needs %s (make deps installs it)", tool)
		}
	}
}

// Skipf skips the test with the reason, or fails it when CI=true: CI
// has every tool, so a skip there is a broken machine, not a choice. It is
// testenv.Skipf, kept under this name for the callers.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Skipf(t, format, args...)
}

// Options configures Start.
type Options struct {
	// TLS serves HTTPS with a certificate for 127.0.0.1 signed by a CA
	// made for the test (Registry.CertDir holds it the way podman's
	// certs.d does).
	TLS bool
	// User and Password, when set, turn on htpasswd basic auth.
	User, Password string
}

// Registry is a running docker-registry.
type Registry struct {
	Host    string // 127.0.0.1:PORT
	Dir     string
	CertDir string // DIR with HOST/ca.crt, for --cert-dir (TLS only)
	CAFile  string
	Log     string // the registry's log file
}

func sh(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Start runs a registry until the test ends.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	Require(t, "docker-registry")
	dir := t.TempDir()
	r := &Registry{Dir: dir, Log: filepath.Join(dir, "registry.log")}
	// A free port: the kernel picks it, the registry takes it over (the
	// port is free for it unless another process grabs it in between).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.Host = ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), r.Host)
	if o.TLS {
		Require(t, "openssl")
		r.makeCerts(t)
		cfg += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	}
	if o.User != "" {
		Require(t, "htpasswd")
		pw := sh(t, dir, "htpasswd", "-Bbn", o.User, o.Password)
		imagetest.WriteFile(t, dir, "htpasswd", []byte(pw))
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	conf := imagetest.WriteFile(t, dir, "config.yml", []byte(cfg))
	log, err := os.Create(r.Log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-registry", "serve", conf)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = io.MultiWriter(log, pw), io.MultiWriter(log, pw)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close(); log.Close() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	// Ready when it says it listens; its log goes on to the file.
	sc := bufio.NewScanner(pr)
	ready := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening on") {
			ready = true
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if !ready {
		b, _ := os.ReadFile(r.Log)
		t.Fatalf("docker-registry did not start:\n%s", b)
	}
	return r
}

// makeCerts makes a CA and a server certificate for 127.0.0.1 with it.
func (r *Registry) makeCerts(t testing.TB) {
	t.Helper()
	d := r.Dir
	sh(t, d, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=unionmount test CA",
		"-keyout", "ca.key", "-out", "ca.crt")
	sh(t, d, "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
	imagetest.WriteFile(t, d, "ext.cnf", []byte("subjectAltName=IP:127.0.0.1\n"))
	sh(t, d, "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
		"-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
	r.CAFile = filepath.Join(d, "ca.crt")
	r.CertDir = filepath.Join(d, "certs.d")
	if err := os.MkdirAll(filepath.Join(r.CertDir, r.Host), 0o755); err != nil {
		t.Fatal(err)
	}
	imagetest.CopyFile(t, r.CAFile, filepath.Join(r.CertDir, r.Host, "ca.crt"))
}

// Seed copies the image src (a skopeo reference: oci:DIR:TAG) to
// REPO:TAG in the registry.
func (r *Registry) Seed(t testing.TB, src, repoTag string, creds ...string) {
	t.Helper()
	Require(t, "skopeo")
	args := []string{"copy", "--quiet", "--dest-tls-verify=false"}
	if len(creds) == 2 {
		args = append(args, "--dest-creds", creds[0]+":"+creds[1])
	}
	sh(t, "", "skopeo", append(args, src, "docker://"+r.Host+"/"+repoTag)...)
}

// Counter is a plain HTTP proxy in front of a registry that counts the
// requests it forwards, by method and kind (blobs, manifests, uploads).
type Counter struct {
	Host string
	mu   sync.Mutex
	n    map[string]int
}

// Counting starts a counting proxy to r (plain HTTP only).
func (r *Registry) Counting(t testing.TB) *Counter {
	t.Helper()
	target, _ := url.Parse("http://" + r.Host)
	c := &Counter{n: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		kind := "other"
		for _, k := range []string{"/blobs/uploads/", "/blobs/", "/manifests/"} {
			if strings.Contains(req.URL.Path, k) {
				kind = strings.Trim(k, "/")
				break
			}
		}
		c.mu.Lock()
		c.n[req.Method+" "+kind]++
		c.mu.Unlock()
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	c.Host = strings.TrimPrefix(srv.URL, "http://")
	return c
}

// Take returns the count of METHOD KIND ("GET blobs") since the last
// Take, and resets every count.
func (c *Counter) Take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

// BusyboxLayout builds, with umoci, an OCI layout whose tag "base" is a
// busybox rootfs (imagetest.BusyboxTar) in one layer plus extra layers,
// each adding /layer/N, and returns the layout directory.
func BusyboxLayout(t testing.TB, extra int) string {
	t.Helper()
	Require(t, "umoci", "tar")
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	sh(t, dir, "umoci", "init", "--layout", layout)
	sh(t, dir, "umoci", "new", "--image", layout+":base")
	sh(t, dir, "umoci", "config", "--image", layout+":base", "--config.cmd", "/bin/sh")
	rootfs := imagetest.WriteFile(t, dir, "rootfs.tar", imagetest.BusyboxTar(t,
		imagetest.Entry{Name: "etc/motd", Body: []byte("welcome\n")}))
	b := filepath.Join(dir, "bundle")
	sh(t, dir, "umoci", "unpack", "--image", layout+":base", b)
	sh(t, dir, "tar", "-C", filepath.Join(b, "rootfs"), "-xpf", rootfs)
	sh(t, dir, "umoci", "repack", "--image", layout+":base", b)
	for i := range extra {
		os.RemoveAll(b)
		sh(t, dir, "umoci", "unpack", "--image", layout+":base", b)
		p := filepath.Join(b, "rootfs", "layer")
		os.MkdirAll(p, 0o755)
		imagetest.WriteFile(t, p, fmt.Sprint(i+1), []byte(fmt.Sprintf("layer %d\n", i+1)))
		sh(t, dir, "umoci", "repack", "--image", layout+":base", b)
	}
	return layout
}
