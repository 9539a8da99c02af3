package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/store"
	"github.com/unionmount/unionmount/internal/fstest"
)

// fakeRegistry serves one image from memory for the fault cases a real
// registry cannot produce: garbage, wrong bytes, 5xx, redirects. It
// counts blob GETs.
type fakeRegistry struct {
	t        *testing.T
	srv      *httptest.Server
	manifest []byte
	mt       string
	blobs    map[digest.Digest][]byte
	layers   []v1.Descriptor

	mu       sync.Mutex
	blobGets map[digest.Digest]int
	// fail, when set, answers a request instead of the registry (return
	// false to serve normally).
	fail func(w http.ResponseWriter, r *http.Request, n int) bool
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := layer.Compress(&buf, layer.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// newFake serves an image whose layers are the given tars.
func newFake(t *testing.T, tars ...[]byte) *fakeRegistry {
	f := &fakeRegistry{t: t, blobs: map[digest.Digest][]byte{}, blobGets: map[digest.Digest]int{}, mt: v1.MediaTypeImageManifest}
	var diffIDs []digest.Digest
	for _, tb := range tars {
		diffIDs = append(diffIDs, digest.FromBytes(tb))
		b := gz(t, tb)
		d := digest.FromBytes(b)
		f.blobs[d] = b
		f.layers = append(f.layers, v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(b))})
	}
	cfg, _ := json.Marshal(v1.Image{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cd := digest.FromBytes(cfg)
	f.blobs[cd] = cfg
	m := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))}, Layers: f.layers}
	m.SchemaVersion = 2
	f.manifest, _ = json.Marshal(m)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRegistry) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	var n int
	if i := strings.Index(p, "/blobs/"); i >= 0 && r.Method == http.MethodGet {
		f.mu.Lock()
		d := digest.Digest(p[i+len("/blobs/"):])
		f.blobGets[d]++
		n = f.blobGets[d]
		f.mu.Unlock()
	}
	if f.fail != nil && f.fail(w, r, n) {
		return
	}
	switch {
	case p == "/v2/":
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(p, "/v2/x/manifests/"):
		if !strings.HasSuffix(p, "/t") && !strings.HasSuffix(p, digest.FromBytes(f.manifest).String()) {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", f.mt)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(f.manifest).String())
		w.Header().Set("Content-Length", fmt.Sprint(len(f.manifest)))
		if r.Method == http.MethodGet {
			w.Write(f.manifest)
		}
	case strings.HasPrefix(p, "/v2/x/blobs/"), strings.HasPrefix(p, "/storage/"):
		d := digest.Digest(p[strings.LastIndexByte(p, '/')+1:])
		b, ok := f.blobs[d]
		if !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeRegistry) gets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.blobGets {
		n += c
	}
	f.blobGets = map[digest.Digest]int{}
	return n
}

func testOptions(t *testing.T) Options {
	return Options{Insecure: true, AuthFile: filepath.Join(t.TempDir(), "auth.json"), CertDir: t.TempDir(),
		Backoff: remote.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 3}}
}

