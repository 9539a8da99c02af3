package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/store"
)

// Options is one build.
type Options struct {
	Store *store.Store
	// Context is the build context (files COPY and ADD read).
	Context *Context
	// Dockerfile is the Dockerfile's text; DockerfileName names it in
	// errors.
	Dockerfile     []byte
	DockerfileName string
	Tags           []string          // NAME[:TAG] given to the built image
	BuildArgs      map[string]string // --build-arg K=V
	Target         string            // stage to build (default: the last)
	NoCache        bool
	Platform       string // "" or linux/GOARCH
	// Out receives the step lines and RUN output; nil discards them.
	Out io.Writer
	// Run runs a step's container (created, not started) to its end with
	// the given output streams, and returns its exit status. Cancelling
	// ctx must stop it.
	Run func(ctx context.Context, c *store.Container, stdout, stderr io.Writer) (int, error)
	// Pull, when set, fetches a FROM image the store lacks.
	Pull func(ctx context.Context, ref string) (*store.Image, error)
}

// ExitError is a RUN that exited non-zero: the build fails with its
// status.
type ExitError struct {
	Cmd  string
	Code int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("the command '%s' returned a non-zero code: %d", e.Cmd, e.Code)
}

// defaultPath is the PATH of a stage whose base sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Platform is what this machine builds.
func Platform() string { return "linux/" + runtime.GOARCH }

// stage is a stage being built.
type stage struct {
	name  string
	img   *store.Image
	cfg   *config
	args  map[string]string // declared ARGs with a value
	order []string          // their names in declaration order
	// cmdSet: this stage set CMD (ENTRYPOINT then keeps it).
	cmdSet bool
}

type builder struct {
	o        Options
	ctx      context.Context
	out      io.Writer
	lex      *shell.Lex
	meta     map[string]string // global ARGs (before the first FROM)
	used     map[string]bool   // build args some ARG declared
	stages   []*stage
	step     int
	steps    int
	fileName string
}

// Build builds the Dockerfile and returns the image of the target stage,
// tagged with o.Tags.
func Build(ctx context.Context, o Options) (*store.Image, error) {
	b := &builder{o: o, ctx: ctx, out: o.Out, meta: map[string]string{}, used: map[string]bool{}, fileName: o.DockerfileName}
	if b.out == nil {
		b.out = io.Discard
	}
	if b.fileName == "" {
		b.fileName = "Dockerfile"
	}
	if o.Platform != "" && o.Platform != Platform() && o.Platform != "linux" {
		return nil, fmt.Errorf("--platform %s: this machine builds %s only", o.Platform, Platform())
	}
	for _, t := range o.Tags {
		if _, err := image.ParseReference(t); err != nil {
			return nil, err
		}
	}
	stages, err := b.parse()
	if err != nil {
		return nil, err
	}
	for _, s := range stages {
		b.steps += 1 + len(s.Commands)
	}
	var img *store.Image
	for i := range stages {
		if img, err = b.buildStage(&stages[i]); err != nil {
			return nil, err
		}
	}
	var unused []string
	for k := range o.BuildArgs {
		if !b.used[k] && !isPredefined(k) {
			unused = append(unused, k)
		}
	}
	if len(unused) > 0 {
		slices.Sort(unused)
		fmt.Fprintf(b.out, "[Warning] One or more build-args %v were not consumed\n", unused)
	}
	fmt.Fprintf(b.out, "Successfully built %s\n", short(img.ID))
	for _, t := range o.Tags {
		r, _ := image.ParseReference(t)
		if err := o.Store.Tag(img, r.String()); err != nil {
			return nil, err
		}
		fmt.Fprintf(b.out, "Successfully tagged %s\n", r.String())
	}
	return img, nil
}

// parse parses the Dockerfile, evaluates the ARGs before the first FROM
// and returns the stages up to the target.
func (b *builder) parse() ([]instructions.Stage, error) {
	o := b.o
	res, err := parser.Parse(bytes.NewReader(o.Dockerfile))
	if err != nil {
		return nil, b.located(err)
	}
	b.lex = shell.NewLex(res.EscapeToken)
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, b.located(err)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM instruction: a Dockerfile starts with FROM (after ARGs)", b.fileName)
	}
	target := len(stages) - 1
	if o.Target != "" {
		i, ok := instructions.HasStage(stages, o.Target)
		if !ok {
			return nil, fmt.Errorf("--target %s: no stage of that name in %s", o.Target, b.fileName)
		}
		target = i
	}
	for k, v := range predefinedArgs() {
		b.meta[k] = v
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			v, err := b.argValue(kv, b.meta)
			if err != nil {
				return nil, b.located(parser.WithLocation(err, a.Location()))
			}
			if v != nil {
				b.meta[kv.Key] = *v
			} else {
				delete(b.meta, kv.Key)
			}
		}
	}
	return stages[:target+1], nil
}

