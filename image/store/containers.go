package store

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image"
)

// Container states.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusExited  = "exited"
)

// Mount is a volume of a container: a host directory bound at
// Destination ("bind"), or a named volume of the store ("volume").
// Writes there bypass the union.
type Mount struct {
	Type        string `json:"type"`
	Source      string `json:"source"` // host path or volume name
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"read_only,omitempty"`
}

// RunConfig is what a container runs, resolved from the image config and
// the command line when the container is created.
type RunConfig struct {
	Args       []string `json:"args"` // entrypoint + command
	Env        []string `json:"env"`
	WorkingDir string   `json:"working_dir"`
	User       string   `json:"user,omitempty"`
	Hostname   string   `json:"hostname"`
}

// State is a container's life so far.
type State struct {
	Status     string    `json:"status"`
	Pid        int       `json:"pid,omitempty"`       // of the container's init, while running
	PidStart   uint64    `json:"pid_start,omitempty"` // its start time, against pid reuse
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	ExitCode   int       `json:"exit_code"`
	Error      string    `json:"error,omitempty"`
}

// Container is the record of one container (containers/<id>/container.json).
type Container struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Image      digest.Digest   `json:"image"`
	ImageName  string          `json:"image_name"`
	Layers     []digest.Digest `json:"layers"` // the image's, bottom first
	Created    time.Time       `json:"created"`
	Config     RunConfig       `json:"config"`
	Mounts     []Mount         `json:"mounts"`
	Runtime    string          `json:"runtime,omitempty"` // "" (built in) or "runc"
	AutoRemove bool            `json:"auto_remove,omitempty"`
	State      State           `json:"state"`
}

// Running reports whether the container's process is alive.
func (c *Container) Running() bool {
	if c.State.Status != StatusRunning || c.State.Pid <= 0 {
		return false
	}
	st, err := ProcessStart(c.State.Pid)
	return err == nil && st == c.State.PidStart
}

// ProcessStart returns the start time of pid (field 22 of
// /proc/PID/stat), which tells a process from a later one with its pid.
func ProcessStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Container paths.
func (s *Store) containerDir(id string) string { return s.path("containers", id) }

// Upper is the container's writable layer.
func (s *Store) Upper(c *Container) string { return filepath.Join(s.containerDir(c.ID), "upper") }

// Work is the union's workdir for the container.
func (s *Store) Work(c *Container) string { return filepath.Join(s.containerDir(c.ID), "work") }

// Merged is where the container's union is mounted.
func (s *Store) Merged(c *Container) string { return filepath.Join(s.containerDir(c.ID), "merged") }

// ContainerDir is the container's directory, for runtime state (bundles).
func (s *Store) ContainerDir(c *Container) string { return s.containerDir(c.ID) }

// Lowers returns the container's read-only layers, top first: its init
// layer, then the image's layers.
func (s *Store) Lowers(c *Container) []string {
	out := []string{filepath.Join(s.containerDir(c.ID), "init")}
	for i := len(c.Layers) - 1; i >= 0; i-- {
		if s.isLazy(c.Layers[i]) {
			out = append(out, s.lazyMountpoint(c, c.Layers[i]))
		} else {
			out = append(out, s.LayerDiff(c.Layers[i]))
		}
	}
	return out
}

// isLazy: layer id is not complete in the store, and lazy there.
func (s *Store) isLazy(id digest.Digest) bool {
	if s.hasLayer(id) {
		return false
	}
	_, err := s.LazyLayer(id)
	return err == nil
}

// ImageLowers is Lowers without the init layer: the image alone.
func (s *Store) ImageLowers(c *Container) []string { return s.Lowers(c)[1:] }

// Containers lists the containers, newest first.
func (s *Store) Containers() ([]*Container, error) {
	ents, err := os.ReadDir(s.path("containers"))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []*Container
	for _, e := range ents {
		var c Container
		if err := readJSON(filepath.Join(s.containerDir(e.Name()), "container.json"), &c); err != nil {
			continue
		}
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// LookupContainer finds a container by name, ID or unique ID prefix.
func (s *Store) LookupContainer(ref string) (*Container, error) {
	cs, err := s.Containers()
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.Name == ref || c.ID == ref {
			return c, nil
		}
	}
	var found []*Container
	for _, c := range cs {
		if ref != "" && strings.HasPrefix(c.ID, ref) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("%w: no container %q (see unionctl ps -a)", image.ErrNotFound, ref)
	}
	return nil, fmt.Errorf("%w %q: matches %d containers; give more of the ID", image.ErrAmbiguous, ref, len(found))
}

// CreateOptions says what container to make.
type CreateOptions struct {
	Name        string
	Image       string   // reference
	Cmd         []string // replaces the image's Cmd when not empty
	Entrypoint  []string // replaces the image's Entrypoint when not nil
	Env         []string // K=V, over the image's
	WorkingDir  string
	User        string
	Hostname    string
	Mounts      []Mount
	VolumesFrom []string // containers whose mounts to share
	Runtime     string
	AutoRemove  bool
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// defaultPath is the PATH a container gets when its image sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// CreateContainer makes a container: its record, init layer, empty upper
// and workdir. Named volumes it mentions are created.
func (s *Store) CreateContainer(opts CreateOptions) (*Container, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	img, err := s.LookupImage(opts.Image)
	if err != nil {
		return nil, err
	}
	cfg, _, err := s.Config(img)
	if err != nil {
		return nil, err
	}
	cs, err := s.Containers()
	if err != nil {
		return nil, err
	}
	c := &Container{
		ID:         randomID(),
		Name:       opts.Name,
		Image:      img.ID,
		ImageName:  opts.Image,
		Layers:     img.Layers,
		Created:    time.Now().UTC(),
		Runtime:    opts.Runtime,
		AutoRemove: opts.AutoRemove,
		State:      State{Status: StatusCreated},
	}
	if c.Name == "" {
		c.Name = generateName(cs)
	}
	if !nameRE.MatchString(c.Name) {
		return nil, fmt.Errorf("container name %q: use letters, digits, '_', '.', '-' (first a letter or digit)", c.Name)
	}
	for _, o := range cs {
		if o.Name == c.Name {
			return nil, fmt.Errorf("%w: container name %q is used by %s: remove it (unionctl rm %s) or choose another --name",
				image.ErrExists, c.Name, o.ID[:12], c.Name)
		}
	}

	ic := cfg.Config
	entry := ic.Entrypoint
	if opts.Entrypoint != nil {
		entry = opts.Entrypoint
	}
	cmd := ic.Cmd
	if len(opts.Cmd) > 0 {
		cmd = opts.Cmd
	}
	c.Config.Args = append(append([]string{}, entry...), cmd...)
	if len(c.Config.Args) == 0 {
		return nil, fmt.Errorf("no command: the image %s has none; give one after the image name", opts.Image)
	}
	c.Config.Env = mergeEnv(ic.Env, opts.Env)
	c.Config.WorkingDir = ic.WorkingDir
	if opts.WorkingDir != "" {
		c.Config.WorkingDir = opts.WorkingDir
	}
	if c.Config.WorkingDir == "" {
		c.Config.WorkingDir = "/"
	}
	if !path.IsAbs(c.Config.WorkingDir) {
		return nil, fmt.Errorf("working directory %q: give an absolute path", c.Config.WorkingDir)
	}
	c.Config.User = ic.User
	if opts.User != "" {
		c.Config.User = opts.User
	}
	c.Config.Hostname = opts.Hostname
	if c.Config.Hostname == "" {
		c.Config.Hostname = c.ID[:12]
	}

	mounts := append([]Mount{}, opts.Mounts...)
	for _, ref := range opts.VolumesFrom {
		from, err := s.LookupContainer(ref)
		if err != nil {
			return nil, fmt.Errorf("--volumes-from: %w", err)
		}
		mounts = append(mounts, from.Mounts...)
	}
	seen := map[string]bool{}
	for i := range mounts {
		m := &mounts[i]
		m.Destination = path.Clean(m.Destination)
		if !path.IsAbs(m.Destination) || m.Destination == "/" {
			return nil, fmt.Errorf("volume destination %q: give an absolute path other than /", m.Destination)
		}
		if seen[m.Destination] {
			return nil, fmt.Errorf("two volumes at %s: give each destination once", m.Destination)
		}
		seen[m.Destination] = true
		switch m.Type {
		case "volume":
			if _, err := s.createVolumeLocked(m.Source); err != nil {
				return nil, err
			}
		case "bind":
			st, err := os.Stat(m.Source)
			if err != nil {
				return nil, fmt.Errorf("volume source %s: %w (create it first)", m.Source, err)
			}
			if !st.IsDir() && !st.Mode().IsRegular() {
				return nil, fmt.Errorf("volume source %s: not a directory or regular file", m.Source)
			}
		default:
			return nil, fmt.Errorf("mount type %q: use bind or volume", m.Type)
		}
	}
	c.Mounts = mounts

	stage, err := s.tempDir("container-")
	if err != nil {
		return nil, err
	}
	defer removeAll(stage)
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(stage, d), 0o755); err != nil {
			return nil, fmt.Errorf("create container: %w", err)
		}
	}
	os.Chmod(filepath.Join(stage, "work"), 0o700)
	if err := s.makeInitLayer(filepath.Join(stage, "init"), c); err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	if err := writeJSON(filepath.Join(stage, "container.json"), c); err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	if err := os.Chmod(stage, 0o711); err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	if err := os.Rename(stage, s.containerDir(c.ID)); err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	return c, nil
}

// mergeEnv returns base with over's K=V pairs replacing or adding, and a
// default PATH if neither sets one.
func mergeEnv(base, over []string) []string {
	var out []string
	idx := map[string]int{}
	for _, kv := range append(append([]string{}, base...), over...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	if _, ok := idx["PATH"]; !ok {
		out = append([]string{defaultPath}, out...)
	}
	return out
}

// makeInitLayer writes the layer between the image and the upper: the
// mount points the runtime needs (so they never show in diff or commit),
// and /etc/hostname, /etc/hosts, /etc/resolv.conf, as docker's init layer.
func (s *Store) makeInitLayer(dir string, c *Container) error {
	dirs := []string{"", "proc", "sys", "dev", "etc"}
	for _, m := range c.Mounts {
		dirs = append(dirs, strings.TrimPrefix(path.Dir(m.Destination), "/"))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, m := range c.Mounts {
		p := filepath.Join(dir, m.Destination)
		src := m.Source
		if m.Type == "volume" {
			src = s.VolumePath(m.Source)
		}
		if st, err := os.Stat(src); err == nil && st.Mode().IsRegular() {
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		resolv = nil
	}
	files := map[string]string{
		"etc/hostname":    c.Config.Hostname + "\n",
		"etc/hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + c.Config.Hostname + "\n",
		"etc/resolv.conf": string(resolv),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var (
	adjectives = []string{"brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
		"nifty", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zealous"}
	nouns = []string{"ada", "babbage", "curie", "dijkstra", "euler", "fermat", "gauss", "hopper", "knuth",
		"lovelace", "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wirth"}
)

func generateName(cs []*Container) string {
	taken := map[string]bool{}
	for _, c := range cs {
		taken[c.Name] = true
	}
	id := randomID()
	for i := 0; ; i++ {
		a := adjectives[int(id[i%60])%len(adjectives)]
		n := nouns[int(id[(i+1)%60]+id[(i+2)%60])%len(nouns)]
		name := a + "_" + n
		if i >= 8 {
			name += "_" + id[:6]
		}
		if !taken[name] {
			return name
		}
		id = randomID()
	}
}

// UpdateContainer changes a container's record under the lock.
func (s *Store) UpdateContainer(id string, change func(*Container) error) (*Container, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.updateContainerLocked(id, change)
}

func (s *Store) updateContainerLocked(id string, change func(*Container) error) (*Container, error) {
	var c Container
	p := filepath.Join(s.containerDir(id), "container.json")
	if err := readJSON(p, &c); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: container %s", image.ErrNotFound, id)
		}
		return nil, err
	}
	if err := change(&c); err != nil {
		return nil, err
	}
	if err := writeStateJSON(p, &c); err != nil {
		return nil, fmt.Errorf("update container %s: %w", id, err)
	}
	return &c, nil
}

// RemoveContainer removes the container, its upper and mount. A running
// container is refused unless force, which kills it first.
func (s *Store) RemoveContainer(c *Container, force bool) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if c.Running() {
		if !force {
			return fmt.Errorf("%w: container %s is running: stop it first or use rm --force", image.ErrInUse, c.Name)
		}
		unix.Kill(c.State.Pid, unix.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for c.Running() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling for the process to go
		}
	}
	if err := s.Unmount(c); err != nil {
		return err
	}
	if err := s.discard(s.containerDir(c.ID)); err != nil {
		return fmt.Errorf("remove container %s: %w", c.Name, err)
	}
	return nil
}
