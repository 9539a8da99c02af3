package bench

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Sizes sets how big each workload's data is.
type Sizes struct {
	TreeFiles   int     // files of the metadata-walk tree, over 3 layers
	DirEntries  int     // entries of the one big directory, over 2 layers
	LayerCounts []int   // stack depths of the lookup-scaling case
	Lookups     int     // files looked up once each, per depth
	Commands    int     // names probed along a 6-directory PATH
	FileSize    int64   // the sequential read and write file
	RandReads   int     // 4 KiB random reads
	CopyUpSizes []int64 // files copied up by appending one byte
	MetaFiles   int     // files chmod'ed, and as many touched
	ChurnFiles  int     // files created, half renamed, all deleted
	DeleteFiles int     // lower files deleted before listing their parent
	ChownFiles  int     // files of the lower tree chown -R walks
	Requests    int     // calls per loop of the per-request case
	GoSrc       string  // directory tarred once for the real-tree case
}

// Config is everything a run needs; cmd/unionbench fills it from flags.
type Config struct {
	Seed    uint64
	Reps    int
	Sizes   Sizes
	DataDir string // generated layers (kept between runs) and scratch mounts
	OutDir  string // report, charts, csv/json
	Format  string // "md", "csv" or "json": csv and json are written beside the report

	// Drivers and Cases select by name; empty means all.
	Drivers []string
	Cases   []string

	// Binaries; empty means "look on PATH" (unionmount: beside this
	// program first).
	UnionmountBin    string
	FuseOverlayfsBin string
	UnionfsFuseBin   string

	// User owns the generated data and runs the rootless drivers' daemons
	// and workloads: any non-root user that fusermount3 can name.
	User string

	Quick bool   // recorded in the report
	Args  string // the command line, recorded in the report
}

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// DefaultConfig is the full benchmark set at full size (a 50k-file tree,
// a 100k-entry directory, 10k lower deletes, the whole Go source tree of
// the toolchain) but for churn: 10k files, not the full 20k, so that make
// bench stays under 15 minutes; bench/README.md gives the measurements.
func DefaultConfig() Config {
	return Config{
		Seed: 1,
		Reps: 3,
		Sizes: Sizes{
			TreeFiles:   50000,
			DirEntries:  100000,
			LayerCounts: []int{1, 8, 32, 64, 128},
			Lookups:     2000,
			Commands:    2000,
			FileSize:    gib,
			RandReads:   20000,
			CopyUpSizes: []int64{4 * kib, 64 * kib, mib, 16 * mib, 256 * mib, gib},
			MetaFiles:   500,
			ChurnFiles:  10000,
			DeleteFiles: 10000,
			ChownFiles:  1000,
			Requests:    3000,
			GoSrc:       defaultGoSrc(),
		},
		User:    "nobody",
		DataDir: "/var/tmp/unionbench",
		OutDir:  filepath.Join("bench", "results"),
		Format:  "md",
	}
}

// QuickConfig is the smoke-test set: tiny sizes, one repetition, well under
// two minutes. It checks that the tool works, not how fast anything is.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Quick = true
	c.Reps = 1
	c.Sizes = Sizes{
		TreeFiles:   2000,
		DirEntries:  2000,
		LayerCounts: []int{1, 8, 32},
		Lookups:     100,
		Commands:    100,
		FileSize:    16 * mib,
		RandReads:   500,
		CopyUpSizes: []int64{4 * kib, mib, 8 * mib},
		MetaFiles:   100,
		ChurnFiles:  500,
		DeleteFiles: 300,
		ChownFiles:  300,
		Requests:    300,
		GoSrc:       filepath.Join(defaultGoSrc(), "strconv"),
	}
	c.DataDir = "/var/tmp/unionbench-quick"
	return c
}

// defaultGoSrc is the source tree of the Go installation on this machine:
// $(go env GOROOT)/src, else /usr/local/go/src. The real-tree case tars it
// once into the data directory.
func defaultGoSrc() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if root := strings.TrimSpace(string(out)); root != "" {
			return filepath.Join(root, "src")
		}
	}
	return "/usr/local/go/src"
}

// validate checks the values flags cannot check by type.
func (c *Config) validate() error {
	if c.Reps < 1 {
		return fmt.Errorf("--reps %d: need at least 1", c.Reps)
	}
	switch c.Format {
	case "md", "csv", "json":
	default:
		return fmt.Errorf("--format %q: use md, csv or json", c.Format)
	}
	s := c.Sizes
	for _, n := range []int{s.TreeFiles, s.DirEntries, s.Lookups, s.Commands, s.RandReads,
		s.MetaFiles, s.ChurnFiles, s.DeleteFiles, s.ChownFiles, s.Requests} {
		if n < 1 {
			return fmt.Errorf("every size must be at least 1 (got %d)", n)
		}
	}
	for _, n := range s.LayerCounts {
		if n < 1 || n > 500 {
			return fmt.Errorf("layer count %d: use 1 to 500 (the kernel's stack limit)", n)
		}
	}
	if s.FileSize < 4*kib {
		return fmt.Errorf("file size %d: use at least 4 KiB", s.FileSize)
	}
	if c.DataDir == "" || c.OutDir == "" {
		return fmt.Errorf("--data and --out must name directories")
	}
	return nil
}
