package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/registrytest"
	"github.com/unionmount/unionmount/internal/fstest"
)

// skopeoDigest is the manifest digest skopeo sees at a registry
// reference.
func skopeoDigest(t *testing.T, ref string, args ...string) string {
	t.Helper()
	var info struct {
		Digest string
		Layers []string
	}
	out := sh(t, "", "skopeo", append(append([]string{"inspect"}, args...), "docker://"+ref)...)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	return info.Digest
}

func inspectImage(t *testing.T, s *imagetest.Session, ref string) imageInspect {
	t.Helper()
	var insp []imageInspect
	if err := json.Unmarshal([]byte(s.Must(nil, "inspect", "--type", "image", ref).Stdout), &insp); err != nil {
		t.Fatal(err)
	}
	return insp[0]
}

// TestRegistryPullRunCommitPush is the whole session against a real
// registry (plain HTTP, through a proxy that counts requests): pull a
// 3-layer busybox image skopeo put there, pull it again (no blob
// fetched), run it, push it unchanged to another repository (same
// manifest digest, no blob uploaded: HEAD and cross-repository mount),
// commit a container and push that (only the new layer and the config
// are uploaded), then read it back with skopeo and umoci and run it with
// podman.
func TestRegistryPullRunCommitPush(t *testing.T) {
	fstest.RequireFUSE(t)
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 2)+":base", "bb:1")
	c := reg.Counting(t)
	host := c.Host
	s := imagetest.NewSession(t)
	ref := host + "/bb:1"

	out := s.Must(nil, "pull", "--tls-verify=false", ref).Stdout
	n := c.Take()
	t.Logf("first pull: %q; requests %v", out, n)
	if n["GET blobs"] != 4 {
		t.Errorf("first pull fetched %d blobs, want 4 (config and 3 layers)", n["GET blobs"])
	}
	out = s.Must(nil, "pull", ref, "--tls-verify=false").Stdout
	n = c.Take()
	t.Logf("second pull: %q; requests %v", out, n)
	if n["GET blobs"] != 0 {
		t.Errorf("second pull fetched %d blobs, want 0", n["GET blobs"])
	}
	if !strings.Contains(out, "0 blobs fetched") {
		t.Errorf("second pull said %q", out)
	}

	want := skopeoDigest(t, reg.Host+"/bb:1", "--tls-verify=false")
	insp := inspectImage(t, s, ref)
	if !slices.Equal(insp.RepoDigests, []string{host + "/bb@" + want}) || !slices.Equal(insp.RepoTags, []string{ref}) {
		t.Errorf("RepoTags %v RepoDigests %v, want [%s] and the digest skopeo sees, %s", insp.RepoTags, insp.RepoDigests, ref, want)
	}
	if imgs := s.Must(nil, "images").Stdout; !strings.Contains(imgs, host+"/bb ") {
		t.Errorf("images does not show the registry name:\n%s", imgs)
	}
	if got := s.Must(nil, "run", "--rm", ref, "cat", "/etc/motd", "/layer/1", "/layer/2").Stdout; got != "welcome\nlayer 1\nlayer 2\n" {
		t.Errorf("run: %q", got)
	}

	// Unchanged, to another repository: same digest, nothing uploaded.
	out = s.Must(nil, "push", ref, host+"/copy/bb:1", "--tls-verify=false").Stdout
	n = c.Take()
	t.Logf("push unchanged: %q; requests %v", out, n)
	if !strings.Contains(out, want) || n["PATCH blobs/uploads"]+n["PUT blobs/uploads"] != 0 {
		t.Errorf("unchanged push: %q, requests %v; want digest %s and no upload", out, n, want)
	}
	if got := skopeoDigest(t, reg.Host+"/copy/bb:1", "--tls-verify=false"); got != want {
		t.Errorf("pushed copy has digest %s, want %s", got, want)
	}

	// A commit: one new layer and a config go up, once.
	s.Must(nil, "run", "--name", "c1", ref, "sh", "-c", "echo new > /new && rm /etc/motd")
	s.Must(nil, "commit", "c1", host+"/bb:2")
	out = s.Must(nil, "push", "--tls-verify=false", host+"/bb:2").Stdout
	n = c.Take()
	t.Logf("push commit: %q; requests %v", out, n)
	if n["PUT blobs/uploads"] != 2 {
		t.Errorf("push of a commit uploaded %d blobs, want 2 (the new layer and the config)", n["PUT blobs/uploads"])
	}
	s.Must(nil, "push", "--tls-verify=false", host+"/bb:2")
	if n = c.Take(); n["PUT blobs/uploads"] != 0 {
		t.Errorf("second push of the commit uploaded %d blobs", n["PUT blobs/uploads"])
	}

	// Read back: skopeo copies it to a layout, umoci unpacks it.
	dir := t.TempDir()
	sh(t, "", "skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://"+reg.Host+"/bb:2", "oci:"+filepath.Join(dir, "lay")+":2")
	sh(t, dir, "umoci", "unpack", "--image", filepath.Join(dir, "lay")+":2", filepath.Join(dir, "b"))
	root := filepath.Join(dir, "b", "rootfs")
	if b, err := os.ReadFile(filepath.Join(root, "new")); err != nil || string(b) != "new\n" {
		t.Errorf("umoci unpack: /new = %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/motd")); !os.IsNotExist(err) {
		t.Errorf("umoci unpack: /etc/motd should be deleted: %v", err)
	}

	// podman pulls it from the registry and runs it.
	p := newPodman(t)
	p.must("pull", "--quiet", "--tls-verify=false", reg.Host+"/bb:2")
	got := p.must("run", "--rm", "--network", "none", "--runtime", "runc", reg.Host+"/bb:2", "sh", "-c", "cat /new /layer/2; ls /etc/motd 2>&1 || true")
	if got != "new\nlayer 2\nls: /etc/motd: No such file or directory\n" {
		t.Errorf("podman run of the pushed commit: %q", got)
	}
}

