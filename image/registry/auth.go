package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/unionmount/unionmount/image"
)

// authFile is the JSON of podman's auth.json and Docker's config.json:
// {"auths": {"HOST": {"auth": base64("USER:PASSWORD")}}}. Other keys are
// kept as they are when login rewrites the file.
type authFile struct {
	Auths map[string]authEntry `json:"auths"`
	rest  map[string]json.RawMessage
}

type authEntry struct {
	Auth          string `json:"auth,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
}

// AuthFilePath is where credentials live: file when set, else
// $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, else
// (no runtime dir) /run/containers/UID/auth.json, as podman.
func AuthFilePath(file string) string {
	if file != "" {
		return file
	}
	if p := os.Getenv("REGISTRY_AUTH_FILE"); p != "" {
		return p
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "containers", "auth.json")
	}
	return filepath.Join("/run/containers", fmt.Sprint(os.Getuid()), "auth.json")
}

// dockerConfigPath is Docker's client configuration: $DOCKER_CONFIG/
// config.json, else ~/.docker/config.json.
func dockerConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

func readAuthFile(p string) (*authFile, error) {
	f := &authFile{Auths: map[string]authEntry{}}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read auth file: %w", err)
	}
	if err := json.Unmarshal(b, &f.rest); err != nil {
		return nil, fmt.Errorf("auth file %s is not JSON: %w (fix or remove it)", p, err)
	}
	if raw, ok := f.rest["auths"]; ok {
		if err := json.Unmarshal(raw, &f.Auths); err != nil {
			return nil, fmt.Errorf("auth file %s: \"auths\": %w (fix or remove it)", p, err)
		}
		if f.Auths == nil {
			f.Auths = map[string]authEntry{}
		}
	}
	return f, nil
}

// write stores the file with mode 0600 (it holds passwords), by rename.
func (f *authFile) write(p string) error {
	out := map[string]any{}
	for k, v := range f.rest {
		out[k] = v
	}
	out["auths"] = f.Auths
	b, err := json.MarshalIndent(out, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("write auth file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".auth-*.json")
	if err != nil {
		return fmt.Errorf("write auth file: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write auth file %s: %w", p, err)
	}
	return nil
}

// authKeys are the keys a registry's entry may have in an auth file:
// the host itself, and Docker Hub's historical names.
func authKeys(host string) []string {
	keys := []string{host, "https://" + host, "http://" + host}
	if host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io" {
		keys = append(keys, "docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io")
	}
	return keys
}

func (f *authFile) lookup(host string) (authn.AuthConfig, bool) {
	for _, k := range authKeys(host) {
		e, ok := f.Auths[k]
		if !ok {
			continue
		}
		if e.IdentityToken != "" {
			return authn.AuthConfig{IdentityToken: e.IdentityToken}, true
		}
		b, err := base64.StdEncoding.DecodeString(e.Auth)
		if err != nil {
			continue
		}
		user, pass, ok := strings.Cut(string(b), ":")
		if ok {
			return authn.AuthConfig{Username: user, Password: pass}, true
		}
	}
	return authn.AuthConfig{}, false
}

// Keychain finds credentials for a registry: in the auth file, then in
// Docker's config.json. Credential helpers (credsStore) are not run.
type Keychain struct {
	files []string
}

// NewKeychain reads the auth file of opts, then Docker's.
func NewKeychain(opts Options) *Keychain {
	k := &Keychain{files: []string{AuthFilePath(opts.AuthFile)}}
	if p := dockerConfigPath(); p != "" {
		k.files = append(k.files, p)
	}
	return k
}

// Resolve implements authn.Keychain.
func (k *Keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	host := r.RegistryStr()
	if host == name.DefaultRegistry {
		host = image.DefaultRegistry
	}
	for _, p := range k.files {
		f, err := readAuthFile(p)
		if err != nil {
			return nil, err
		}
		if c, ok := f.lookup(host); ok {
			return authn.FromConfig(c), nil
		}
	}
	return authn.Anonymous, nil
}

// Login checks user and password against the registry host and stores
// them in the auth file. The password is never printed, also not in an
// error.
func Login(ctx context.Context, host, user, password string, opts Options) error {
	if user == "" || password == "" {
		return errors.New("login: give a user name and a password")
	}
	if strings.Contains(user, ":") {
		return errors.New("login: a user name cannot hold ':'")
	}
	if err := Check(ctx, host, authn.FromConfig(authn.AuthConfig{Username: user, Password: password}), opts); err != nil {
		return err
	}
	p := AuthFilePath(opts.AuthFile)
	f, err := readAuthFile(p)
	if err != nil {
		return err
	}
	f.Auths[normalizeHost(host)] = authEntry{Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}
	return f.write(p)
}

// Logout removes the registry's credentials from the auth file. It
// reports image.ErrNotFound when there were none there (credentials in
// Docker's config.json are Docker's to remove).
func Logout(host string, opts Options) error {
	p := AuthFilePath(opts.AuthFile)
	f, err := readAuthFile(p)
	if err != nil {
		return err
	}
	found := false
	for _, k := range authKeys(normalizeHost(host)) {
		if _, ok := f.Auths[k]; ok {
			delete(f.Auths, k)
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: not logged in to %s (in %s)", image.ErrNotFound, host, p)
	}
	return f.write(p)
}

// normalizeHost is the key a registry's credentials are stored under:
// HOST[:PORT], Docker Hub as docker.io.
func normalizeHost(host string) string {
	host = strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	host = strings.TrimSuffix(host, "/")
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	switch host {
	case "index.docker.io", "registry-1.docker.io":
		return image.DefaultRegistry
	}
	return host
}

// Check asks the registry whether auth may use it: GET /v2/ after the
// token exchange or with basic credentials, as podman login does.
func Check(ctx context.Context, host string, auth authn.Authenticator, opts Options) error {
	host = normalizeHost(host)
	what := "login to " + host
	reg, err := name.NewRegistry(host, opts.nameOptions()...)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", what, image.ErrInvalidReference, err)
	}
	base, err := opts.transport(host)
	if err != nil {
		return err
	}
	tr, err := transport.NewWithContext(ctx, reg, auth, transport.NewUserAgent(base, userAgent), []string{reg.Scope(transport.PullScope)})
	if err != nil {
		return opts.explain(host, err, what)
	}
	// The scheme the ping settled on: go-containerregistry's transport
	// rewrites it for this registry.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return opts.explain(host, err, what)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return opts.explain(host, err, what)
	}
	return nil
}
