package bench

import (
	"path/filepath"

	"github.com/unionmount/unionmount/internal/lowerlist"
)

// unionmount is our binary with its defaults (kernel caches on, lookup
// cache on, passthrough for upper files where the kernel allows it); the
// nopassthrough variant shows what passthrough buys.
type unionmount struct {
	name  string
	extra []string // flags besides the layers
	cases []string // the cases it runs; nil: all
}

func (d unionmount) RunsCase(name string) bool {
	if d.cases == nil {
		return true
	}
	for _, c := range d.cases {
		if c == name {
			return true
		}
	}
	return false
}

func init() {
	register(unionmount{name: "unionmount"})
	register(unionmount{name: "unionmount-nopassthrough", extra: []string{"--no-passthrough"}})
}

func (d unionmount) Name() string { return d.name }

func (d unionmount) Check(env *Env) error {
	if err := needFUSE(); err != nil {
		return err
	}
	_, err := env.unionmountBin()
	return err
}

func (d unionmount) Version(env *Env) string {
	bin, err := env.unionmountBin()
	if err != nil {
		return ""
	}
	return versionOf(bin, "unionmount", "--version")
}

func (d unionmount) Mount(env *Env, st Stack, mnt string) (*Mount, error) {
	bin, err := env.unionmountBin()
	if err != nil {
		return nil, err
	}
	argv := []string{bin, "-f", "--lower", lowerlist.Join(st.Lowers), "--upper", st.Upper, "--workdir", st.Work}
	argv = append(argv, d.extra...)
	argv = append(argv, mnt)
	dm, err := startDaemon(d.name, argv, mnt, filepath.Join(env.logs, d.name+".log"))
	if err != nil {
		return nil, err
	}
	return &Mount{Dir: mnt, daemon: dm}, nil
}