func newStore(t *testing.T) *store.Store {
	fstest.RequireRoot(t)
	s, err := store.Open(store.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func layerTar(t *testing.T, name, body string) []byte {
	return imagetest.Tar(t, []imagetest.Entry{{Name: name, Body: []byte(body)}})
}

func pull(t *testing.T, s *store.Store, f *fakeRegistry, ref string) (store.PullResult, error) {
	r, err := image.ParseRemote(f.host() + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	_, res, err := Pull(context.Background(), s, r, testOptions(t), nil)
	return res, err
}

// TestPullRetriesAndRedirects: a blob answered 503 twice, then served,
// a blob redirected to other storage, and a blob whose connection breaks
// half way the first time (resumed by fetching it again), arrive; a
// second pull fetches nothing.
func TestPullRetriesAndRedirects(t *testing.T) {
	s := newStore(t)
	f := newFake(t, layerTar(t, "a", "a"), layerTar(t, "b", "b"), layerTar(t, "c", strings.Repeat("c", 100000)))
	f.fail = func(w http.ResponseWriter, r *http.Request, n int) bool {
		switch {
		case strings.HasSuffix(r.URL.Path, f.layers[2].Digest.String()) && n == 1:
			b := f.blobs[f.layers[2].Digest]
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.WriteHeader(http.StatusOK)
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return true
		case strings.HasSuffix(r.URL.Path, f.layers[0].Digest.String()) && n <= 2:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		case strings.HasPrefix(r.URL.Path, "/v2/x/blobs/") && strings.HasSuffix(r.URL.Path, f.layers[1].Digest.String()):
			http.Redirect(w, r, "/storage/"+f.layers[1].Digest.String(), http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	res, err := pull(t, s, f, "x:t")
	if err != nil {
		t.Fatal(err)
	}
	if n := f.gets(); res.Layers != 3 || n != 7 { // config, layer 0 three times, layer 1, layer 2 twice
		t.Errorf("pull: %+v, %d blob GETs, want 7", res, n)
	}
	if _, err := pull(t, s, f, "x:t"); err != nil || f.gets() != 0 {
		t.Errorf("second pull: %v", err)
	}
}

// TestPullBadInput: each refused pull is one line naming the image and
// the cause, wraps the sentinel callers test, and leaves the store as it
// was.
func TestPullBadInput(t *testing.T) {
	s := newStore(t)
	before := imagetest.StoreFiles(t, s.Root())
	cases := []struct {
		name  string
		tars  [][]byte
		setup func(f *fakeRegistry)
		ref   string
		want  error
		text  string
	}{
		{name: "missing tag", ref: "x:nosuch", want: image.ErrNotFound, text: "no such repository, tag or manifest"},
		{name: "missing repository", ref: "y:t", want: image.ErrNotFound, text: "no such"},
		{name: "garbage manifest", setup: func(f *fakeRegistry) {
			f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
				if strings.Contains(r.URL.Path, "/manifests/") {
					w.Header().Set("Content-Type", v1.MediaTypeImageManifest)
					w.Write([]byte("<html>oops</html>"))
					return true
				}
				return false
			}
		}, ref: "x:t", text: "pull " + "HOST/x:t"},
		{name: "blob digest mismatch", setup: func(f *fakeRegistry) {
			b := f.blobs[f.layers[1].Digest]
			b[len(b)-6] ^= 0x55
		}, ref: "x:t", want: image.ErrDigestMismatch, text: "hashes to"},
		{name: "hostile layer", tars: [][]byte{layerTar(t, "ok", "ok"), layerTar(t, "../evil", "x")}, ref: "x:t", want: image.ErrUnsafePath},
		{name: "absolute name", tars: [][]byte{layerTar(t, "/etc/evil", "x")}, ref: "x:t", want: image.ErrUnsafePath},
		{name: "registry down", setup: func(f *fakeRegistry) { f.srv.Close() }, ref: "x:t", text: "cannot reach the registry"},
		{name: "server errors", setup: func(f *fakeRegistry) {
			f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
				if strings.Contains(r.URL.Path, "/blobs/") {
					http.Error(w, "down", http.StatusInternalServerError)
					return true
				}
				return false
			}
		}, ref: "x:t", text: "500"},
		{name: "unauthorized", setup: func(f *fakeRegistry) {
			f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return true
			}
		}, ref: "x:t", want: ErrUnauthorized, text: "unionctl login"},
		{name: "artifact", setup: func(f *fakeRegistry) { f.mt = "application/vnd.oci.image.index.v1+json+bogus" }, ref: "x:t", want: image.ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tars := c.tars
			if tars == nil {
				tars = [][]byte{layerTar(t, "a", "a"), layerTar(t, "b", "b")}
			}
			f := newFake(t, tars...)
			if c.setup != nil {
				c.setup(f)
			}
			_, err := pull(t, s, f, c.ref)
			if err == nil {
				t.Fatal("pull succeeded")
			}
			msg := err.Error()
			t.Logf("%s", msg)
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v is not %v", err, c.want)
			}
			if text := strings.ReplaceAll(c.text, "HOST", f.host()); !strings.Contains(msg, text) || strings.Contains(msg, "\n") {
				t.Errorf("error %q should be one line with %q", msg, text)
			}
			if !strings.Contains(msg, f.host()+"/") {
				t.Errorf("error %q does not name the image", msg)
			}
			if after := imagetest.StoreFiles(t, s.Root()); !slices.Equal(before, after) {
				t.Errorf("store changed:\n%v\n%v", before, after)
			}
		})
	}
}

// TestPullMaxLayerSize: a manifest listing a layer bigger than the limit
// is refused before any blob is fetched.
func TestPullMaxLayerSize(t *testing.T) {
	fstest.RequireRoot(t)
	s, err := store.Open(store.Options{Root: t.TempDir(), MaxLayerSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	f := newFake(t, layerTar(t, "big", strings.Repeat("x", 10000)))
	_, err = pull(t, s, f, "x:t")
	if !errors.Is(err, image.ErrTooLarge) || !strings.Contains(err.Error(), "--max-layer-size") {
		t.Fatalf("pull: %v", err)
	}
	if n := f.gets(); n != 0 {
		t.Errorf("%d blobs fetched before refusing", n)
	}
}

func TestPickPlatform(t *testing.T) {
	idx := []byte(`{"schemaVersion":2,"manifests":[
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":1,"platform":{"os":"linux","architecture":"amd64"}},
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("c", 64) + `","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}`)
	for in, want := range map[string]string{"linux/amd64": "a", "linux/arm/v7": "c", "linux/arm/v6": "b", "linux/arm": "b"} {
		p, err := ParsePlatform(in)
		if err != nil {
			t.Fatal(err)
		}
		h, err := pickPlatform(idx, p)
		if err != nil || h.Hex != strings.Repeat(want, 64) {
			t.Errorf("%s: %v, %v", in, h, err)
		}
	}
	p, _ := ParsePlatform("linux/s390x")
	if _, err := pickPlatform(idx, p); !errors.Is(err, image.ErrNotFound) || !strings.Contains(err.Error(), "linux/arm/v7") {
		t.Errorf("s390x: %v", err)
	}
	for _, bad := range []string{"linux", "/amd64", "linux/", "a/b/c/d", "linux/arm/"} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) accepted", bad)
		}
	}
}

// TestKeychain: credentials come from the auth file, then Docker's
// config.json; login's entry is what podman writes; logout removes it.
func TestKeychain(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", dir)
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"`+enc("hub:pw")+`"},"reg.example":{"auth":"`+enc("d:1")+`"}},"credsStore":"desktop"}`), 0o600)
	auth := filepath.Join(dir, "auth.json")
	os.WriteFile(auth, []byte(`{"auths":{"reg.example":{"auth":"`+enc("p:2")+`"}},"other":1}`), 0o600)
	k := NewKeychain(Options{AuthFile: auth})
	for host, want := range map[string]string{"reg.example": "p:2", "docker.io": "hub:pw", "index.docker.io": "hub:pw", "none.example": ""} {
		r, _ := image.ParseRemote(host + "/x/y")
		repo, err := Options{}.repository(r)
		if err != nil {
			t.Fatal(err)
		}
		a, err := k.Resolve(repo)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := a.Authorization()
		if got := c.Username + ":" + c.Password; want != "" && got != want || want == "" && c.Username != "" {
			t.Errorf("%s: %q, want %q", host, got, want)
		}
	}
	if err := Logout("reg.example", Options{AuthFile: auth}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(auth)
	if strings.Contains(string(b), "reg.example") || !strings.Contains(string(b), `"other": 1`) {
		t.Errorf("after logout: %s", b)
	}
	if err := Logout("reg.example", Options{AuthFile: auth}); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("second logout: %v", err)
	}
	if got := AuthFilePath(""); got != filepath.Join(dir, "containers/auth.json") {
		t.Errorf("default auth file %s", got)
	}
}

// TestBearerLogin: a registry that answers 401 with a Bearer challenge
// and a token service that checks basic credentials: login with a wrong
// password fails (ErrUnauthorized, nothing written, the password not in
// the message), with the right one writes the auth file, and a pull then
// presents the token it got for those credentials.
func TestBearerLogin(t *testing.T) {
	s := newStore(t)
	f := newFake(t, layerTar(t, "a", "a"))
	const token = "tok-123"
	f.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
		if r.URL.Path == "/token" {
			if u, p, ok := r.BasicAuth(); !ok || u != "bob" || p != "right-pw" {
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
				return true
			}
			json.NewEncoder(w).Encode(map[string]string{"token": token})
			return true
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake"`, f.srv.URL))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return true
		}
		return false
	}
	opts := testOptions(t)
	err := Login(context.Background(), f.host(), "bob", "wrong-pw", opts)
	if !errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("login with a wrong password: %v", err)
	}
	if _, err := os.Stat(opts.AuthFile); !os.IsNotExist(err) {
		t.Errorf("failed login wrote the auth file: %v", err)
	}
	r, _ := image.ParseRemote(f.host() + "/x:t")
	if _, _, err := Pull(context.Background(), s, r, opts, nil); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("pull before login: %v", err)
	}
	if err := Login(context.Background(), f.host(), "bob", "right-pw", opts); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Pull(context.Background(), s, r, opts, nil); err != nil {
		t.Errorf("pull after login: %v", err)
	}
}