// TestRegistryTLSAuthLogin: a registry with TLS (a CA of the test's) and
// htpasswd auth. Without credentials a pull fails and leaves the store as
// it was; login with a wrong password fails without printing it; login
// with the right one writes the auth file; pull and push work; logout
// removes the credentials.
func TestRegistryTLSAuthLogin(t *testing.T) {
	fstest.RequireRoot(t)
	imagetest.RequireBusybox(t)
	registrytest.Require(t, "skopeo", "umoci")
	const user, pass = "alice", "s3cret-pw"
	reg := registrytest.Start(t, registrytest.Options{TLS: true, User: user, Password: pass})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 0)+":base", "bb:1", user, pass)
	s := imagetest.NewSession(t)
	authfile := filepath.Join(t.TempDir(), "auth.json")
	flags := []string{"--cert-dir", reg.CertDir, "--authfile", authfile}
	ref := reg.Host + "/bb:1"
	s.Must(nil, "images")
	before := imagetest.StoreFiles(t, s.Root)

	r := s.Run(nil, append([]string{"pull", ref}, flags...)...)
	if r.Code != 1 || !strings.Contains(r.Stderr, "unauthorized") || len(imagetest.Lines(r.Stderr)) != 1 {
		t.Errorf("pull without credentials: %v", r)
	}
	r = s.Run(nil, "pull", ref, "--authfile", authfile)
	if r.Code != 1 || !strings.Contains(r.Stderr, "certificate") {
		t.Errorf("pull without the CA: %v", r)
	}
	if after := imagetest.StoreFiles(t, s.Root); !slices.Equal(before, after) {
		t.Errorf("failed pulls changed the store:\n%v\n%v", before, after)
	}

	r = s.Run([]byte("wrong-pw\n"), append([]string{"login", "-u", user, "--password-stdin", reg.Host}, flags...)...)
	if r.Code == 0 || strings.Contains(r.Stdout+r.Stderr, "wrong-pw") {
		t.Errorf("login with a wrong password: %v", r)
	}
	if _, err := os.Stat(authfile); !os.IsNotExist(err) {
		t.Errorf("failed login wrote the auth file: %v", err)
	}
	r = s.Must([]byte(pass+"\n"), append([]string{"login", reg.Host, "-u", user, "--password-stdin"}, flags...)...)
	if strings.Contains(r.Stdout+r.Stderr, pass) {
		t.Errorf("login printed the password: %v", r)
	}
	if st, err := os.Stat(authfile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("auth file: %v, %v", st, err)
	}
	// skopeo reads what login wrote.
	sh(t, "", "skopeo", "inspect", "--authfile", authfile, "--cert-dir", filepath.Join(reg.CertDir, reg.Host), "docker://"+ref)

	s.Must(nil, append([]string{"pull", ref}, flags...)...)
	s.Must(nil, append([]string{"push", ref, reg.Host + "/copy/bb:1"}, flags...)...)
	if got, want := skopeoDigest(t, reg.Host+"/copy/bb:1", "--authfile", authfile, "--tls-verify=false"),
		skopeoDigest(t, ref, "--authfile", authfile, "--tls-verify=false"); got != want {
		t.Errorf("pushed copy has digest %s, want %s", got, want)
	}

	s.Must(nil, "logout", "--authfile", authfile, reg.Host)
	if b, _ := os.ReadFile(authfile); strings.Contains(string(b), reg.Host) {
		t.Errorf("logout left %s", b)
	}
	if r := s.Run(nil, append([]string{"pull", ref}, flags...)...); r.Code == 0 {
		t.Errorf("pull after logout: %v", r)
	}
}

