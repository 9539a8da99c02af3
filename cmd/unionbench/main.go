// Command unionbench measures union filesystems against each other: a plain
// directory, kernel overlayfs (as root and in a user namespace), unionmount
// (as root with and without passthrough, and as a user), fuse-overlayfs and
// unionfs-fuse, on generated layers, and writes a Markdown report with SVG
// charts.
//
//	unionbench [--quick] [--out DIR] [--data DIR] [--reps N] [--format md|csv|json] [size flags]
//
// It needs root (kernel overlayfs, /dev/fuse, dropping caches); a driver
// that cannot run is reported as skipped with the reason. See bench/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/unionmount/unionmount/bench"
)

// Exit statuses.
const (
	exitOK      = 0 // report written
	exitFailure = 1 // the benchmark could not run or was interrupted
	exitUsage   = 2 // bad arguments
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command: the files written go to stdout, progress and
// errors to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, fs, help, err := parseArgs(args)
	if help {
		fmt.Fprint(stdout, usage(fs))
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "unionbench: %v\n", err)
		return exitUsage
	}
	cfg.Args = strings.TrimSpace("unionbench " + strings.Join(args, " "))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Measure(ctx, cfg, stderr)
	if res == nil {
		fmt.Fprintf(stderr, "unionbench: %v\n", err)
		return exitFailure
	}
	files, werr := bench.Write(res, cfg.OutDir)
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	switch {
	case werr != nil:
		fmt.Fprintf(stderr, "unionbench: %v\n", werr)
		return exitFailure
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "unionbench: interrupted; the report holds the runs that finished")
		return exitFailure
	case err != nil:
		fmt.Fprintf(stderr, "unionbench: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// parseArgs fills a bench.Config. --quick picks the base (quick or default
// sizes); every other flag overrides it.
func parseArgs(args []string) (bench.Config, *pflag.FlagSet, bool, error) {
	c := bench.DefaultConfig()
	for _, a := range args {
		if a == "--quick" || a == "--quick=true" {
			c = bench.QuickConfig()
		}
	}
	s := &c.Sizes
	var (
		quick, help         bool
		fileSize, copySizes = sizeFlag(s.FileSize), sizesFlag(s.CopyUpSizes)
	)
	fs := pflag.NewFlagSet("unionbench", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.BoolVar(&quick, "quick", false, "tiny sizes and one repetition (< 2 minutes): a smoke test, not a measurement")
	fs.StringVar(&c.OutDir, "out", c.OutDir, "write the report and charts into `DIR`")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "keep generated layers and scratch mounts in `DIR`")
	fs.StringVar(&c.Format, "format", c.Format, "md, or also write results.csv / results.json: md|csv|json")
	fs.IntVar(&c.Reps, "reps", c.Reps, "repetitions of every case on every driver")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the generated data")
	fs.StringSliceVar(&c.Drivers, "drivers", nil, "run only these `NAMES`: "+strings.Join(bench.Drivers(), ","))
	fs.StringSliceVar(&c.Cases, "cases", nil, "run only these cases (`NAMES` as in the report)")
	fs.StringVar(&c.User, "user", c.User, "non-root `USER` that owns the generated data and runs the rootless drivers")
	fs.StringVar(&c.UnionmountBin, "unionmount", "", "unionmount `BINARY` (default: beside unionbench, else PATH)")
	fs.StringVar(&c.FuseOverlayfsBin, "fuse-overlayfs", "", "fuse-overlayfs `BINARY` (default: PATH)")
	fs.StringVar(&c.UnionfsFuseBin, "unionfs-fuse", "", "unionfs-fuse `BINARY` (default: PATH)")
	fs.IntVar(&s.TreeFiles, "tree-files", s.TreeFiles, "files of the metadata-walk tree (3 layers)")
	fs.IntVar(&s.DirEntries, "dir-entries", s.DirEntries, "entries of the big directory (2 layers)")
	fs.IntSliceVar(&s.LayerCounts, "layers", s.LayerCounts, "layer counts of the lookup-scaling case")
	fs.IntVar(&s.Lookups, "lookups", s.Lookups, "files looked up per layer count")
	fs.IntVar(&s.Commands, "commands", s.Commands, "command names probed along PATH")
	fs.StringVar(&fileSize, "file-size", fileSize, "`SIZE` of the sequential read and write file")
	fs.IntVar(&s.RandReads, "rand-reads", s.RandReads, "number of 4 KiB random reads")
	fs.StringVar(&copySizes, "copyup-sizes", copySizes, "file `SIZES` copied up")
	fs.IntVar(&s.MetaFiles, "meta-files", s.MetaFiles, "files chmod'ed (and as many touched)")
	fs.IntVar(&s.Requests, "requests", s.Requests, "calls per loop of the per-request case")
	fs.IntVar(&s.ChurnFiles, "churn-files", s.ChurnFiles, "files created, half renamed, all deleted")
	fs.IntVar(&s.DeleteFiles, "delete-files", s.DeleteFiles, "lower files deleted")
	fs.IntVar(&s.ChownFiles, "chown-files", s.ChownFiles, "files in the tree chown -R walks")
	fs.StringVar(&s.GoSrc, "go-src", s.GoSrc, "source `DIR` of the real-tree case")
	fs.BoolVarP(&help, "help", "h", false, "print this help")
	if err := fs.Parse(args); err != nil {
		return c, fs, false, fmt.Errorf("%v; see unionbench --help", err)
	}
	if help {
		return c, fs, true, nil
	}
	if fs.NArg() > 0 {
		return c, fs, false, fmt.Errorf("unexpected operand %q; see unionbench --help", fs.Arg(0))
	}
	switch c.Format {
	case "md", "csv", "json":
	default:
		return c, fs, false, fmt.Errorf("--format %q: use md, csv or json", c.Format)
	}
	if c.Reps < 1 {
		return c, fs, false, fmt.Errorf("--reps %d: need at least 1", c.Reps)
	}
	n, err := parseSize(fileSize)
	if err != nil {
		return c, fs, false, fmt.Errorf("--file-size: %v", err)
	}
	s.FileSize = n
	s.CopyUpSizes = nil
	for _, f := range strings.Split(copySizes, ",") {
		n, err := parseSize(f)
		if err != nil {
			return c, fs, false, fmt.Errorf("--copyup-sizes: %v", err)
		}
		s.CopyUpSizes = append(s.CopyUpSizes, n)
	}
	return c, fs, false, nil
}

// parseSize reads 4096, 4K, 64KiB, 1M, 1GiB (powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (use 4096, 64K, 1M, 1G)", s)
	}
	return n * mult, nil
}

func sizeFlag(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprint(n)
}

func sizesFlag(ns []int64) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = sizeFlag(n)
	}
	return strings.Join(s, ",")
}

func usage(fs *pflag.FlagSet) string {
	return `unionbench: kernel-vs-FUSE union filesystem benchmarks

Usage:
  unionbench [flags]

Runs every case on every driver (a plain directory, kernel overlayfs as
root and in a user namespace, unionmount with and without passthrough and
as a user, fuse-overlayfs, unionfs-fuse when installed), drivers
interleaved over the repetitions, and writes report.md and one SVG chart
per group into --out. Needs root. The defaults take about 14 minutes on a
quiet 2-core machine; --quick under 1.

Flags:
` + fs.FlagUsages()
}
