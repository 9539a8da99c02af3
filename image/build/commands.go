package build

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
)

// runCommand runs one instruction of stage s.
func (b *builder) runCommand(s *stage, cmd instructions.Command) error {
	if err := b.ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	env := s.expandEnv()
	expand := func(w string) (string, error) {
		v, _, err := b.lex.ProcessWord(w, envGetter(env))
		return v, err
	}
	if e, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
		if err := e.Expand(expand); err != nil {
			return b.located(parser.WithLocation(err, cmd.Location()))
		}
	}
	err := b.dispatch(s, cmd, expand)
	if err != nil {
		if _, ok := err.(*ExitError); ok {
			return err
		}
		return fmt.Errorf("%s:%d: %s: %w", b.fileName, line(cmd), strings.ToUpper(cmd.Name()), err)
	}
	return nil
}

func line(cmd instructions.Command) int {
	if l := cmd.Location(); len(l) > 0 {
		return l[0].Start.Line
	}
	return 0
}

func (b *builder) dispatch(s *stage, cmd instructions.Command, expand func(string) (string, error)) error {
	switch c := cmd.(type) {
	case *instructions.EnvCommand:
		var parts []string
		for _, kv := range c.Env {
			parts = append(parts, kv.Key+"="+kv.Value)
		}
		return b.configStep(s, "ENV "+strings.Join(parts, " "), func(cf *config) {
			for _, kv := range c.Env {
				cf.setEnv(kv.Key, kv.Value)
			}
		})
	case *instructions.ArgCommand:
		var parts []string
		for _, kv := range c.Args {
			v, err := b.argValue(kv, s.expandEnv())
			if err != nil {
				return err
			}
			if v == nil {
				parts = append(parts, kv.Key)
				continue
			}
			if _, ok := s.args[kv.Key]; !ok {
				s.order = append(s.order, kv.Key)
			}
			s.args[kv.Key] = *v
			parts = append(parts, kv.Key+"="+*v)
		}
		return b.configStep(s, "ARG "+strings.Join(parts, " "), func(*config) {})
	case *instructions.LabelCommand:
		var parts []string
		for _, kv := range c.Labels {
			parts = append(parts, kv.Key+"="+kv.Value)
		}
		return b.configStep(s, "LABEL "+strings.Join(parts, " "), func(cf *config) {
			if cf.Config.Labels == nil {
				cf.Config.Labels = map[string]string{}
			}
			for _, kv := range c.Labels {
				cf.Config.Labels[kv.Key] = kv.Value
			}
		})
	case *instructions.MaintainerCommand:
		return b.configStep(s, "MAINTAINER "+c.Maintainer, func(cf *config) { cf.Author = c.Maintainer })
	case *instructions.ExposeCommand:
		var ports []string
		for _, p := range c.Ports {
			ws, err := b.lex.ProcessWords(p, envGetter(s.expandEnv()))
			if err != nil {
				return err
			}
			for _, w := range ws {
				if !strings.Contains(w, "/") {
					w += "/tcp"
				}
				ports = append(ports, w)
			}
		}
		return b.configStep(s, "EXPOSE "+strings.Join(ports, " "), func(cf *config) {
			if cf.Config.ExposedPorts == nil {
				cf.Config.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range ports {
				cf.Config.ExposedPorts[p] = struct{}{}
			}
		})
	case *instructions.VolumeCommand:
		return b.configStep(s, "VOLUME "+jsonList(c.Volumes), func(cf *config) {
			if cf.Config.Volumes == nil {
				cf.Config.Volumes = map[string]struct{}{}
			}
			for _, v := range c.Volumes {
				cf.Config.Volumes[v] = struct{}{}
			}
		})
	case *instructions.CmdCommand:
		args := b.commandLine(s, c.ShellDependantCmdLine)
		s.cmdSet = true
		return b.configStep(s, "CMD "+jsonList(args), func(cf *config) { cf.Config.Cmd = args })
	case *instructions.EntrypointCommand:
		args := b.commandLine(s, c.ShellDependantCmdLine)
		keepCmd := s.cmdSet
		return b.configStep(s, "ENTRYPOINT "+jsonList(args), func(cf *config) {
			cf.Config.Entrypoint = args
			if !keepCmd {
				cf.Config.Cmd = nil
			}
		})
	case *instructions.ShellCommand:
		return b.configStep(s, "SHELL "+jsonList(c.Shell), func(cf *config) { cf.Config.Shell = slices.Clone(c.Shell) })
	case *instructions.StopSignalCommand:
		return b.configStep(s, "STOPSIGNAL "+c.Signal, func(cf *config) { cf.Config.StopSignal = c.Signal })
	case *instructions.HealthCheckCommand:
		hc, _ := json.Marshal(c.Health)
		return b.configStep(s, "HEALTHCHECK "+string(hc), func(cf *config) {
			h := *c.Health
			cf.Config.Healthcheck = (*dockerspec.HealthcheckConfig)(&h)
		})
	case *instructions.OnbuildCommand:
		return b.configStep(s, "ONBUILD "+c.Expression, func(cf *config) {
			cf.Config.OnBuild = append(cf.Config.OnBuild, c.Expression)
		})
	case *instructions.UserCommand:
		return b.configStep(s, "USER "+c.User, func(cf *config) { cf.Config.User = c.User })
	case *instructions.WorkdirCommand:
		return b.workdir(s, c.Path)
	case *instructions.RunCommand:
		return b.run(s, c)
	case *instructions.CopyCommand:
		from, err := expand(c.From)
		if err != nil {
			return err
		}
		return b.copy(s, copyRequest{
			text: "COPY", sources: c.SourcePaths, dest: c.DestPath, from: from,
			chown: c.Chown, chmod: c.Chmod, contents: c.SourceContents,
		})
	case *instructions.AddCommand:
		return b.copy(s, copyRequest{
			text: "ADD", add: true, sources: c.SourcePaths, dest: c.DestPath,
			chown: c.Chown, chmod: c.Chmod, contents: c.SourceContents,
		})
	}
	return fmt.Errorf("instruction %s is not supported by this builder", strings.ToUpper(cmd.Name()))
}

func jsonList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

// commandLine is the argv of a CMD, ENTRYPOINT or RUN: the shell form
// runs under the stage's shell.
func (b *builder) commandLine(s *stage, c instructions.ShellDependantCmdLine) []string {
	if !c.PrependShell {
		return slices.Clone(c.CmdLine)
	}
	return append(slices.Clone(s.cfg.shell()), strings.Join(c.CmdLine, " "))
}

// workdir sets the working directory, relative to the current one, and
// creates it when the image lacks it.
func (b *builder) workdir(s *stage, p string) error {
	if !path.IsAbs(p) {
		cur := s.cfg.Config.WorkingDir
		if cur == "" {
			cur = "/"
		}
		p = path.Join(cur, p)
	}
	p = path.Clean(p)
	text := "WORKDIR " + p
	k := key("workdir", p)
	if ok, err := b.cached(s, k); ok || err != nil {
		return err
	}
	next := s.cfg.clone()
	next.Config.WorkingDir = p
	saved := s.cfg
	s.cfg = next
	user := s.cfg.Config.User
	err := b.inContainer(s, nil, "/bin/sh -c #(nop) "+text, k, func(r *rootFS) error {
		// Made for the USER that will work there, as BuildKit and
		// buildah make it.
		uid, gid, err := userIDs(r, user)
		if err != nil {
			return err
		}
		return r.mkdirAll(p, uid, gid, 0o755)
	})
	if err != nil {
		s.cfg = saved
	}
	return err
}

// runArgs are the ARG values a RUN sees, in declaration order, as K=V.
func (s *stage) runArgs() []string {
	env := map[string]bool{}
	for _, kv := range s.cfg.Config.Env {
		k, _, _ := strings.Cut(kv, "=")
		env[k] = true
	}
	var out []string
	for _, k := range s.order {
		if !env[k] {
			out = append(out, k+"="+s.args[k])
		}
	}
	return out
}

// run runs a RUN in a container on the stage's image.
func (b *builder) run(s *stage, c *instructions.RunCommand) error {
	if len(c.Files) > 0 {
		return fmt.Errorf("heredocs are not supported by this builder: write the script to a file and COPY it")
	}
	args := b.commandLine(s, c.ShellDependantCmdLine)
	argEnv := s.runArgs()
	createdBy := strings.Join(args, " ")
	if len(argEnv) > 0 {
		createdBy = fmt.Sprintf("|%d %s %s", len(argEnv), strings.Join(argEnv, " "), createdBy)
	}
	k := key("run", createdBy)
	if ok, err := b.cached(s, k); ok || err != nil {
		return err
	}
	return b.runStep(s, args, argEnv, createdBy, k)
}
