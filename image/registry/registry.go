package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	gcr "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/unionmount/unionmount/image"
)

// DefaultCertDir is where per-registry certificates live, as podman's.
const DefaultCertDir = "/etc/containers/certs.d"

// Options configures every registry operation.
type Options struct {
	// Insecure (--tls-verify=false): plain HTTP, or HTTPS without
	// certificate checks. The zero Options verify.
	Insecure bool
	// AuthFile is where credentials are read and login writes them; ""
	// means AuthFilePath's default.
	AuthFile string
	// CertDir holds per-registry certificate directories (DefaultCertDir
	// when "").
	CertDir string
	// Platform picks an image from a manifest list: OS/ARCH[/VARIANT];
	// "" is this machine's.
	Platform string
	// Backoff between retries of a request that failed with a 5xx or a
	// reset connection; zero means go-containerregistry's (1 s, 3 s).
	Backoff remote.Backoff
	// Jobs is how many blobs move at once (0: 3, as Docker).
	Jobs int
	// UserAgent, when set, is sent with every request.
	UserAgent string
	// Estargz: a push makes eStargz layers (store.PushOptions).
	Estargz bool
}

// userAgent names us to registries.
const userAgent = "unionctl"

// backoff is the retry schedule: Options.Backoff, else
// go-containerregistry's default (1 s, then 3 s, then 9 s).
func (o Options) backoff() remote.Backoff {
	if o.Backoff.Steps > 0 {
		return o.Backoff
	}
	return remote.Backoff{Duration: time.Second, Factor: 3, Jitter: 0.1, Steps: 3}
}

func (o Options) jobs() int {
	if o.Jobs > 0 {
		return o.Jobs
	}
	return 3
}

// nameOptions are how go-containerregistry reads our references: we
// have checked them already (image.ParseRemote).
func (o Options) nameOptions() []name.Option {
	opts := []name.Option{name.WeakValidation}
	if o.Insecure {
		opts = append(opts, name.Insecure)
	}
	return opts
}

// repository turns a parsed reference into go-containerregistry's.
func (o Options) repository(r image.Remote) (name.Repository, error) {
	repo, err := name.NewRepository(r.Name(), o.nameOptions()...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("%w %q: %w", image.ErrInvalidReference, r.String(), err)
	}
	return repo, nil
}

func (o Options) reference(r image.Remote) (name.Reference, error) {
	repo, err := o.repository(r)
	if err != nil {
		return nil, err
	}
	if r.Digest != "" {
		return repo.Digest(r.Digest.String()), nil
	}
	return repo.Tag(r.Tag), nil
}

// transport is the HTTP transport for host: TLS as configured, no
// other state.
func (o Options) transport(host string) (http.RoundTripper, error) {
	cfg, err := o.tlsConfig(host)
	if err != nil {
		return nil, err
	}
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:       cfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   50,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
		ExpectContinueTimeout: time.Second,
	}, nil
}

// tlsConfig is the system's CAs plus CertDir/HOST/*.crt, and the client
// certificates CertDir/HOST/NAME.cert with NAME.key, as podman reads
// them (containers/image pkg/tlsclientconfig).
func (o Options) tlsConfig(host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.Insecure {
		cfg.InsecureSkipVerify = true
	}
	dir := o.CertDir
	if dir == "" {
		dir = DefaultCertDir
	}
	dir = filepath.Join(dir, host)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, fmt.Errorf("certificates for %s: %w", host, err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".crt"):
			if cfg.RootCAs == nil {
				if cfg.RootCAs, err = x509.SystemCertPool(); err != nil {
					cfg.RootCAs = x509.NewCertPool()
				}
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("certificates for %s: %w", host, err)
			}
			if !cfg.RootCAs.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("certificates for %s: %s holds no PEM certificate", host, p)
			}
		case strings.HasSuffix(e.Name(), ".cert"):
			key := strings.TrimSuffix(p, ".cert") + ".key"
			pair, err := tls.LoadX509KeyPair(p, key)
			if err != nil {
				return nil, fmt.Errorf("client certificate for %s: %s with %s: %w", host, p, filepath.Base(key), err)
			}
			cfg.Certificates = append(cfg.Certificates, pair)
		case strings.HasSuffix(e.Name(), ".key"):
			if _, err := os.Stat(strings.TrimSuffix(p, ".key") + ".cert"); err != nil {
				return nil, fmt.Errorf("client certificate for %s: %s has no .cert beside it", host, p)
			}
		}
	}
	return cfg, nil
}

