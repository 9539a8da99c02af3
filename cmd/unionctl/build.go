package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/build"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/registry"
	"github.com/unionmount/unionmount/image/runner"
	"github.com/unionmount/unionmount/image/store"
	"github.com/unionmount/unionmount/whiteout"
)

// buildFlags are the flags of build.
type buildFlags struct {
	tags, buildArgs        []string
	file, target, platform string
	noCache                bool
}

func init() {
	commands = append(commands, &command{
		name: "build", usage: "[flags] CONTEXT|-", needsStore: true,
		summary: "Build an image from a Dockerfile, one layer per step, with a build cache.",
		flags: func(fs *pflag.FlagSet, o *cmdOpts) {
			fs.StringArrayVarP(&o.build.tags, "tag", "t", nil, "NAME[:TAG] for the image (repeatable)")
			fs.StringVarP(&o.build.file, "file", "f", "", "Dockerfile (default CONTEXT/Dockerfile; - for stdin)")
			fs.StringArrayVar(&o.build.buildArgs, "build-arg", nil, "K=V build argument, or K to take $K (repeatable)")
			fs.StringVar(&o.build.target, "target", "", "stage to build (default: the last)")
			fs.BoolVar(&o.build.noCache, "no-cache", false, "do not use the build cache")
			fs.StringVar(&o.build.platform, "platform", "", "platform to build for (only "+build.Platform()+")")
			fs.BoolVarP(&o.quiet, "quiet", "q", false, "print only the image ID")
			registryFlags(fs, o) // for FROM of an image the store lacks
		},
		run: cmdBuild,
	})
}

func cmdBuild(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("build: give one CONTEXT (a directory, or - for a Dockerfile or tar on stdin)")
	}
	bo := build.Options{
		Store: a.st, Tags: o.build.tags, Target: o.build.target, NoCache: o.build.noCache,
		Platform: o.build.platform, BuildArgs: map[string]string{}, Run: a.buildRun,
	}
	// FROM of an image the store lacks pulls it, as docker build does.
	bo.Pull = func(ctx context.Context, name string) (*store.Image, error) {
		ref, err := image.ParseRemote(name)
		if err != nil {
			return nil, err
		}
		ro := o.registryOptions()
		ro.Platform = o.build.platform
		_, res, err := registry.Pull(ctx, a.st, ref, ro, nil)
		if err != nil {
			return nil, fmt.Errorf("%w%s", err, pullHint(err))
		}
		return res.Image, nil
	}
	for _, kv := range o.build.buildArgs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			if v, ok = os.LookupEnv(k); !ok {
				continue
			}
		}
		bo.BuildArgs[k] = v
	}
	if !o.quiet {
		bo.Out = a.stdout
	}
	dir, cleanup, err := a.buildContext(args[0], &bo, o.build.file)
	if err != nil {
		return err
	}
	defer cleanup()
	if bo.Context, err = build.OpenContext(dir); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	img, err := build.Build(ctx, bo)
	var ee *build.ExitError
	if errors.As(err, &ee) {
		return &exitCodeError{code: ee.Code, err: err}
	}
	if err != nil {
		return err
	}
	if o.quiet {
		fmt.Fprintln(a.stdout, img.ID)
	}
	return nil
}

// buildContext finds the context directory and reads the Dockerfile into
// bo. CONTEXT "-" is a tar (unpacked into a temporary directory) or a
// Dockerfile (no context).
func (a *app) buildContext(arg string, bo *build.Options, file string) (string, func(), error) {
	nothing := func() {}
	dir := ""
	cleanup := nothing
	if arg == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return "", nothing, fmt.Errorf("read stdin: %w", err)
		}
		if !isTar(data) {
			if file != "" {
				return "", nothing, usagef("build: -f with a Dockerfile on stdin: give one or the other")
			}
			bo.Dockerfile, bo.DockerfileName = data, "Dockerfile"
			return "", nothing, nil
		}
		tmp, err := os.MkdirTemp("", "unionctl-build-context-")
		if err != nil {
			return "", nothing, err
		}
		cleanup = func() { os.RemoveAll(tmp) }
		dr, _, err := layer.Decompress(bytes.NewReader(data))
		if err == nil {
			_, err = layer.Apply(tmp, dr, layer.ApplyOptions{Format: whiteout.Format{Rootless: a.rootless}})
		}
		if err != nil {
			cleanup()
			return "", nothing, fmt.Errorf("build context on stdin: %w", err)
		}
		dir = tmp
	} else {
		st, err := os.Stat(arg)
		if err != nil {
			return "", nothing, fmt.Errorf("build context: %w", err)
		}
		if !st.IsDir() {
			return "", nothing, usagef("build: the context %s is not a directory (give the directory holding the Dockerfile)", arg)
		}
		dir = arg
	}
	switch {
	case file == "-":
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			cleanup()
			return "", nothing, err
		}
		bo.Dockerfile, bo.DockerfileName = data, "Dockerfile"
		return dir, cleanup, nil
	case file == "":
		file = filepath.Join(dir, "Dockerfile")
	case arg == "-":
		file = filepath.Join(dir, file)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		cleanup()
		return "", nothing, fmt.Errorf("read the Dockerfile: %w (give it with -f FILE)", err)
	}
	bo.Dockerfile, bo.DockerfileName = data, filepath.Base(file)
	return dir, cleanup, nil
}

// isTar reports whether data is a tar archive, perhaps compressed.
func isTar(data []byte) bool {
	dr, c, err := layer.Decompress(bytes.NewReader(data))
	if err != nil {
		return false
	}
	defer dr.Close()
	if c != layer.Uncompressed {
		return true
	}
	return len(data) >= 262 && string(data[257:262]) == "ustar"
}

// buildRun runs a build step's container with the built-in runtime: its
// union mounted for the run, killed when ctx ends (Ctrl-C).
func (a *app) buildRun(ctx context.Context, c *store.Container, stdout, stderr io.Writer) (int, error) {
	mounted, err := a.st.Mount(c)
	if err != nil {
		return runner.ExitRunFailed, err
	}
	if mounted {
		defer a.st.Unmount(c)
	}
	spec := runner.Spec{
		Rootfs: a.st.Merged(c), Args: c.Config.Args, Env: c.Config.Env, Cwd: c.Config.WorkingDir,
		User: c.Config.User, Hostname: c.Config.Hostname,
	}
	p, err := runner.Start(a.self, spec, nil, stdout, stderr)
	if err != nil {
		return runner.ExitRunFailed, err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			p.Signal(syscall.SIGKILL)
		case <-done:
		}
	}()
	code, err := p.Wait()
	close(done)
	return code, err
}