// TestPullManifestList: an index with amd64 and arm64 images gives the
// one --platform names, and without it the host's.
func TestPullManifestList(t *testing.T) {
	s := newStore(t)
	amd := newFake(t, layerTar(t, "arch", "amd64"))
	arm := newFake(t, layerTar(t, "arch", "arm64"))
	// Serve arm's blobs and manifest from amd's server, and an index.
	for d, b := range arm.blobs {
		amd.blobs[d] = b
	}
	armM := arm.manifest
	amdM := amd.manifest
	idx, _ := json.Marshal(v1.Index{Versioned: specsV2, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{
		{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(amdM), Size: int64(len(amdM)), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}},
		{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(armM), Size: int64(len(armM)), Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
	}})
	amd.fail = func(w http.ResponseWriter, r *http.Request, _ int) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		body, mt := idx, v1.MediaTypeImageIndex
		switch {
		case strings.HasSuffix(r.URL.Path, digest.FromBytes(amdM).String()):
			body, mt = amdM, v1.MediaTypeImageManifest
		case strings.HasSuffix(r.URL.Path, digest.FromBytes(armM).String()):
			body, mt = armM, v1.MediaTypeImageManifest
		}
		w.Header().Set("Content-Type", mt)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
		return true
	}
	r, _ := image.ParseRemote(amd.host() + "/x:t")
	opts := testOptions(t)
	opts.Platform = "linux/arm64"
	res, _, err := Pull(context.Background(), s, r, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Source.ManifestDigest != digest.FromBytes(armM) {
		t.Errorf("--platform linux/arm64 pulled %s, want arm's %s", res.Source.ManifestDigest, digest.FromBytes(armM))
	}
	if runtime.GOARCH == "amd64" {
		opts.Platform = ""
		if res, _, err := Pull(context.Background(), s, r, opts, nil); err != nil || res.Source.ManifestDigest != digest.FromBytes(amdM) {
			t.Errorf("no --platform on amd64: %v, %v", res, err)
		}
	}
	opts.Platform = "linux/s390x"
	if _, _, err := Pull(context.Background(), s, r, opts, nil); !errors.Is(err, image.ErrNotFound) || !strings.Contains(err.Error(), "linux/arm64/v8") {
		t.Errorf("s390x: %v", err)
	}
}

var specsV2 = specs.Versioned{SchemaVersion: 2}