// TestRegistryPullInterrupted: SIGINT while the top layer's blob hangs
// stops the pull with one line, stores no image and no partial layer
// (each layer directory is complete, tmp/ is empty), and the next pull
// fetches the config and only the layers that were not complete.
func TestRegistryPullInterrupted(t *testing.T) {
	fstest.RequireRoot(t)
	imagetest.RequireBusybox(t)
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 2)+":base", "bb:1")
	var man struct{ Layers []struct{ Digest string } }
	if err := json.Unmarshal([]byte(sh(t, "", "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+reg.Host+"/bb:1")), &man); err != nil {
		t.Fatal(err)
	}
	top := man.Layers[len(man.Layers)-1].Digest

	// A proxy that holds the top layer's blob until released, and says
	// when it holds it and has served every other blob (the config and
	// the layers below): those are then whole at the client, which
	// unpacks them even when interrupted, usually.
	hit, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	gets, served, holding := 0, 0, false
	check := func() {
		if holding && served == len(man.Layers) {
			once.Do(func() { close(hit) })
		}
	}
	target, _ := url.Parse("http://" + reg.Host)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			proxy.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		gets++
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, top) {
			select {
			case <-release:
			default:
				mu.Lock()
				holding = true
				check()
				mu.Unlock()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
		}
		proxy.ServeHTTP(w, r)
		mu.Lock()
		served++
		check()
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/bb:1"

	s := imagetest.NewSession(t)
	cmd := exec.Command(s.Bin, "--root", s.Root, "--unionmount", s.Unionmount, "pull", "--tls-verify=false", ref)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-hit
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "interrupted") ||
		len(imagetest.Lines(stderr.String())) != 1 {
		t.Fatalf("interrupted pull: %v\n%s", err, stderr.String())
	}
	t.Logf("interrupted: %s", strings.TrimSpace(stderr.String()))
	if ids := s.Must(nil, "images", "-q").Stdout; ids != "" {
		t.Errorf("images after an interrupted pull: %q", ids)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Root, "layers"))
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(s.Root, "layers", e.Name(), "layer.json")); err != nil {
			t.Errorf("partial layer %s: %v", e.Name(), err)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(s.Root, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %d entries after the interrupt", len(tmp))
	}
	complete := len(ents)
	if complete >= len(man.Layers) {
		t.Fatalf("%d layers complete of %d, though the top one never arrived", complete, len(man.Layers))
	}

	close(release)
	mu.Lock()
	gets = 0
	mu.Unlock()
	s.Must(nil, "pull", "--tls-verify=false", ref)
	mu.Lock()
	defer mu.Unlock()
	if want := 1 + len(man.Layers) - complete; gets != want {
		t.Errorf("the next pull fetched %d blobs, want %d (the config and %d layers; %d were complete)", gets, want, len(man.Layers)-complete, complete)
	}
	t.Logf("%d of %d layers were complete; the next pull fetched %d blobs", complete, len(man.Layers), gets)
}

// TestRegistryRootless: a user without privileges pulls (unionctl
// re-executes itself in the user's namespace; the network is the host's),
// runs what it pulled, and pushes it under another name: the same
// manifest digest.
func TestRegistryRootless(t *testing.T) {
	fstest.RequireFUSE(t)
	imagetest.RequireBusybox(t)
	registrytest.Require(t, "skopeo", "umoci")
	u := createTestUser(t)
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 1)+":base", "bb:1")

	s, _ := rootlessSession(t, u, "unionctl-rootless-pull-")
	t.Cleanup(func() { s.Run(nil, "unshare", "rm", "-rf", s.Root) })

	ref := reg.Host + "/bb:1"
	s.Must(nil, "pull", "--tls-verify=false", ref)
	if out := s.Must(nil, "run", "--rm", ref, "sh", "-c", "cat /etc/motd /layer/1; id -u").Stdout; out != "welcome\nlayer 1\n0\n" {
		t.Errorf("rootless run of a pulled image: %q", out)
	}
	out := s.Must(nil, "push", "--tls-verify=false", ref, reg.Host+"/mine/bb:1").Stdout
	if want := skopeoDigest(t, ref, "--tls-verify=false"); !strings.Contains(out, want) {
		t.Errorf("rootless push: %q, want digest %s", out, want)
	}
}

// TestBuildFromRegistryImage: a FROM naming an image the store lacks pulls
// it, with the build's registry flags, as docker build does; a second
// build finds it in the store and fetches no blob.
func TestBuildFromRegistryImage(t *testing.T) {
	fstest.RequireFUSE(t)
	registrytest.Require(t, "skopeo", "umoci")
	reg := registrytest.Start(t, registrytest.Options{})
	reg.Seed(t, "oci:"+registrytest.BusyboxLayout(t, 1)+":base", "bb:1")
	c := reg.Counting(t)
	s := imagetest.NewSession(t)
	dir := t.TempDir()
	df := "FROM " + c.Host + "/bb:1\nRUN cat /layer/1 > /copied\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Must(nil, "build", "--tls-verify=false", "-t", "frombase:1", dir)
	if n := c.Take(); n["GET blobs"] == 0 {
		t.Errorf("the build fetched no blob of its FROM image: requests %v", n)
	}
	if got := s.Must(nil, "run", "--rm", "frombase:1", "cat", "/copied").Stdout; got != "layer 1\n" {
		t.Errorf("run of the built image: %q", got)
	}
	s.Must(nil, "build", "--tls-verify=false", "-t", "frombase:2", dir)
	if n := c.Take(); n["GET blobs"] != 0 {
		t.Errorf("second build fetched %d blobs; its FROM image is in the store", n["GET blobs"])
	}
}
