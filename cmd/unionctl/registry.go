package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/registry"
)

func init() {
	commands = append(commands,
		&command{
			name: "pull", usage: "[flags] NAME[:TAG|@DIGEST]", needsStore: true,
			summary: "Fetch an image from a registry (busybox is docker.io/library/busybox:latest).",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.StringVar(&o.platform, "platform", "", "OS/ARCH[/VARIANT] to pick from a manifest list (default: this machine's)")
				fs.BoolVar(&o.lazy, "lazy", false, "fetch only the manifest, the config and each eStargz layer's TOC (verified); layers are fetched as they are read (other layers in full)")
				registryFlags(fs, o)
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress; print only the image ID")
				maxLayerSizeFlag(fs, o)
			},
			run: cmdPull,
		},
		&command{
			name: "push", usage: "[flags] IMAGE [DEST]", needsStore: true,
			summary: "Send an image to a registry, as IMAGE's name or as DEST (NAME[:TAG]).",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				registryFlags(fs, o)
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress")
				fs.StringVar(&o.compressionFormat, "compression-format", "gzip", "layers unionctl makes: gzip, or estargz (gzip that a lazy pull can read file by file; a new image ID)")
			},
			run: cmdPush,
		},
		&command{
			name: "login", usage: "[-u USER] [--password-stdin] REGISTRY",
			summary: "Check credentials with a registry and keep them in the auth file (podman's and skopeo's).",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.StringVarP(&o.username, "username", "u", "", "user name (default: asked on the terminal)")
				fs.BoolVar(&o.passwordStdin, "password-stdin", false, "read the password from stdin (else it is asked on the terminal)")
				registryFlags(fs, o)
			},
			run: cmdLogin,
		},
		&command{
			name: "logout", usage: "REGISTRY",
			summary: "Remove a registry's credentials from the auth file.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.StringVar(&o.authfile, "authfile", "", "auth file (default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json)")
			},
			run: cmdLogout,
		},
	)
}

func registryFlags(fs *pflag.FlagSet, o *cmdOpts) {
	fs.BoolVar(&o.tlsVerify, "tls-verify", true, "require HTTPS with a trusted certificate (false: plain HTTP or any certificate)")
	fs.StringVar(&o.authfile, "authfile", "", "auth file (default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json; ~/.docker/config.json is read too)")
	fs.StringVar(&o.certDir, "cert-dir", "", "per-registry certificates, DIR/HOST[:PORT]/*.crt (default "+registry.DefaultCertDir+")")
}

func (o *cmdOpts) registryOptions() registry.Options {
	return registry.Options{Insecure: !o.tlsVerify, AuthFile: o.authfile, CertDir: o.certDir, Platform: o.platform}
}

// interruptible is ctx cancelled by SIGINT or SIGTERM: a pull stops, keeps
// the layers it completed, and exits non-zero.
func interruptible() (context.Context, func()) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cmdPull(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("pull: give one image reference, NAME[:TAG] or NAME@DIGEST")
	}
	ref, err := image.ParseRemote(args[0])
	if err != nil {
		return usagef("pull: %v", err)
	}
	if _, err := registry.ParsePlatform(o.platform); err != nil {
		return usagef("pull: %v", err)
	}
	ctx, stop := interruptible()
	defer stop()
	pp := newPullProgress(a.stderr, o.quiet, isTerminal(a.stderr))
	if pp.tty {
		fmt.Fprintf(a.stderr, "%s: Pulling from %s\n", tagOrDigest(ref), ref.Name())
	}
	pull := registry.Pull
	if o.lazy {
		pull = registry.PullLazy
	}
	r, res, err := pull(ctx, a.st, ref, o.registryOptions(), pp.event)
	pp.finish()
	if err != nil {
		return fmt.Errorf("%w%s", err, pullHint(err))
	}
	name := ref.String()
	switch {
	case o.quiet:
		fmt.Fprintln(a.stdout, res.Image.ID)
	case pp.tty:
		status := "Downloaded newer image for " + name
		if res.Fetched == 0 {
			status = "Image is up to date for " + name
		}
		fmt.Fprintf(a.stdout, "Digest: %s\nStatus: %s\n%s\n", r.Source.ManifestDigest, status, name)
	case o.lazy:
		fmt.Fprintf(a.stdout, "%s: pulled %s lazily, image %s: %d layers, %d lazy, %d blobs fetched\n",
			name, r.Source.ManifestDigest, shortID(res.Image.ID, false), len(r.Source.Layers), len(a.st.LazyLayers(res.Image)), res.Fetched)
	default:
		fmt.Fprintf(a.stdout, "%s: pulled %s, image %s: %d layers, %d blobs fetched\n",
			name, r.Source.ManifestDigest, shortID(res.Image.ID, false), len(r.Source.Layers), res.Fetched)
	}
	return nil
}