// located turns a parse error into one line naming the file and line.
func (b *builder) located(err error) error {
	var le *parser.LocationError
	msg := err.Error()
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		return fmt.Errorf("%s:%d: %s", b.fileName, le.Locations[0][0].Start.Line, parseErrorPrefix.ReplaceAllString(msg, ""))
	}
	return fmt.Errorf("%s: %s", b.fileName, msg)
}

// parseErrorPrefix is what BuildKit puts before a parse error; the
// builder says file:line instead.
var parseErrorPrefix = regexp.MustCompile(`^(dockerfile parse error on line \d+: )?`)

func short(id digest.Digest) string { return id.Encoded()[:12] }

// predefinedArgs are the ARGs every Dockerfile may declare without a
// default: the platform ones (BuildKit's automatic platform ARGs).
func predefinedArgs() map[string]string {
	p := Platform()
	m := map[string]string{}
	for _, pre := range []string{"TARGET", "BUILD"} {
		m[pre+"PLATFORM"] = p
		m[pre+"OS"] = "linux"
		m[pre+"ARCH"] = runtime.GOARCH
		m[pre+"VARIANT"] = ""
	}
	return m
}

// isPredefined: the proxy ARGs docker passes without a declaration.
func isPredefined(k string) bool {
	switch strings.ToUpper(k) {
	case "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY":
		return true
	}
	return false
}

// argValue is the value ARG kv gets: the --build-arg, else its default
// (substituted with env), else a global ARG of the same name; nil when
// it has none.
func (b *builder) argValue(kv instructions.KeyValuePairOptional, env map[string]string) (*string, error) {
	b.used[kv.Key] = true
	if v, ok := b.o.BuildArgs[kv.Key]; ok {
		return &v, nil
	}
	if kv.Value != nil {
		v, _, err := b.lex.ProcessWord(*kv.Value, envGetter(env))
		if err != nil {
			return nil, err
		}
		return &v, nil
	}
	if v, ok := b.meta[kv.Key]; ok {
		return &v, nil
	}
	return nil, nil
}

type mapEnv map[string]string

func (m mapEnv) Get(k string) (string, bool) { v, ok := m[k]; return v, ok }
func (m mapEnv) Keys() []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func envGetter(m map[string]string) shell.EnvGetter { return mapEnv(m) }