// remoteOptions are go-containerregistry's options for talking to host.
func (o Options) remoteOptions(host string, keychain *Keychain) ([]remote.Option, error) {
	tr, err := o.transport(host)
	if err != nil {
		return nil, err
	}
	opts := []remote.Option{
		remote.WithTransport(tr),
		remote.WithAuthFromKeychain(keychain),
		remote.WithJobs(o.jobs()),
		remote.WithUserAgent(userAgent),
	}
	if o.UserAgent != "" {
		opts[len(opts)-1] = remote.WithUserAgent(o.UserAgent)
	}
	if o.Backoff.Steps > 0 {
		opts = append(opts, remote.WithRetryBackoff(o.Backoff))
	}
	p, err := ParsePlatform(o.Platform)
	if err != nil {
		return nil, err
	}
	return append(opts, remote.WithPlatform(p)), nil
}

// ParsePlatform reads OS/ARCH[/VARIANT]; "" is this machine's platform
// (linux and Go's GOARCH; arm is v7 and arm64 v8, as Docker picks).
func ParsePlatform(s string) (gcr.Platform, error) {
	if s == "" {
		p := gcr.Platform{OS: "linux", Architecture: runtime.GOARCH}
		switch runtime.GOARCH {
		case "arm":
			p.Variant = "v7"
		case "arm64":
			p.Variant = "v8"
		}
		return p, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return gcr.Platform{}, fmt.Errorf("%w platform %q: use OS/ARCH[/VARIANT], e.g. linux/arm64", image.ErrInvalidReference, s)
	}
	p := gcr.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// explain turns a registry's error into one line that says the cause and
// what to do; what names the operation ("pull HOST/NAME:TAG").
func (o Options) explain(host string, err error, what string) error {
	certDir := o.CertDir
	if certDir == "" {
		certDir = DefaultCertDir
	}
	caHint := fmt.Sprintf("put its CA in %s/%s/ca.crt, or use --tls-verify=false", certDir, host)
	if strings.Contains(err.Error(), "Client sent an HTTP request to an HTTPS server") {
		// HTTPS failed, and the loopback fallback to plain HTTP found an
		// HTTPS server: say why HTTPS failed.
		return fmt.Errorf("%s: HTTPS to the registry failed: %v (%s)", what, o.tlsProbe(host), caHint)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%s: %w: the registry refused the credentials (log in with unionctl login, or check --authfile)", what, ErrUnauthorized)
		case http.StatusForbidden:
			return fmt.Errorf("%s: %w: access denied (check the repository name and your permissions)", what, ErrUnauthorized)
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w: the registry has no such repository, tag or manifest (check the name)", what, image.ErrNotFound)
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("%s: %w: %s (log in with unionctl login)", what, ErrUnauthorized, d.Message)
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("%s: %w: %s", what, image.ErrNotFound, d.Message)
			}
		}
		return fmt.Errorf("%s: registry answered %d: %s", what, te.StatusCode, strings.Join(strings.Fields(te.Error()), " "))
	}
	var nerr net.Error
	var oerr *net.OpError
	switch {
	case errors.As(err, &oerr) && oerr.Op == "dial":
		return fmt.Errorf("%s: cannot reach the registry: %w (is it running, and is the host right?)", what, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s: the registry speaks plain HTTP: use --tls-verify=false", what)
	case strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "certificate"):
		return fmt.Errorf("%s: %w (%s)", what, err, caHint)
	case errors.As(err, &nerr) && nerr.Timeout():
		return fmt.Errorf("%s: the registry did not answer in time: %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tlsProbe says why a TLS handshake with host fails.
func (o Options) tlsProbe(host string) error {
	cfg, err := o.tlsConfig(host)
	if err != nil {
		return err
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", host, cfg)
	if err != nil {
		return err
	}
	c.Close()
	return errors.New("the handshake failed once, and works when tried again")
}

// ErrUnauthorized (wrapped): the registry refused the credentials or the
// access.
var ErrUnauthorized = errors.New("unauthorized")