func tagOrDigest(r image.Remote) string {
	if r.Tag != "" {
		return r.Tag
	}
	return r.Digest.String()
}

// pullHint says what to do about a refused pull; the store is as it was.
func pullHint(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return " (run the same pull again to finish it)"
	case errors.Is(err, image.ErrDigestMismatch), errors.Is(err, image.ErrCorrupt):
		return " (nothing was stored; the registry served damaged data: try again, or tell its operator)"
	case errors.Is(err, image.ErrUnsafePath), errors.Is(err, image.ErrDuplicateEntry):
		return " (nothing was stored; the layer is malformed or hostile: do not use this image)"
	case errors.Is(err, image.ErrTooLarge):
		return " (nothing was stored; if the layer is genuine, raise --max-layer-size or free space in the store)"
	case errors.Is(err, image.ErrDeviceNode):
		return " (nothing was stored; device nodes need real root)"
	}
	return " (nothing was stored)"
}

func cmdPush(a *app, o *cmdOpts, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("push: give IMAGE and optionally DEST (REGISTRY/NAME[:TAG])")
	}
	img, err := a.st.LookupImage(args[0])
	if err != nil {
		return err
	}
	destArg := args[0]
	if len(args) == 2 {
		destArg = args[1]
	} else if strings.HasPrefix(img.ID.Encoded(), strings.TrimPrefix(args[0], "sha256:")) {
		return usagef("push: %q is an image ID: give DEST (REGISTRY/NAME[:TAG])", args[0])
	}
	dest, err := image.ParseRemote(destArg)
	if err != nil {
		return usagef("push: %v", err)
	}
	if dest.Digest != "" {
		return usagef("push: %q: push to NAME[:TAG], not to a digest", destArg)
	}
	ropts := o.registryOptions()
	switch o.compressionFormat {
	case "gzip":
	case "estargz":
		ropts.Estargz = true
	default:
		return usagef("push: --compression-format %q: use gzip or estargz", o.compressionFormat)
	}
	ctx, stop := interruptible()
	defer stop()
	pp := newPushProgress(a.stderr, o.quiet, isTerminal(a.stderr))
	if pp.tty {
		fmt.Fprintf(a.stderr, "The push refers to repository [%s]\n", dest.Name())
	}
	res, err := registry.Push(ctx, a.st, img, dest, ropts, pp.event)
	pp.finish()
	if err != nil {
		return fmt.Errorf("%w (the registry may hold some of the blobs; the store is unchanged)", err)
	}
	if !o.quiet {
		fmt.Fprintf(a.stdout, "%s: digest: %s, %d blobs uploaded\n", dest.String(), res.ManifestDigest, res.Uploaded)
	}
	return nil
}

func cmdLogin(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("login: give one REGISTRY (HOST[:PORT])")
	}
	user := o.username
	var password string
	tty := isTerminal(a.stdin)
	if user == "" {
		if !tty {
			return usagef("login: give the user name with -u USER (stdin is not a terminal)")
		}
		fmt.Fprint(a.stderr, "Username: ")
		line, err := bufio.NewReader(a.stdin).ReadString('\n')
		if err != nil {
			return fmt.Errorf("login: read user name: %w", err)
		}
		user = strings.TrimSpace(line)
	}
	switch {
	case o.passwordStdin:
		b, err := io.ReadAll(io.LimitReader(a.stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("login: read password: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	case tty:
		p, err := readPassword(a.stdin.(*os.File), a.stderr)
		if err != nil {
			return fmt.Errorf("login: read password: %w", err)
		}
		password = p
	default:
		return usagef("login: give the password on stdin with --password-stdin (stdin is not a terminal)")
	}
	ctx, stop := interruptible()
	defer stop()
	if err := registry.Login(ctx, args[0], user, password, o.registryOptions()); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "Login Succeeded!")
	return nil
}

// readPassword reads a line from the terminal without echo.
func readPassword(f *os.File, prompt io.Writer) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", err
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(prompt, "Password: ")
	line, err := bufio.NewReader(f).ReadString('\n')
	fmt.Fprintln(prompt)
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func cmdLogout(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("logout: give one REGISTRY (HOST[:PORT])")
	}
	if err := registry.Logout(args[0], registry.Options{AuthFile: o.authfile}); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Removed login credentials for %s\n", args[0])
	return nil
}