// expandEnv is what words of a stage's instructions are substituted with:
// its ARGs, then its ENV over them.
func (s *stage) expandEnv() map[string]string {
	m := map[string]string{}
	for k, v := range s.args {
		m[k] = v
	}
	for _, kv := range s.cfg.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// buildStage runs FROM and the stage's instructions.
func (b *builder) buildStage(st *instructions.Stage) (*store.Image, error) {
	b.step++
	fmt.Fprintf(b.out, "Step %d/%d : %s\n", b.step, b.steps, st.SourceCode)
	base, err := b.lex.ProcessWordWithMatches(st.BaseName, envGetter(b.meta))
	if err != nil {
		return nil, b.located(parser.WithLocation(err, st.Location))
	}
	img, err := b.from(base.Result)
	if err != nil {
		return nil, err
	}
	cfg, err := b.config(img)
	if err != nil {
		return nil, err
	}
	// A stage's environment has a PATH, as BuildKit and buildah give it.
	if !slices.ContainsFunc(cfg.Config.Env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		cfg.Config.Env = append([]string{defaultPath}, cfg.Config.Env...)
	}
	s := &stage{name: st.Name, img: img, cfg: cfg, args: map[string]string{}}
	fmt.Fprintf(b.out, " ---> %s\n", short(img.ID))
	// ONBUILD triggers of the base run first, and do not pass on.
	if triggers := cfg.Config.OnBuild; len(triggers) > 0 {
		fmt.Fprintf(b.out, "# Executing %d build trigger", len(triggers))
		if len(triggers) > 1 {
			fmt.Fprint(b.out, "s")
		}
		fmt.Fprintln(b.out)
		s.cfg.Config.OnBuild = nil
		for _, t := range triggers {
			res, err := parser.Parse(strings.NewReader(t))
			if err != nil || len(res.AST.Children) != 1 {
				return nil, fmt.Errorf("ONBUILD trigger %q of the base image: not one instruction", t)
			}
			cmd, err := instructions.ParseCommand(res.AST.Children[0])
			if err != nil {
				return nil, fmt.Errorf("ONBUILD trigger %q of the base image: %w", t, err)
			}
			if err := b.runCommand(s, cmd); err != nil {
				return nil, err
			}
		}
	}
	for _, cmd := range st.Commands {
		b.step++
		fmt.Fprintf(b.out, "Step %d/%d : %s\n", b.step, b.steps, sourceOf(cmd))
		if err := b.runCommand(s, cmd); err != nil {
			return nil, err
		}
	}
	b.stages = append(b.stages, s)
	return s.img, nil
}

func sourceOf(cmd instructions.Command) string {
	if s, ok := cmd.(fmt.Stringer); ok {
		return s.String()
	}
	return cmd.Name()
}

// from resolves a FROM name: scratch, an earlier stage, a stored image,
// or one Pull fetches.
func (b *builder) from(name string) (*store.Image, error) {
	if strings.EqualFold(name, "scratch") {
		return b.o.Store.Scratch()
	}
	for _, s := range b.stages {
		if s.name != "" && strings.EqualFold(s.name, name) {
			return s.img, nil
		}
	}
	img, err := b.o.Store.LookupImage(name)
	if err == nil {
		return img, nil
	}
	if !errors.Is(err, image.ErrNotFound) {
		return nil, err
	}
	if b.o.Pull != nil {
		return b.o.Pull(b.ctx, name)
	}
	return nil, fmt.Errorf("%w: image %s not found: pull it first or load it (unionctl load), then build again", image.ErrNotFound, name)
}

// config reads an image's config.
func (b *builder) config(img *store.Image) (*config, error) {
	_, raw, err := b.o.Store.Config(img)
	if err != nil {
		return nil, err
	}
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: config of %s: %w", image.ErrCorrupt, img.ID, err)
	}
	return &c, nil
}

// key hashes the parts of a step that decide its result, beside its
// parent image.
func key(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(p), p)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// commitStep stores the step's image (layer from c when c is not nil)
// with the history entry createdBy, and makes it the stage's image.
func (b *builder) commitStep(s *stage, c *store.Container, createdBy, cacheKey string) error {
	now := time.Now().UTC()
	next := s.cfg.clone()
	img, err := b.o.Store.PutStep(store.StepOptions{
		Parent: s.img, Container: c, CreatedBy: createdBy, CacheKey: cacheKey,
		Config: func(diffID digest.Digest) ([]byte, error) {
			return next.appendStep(diffID, createdBy, now)
		},
	})
	if err != nil {
		return err
	}
	return b.adopt(s, img)
}

// adopt makes img the stage's current image.
func (b *builder) adopt(s *stage, img *store.Image) error {
	cfg, err := b.config(img)
	if err != nil {
		return err
	}
	s.img, s.cfg = img, cfg
	fmt.Fprintf(b.out, " ---> %s\n", short(img.ID))
	return nil
}

// cached reuses an earlier step's image, if there is one.
func (b *builder) cached(s *stage, cacheKey string) (bool, error) {
	if b.o.NoCache {
		return false, nil
	}
	img := b.o.Store.CachedStep(s.img.ID, cacheKey)
	if img == nil {
		return false, nil
	}
	fmt.Fprintln(b.out, " ---> Using cache")
	return true, b.adopt(s, img)
}

// configStep is a step that changes the config only: change edits it.
func (b *builder) configStep(s *stage, text string, change func(c *config)) error {
	createdBy := "/bin/sh -c #(nop)  " + text
	k := key("config", text)
	if ok, err := b.cached(s, k); ok || err != nil {
		return err
	}
	saved := s.cfg
	s.cfg = s.cfg.clone()
	change(s.cfg)
	if err := b.commitStep(s, nil, createdBy, k); err != nil {
		s.cfg = saved
		return err
	}
	return nil
}
