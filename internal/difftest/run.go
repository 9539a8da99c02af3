package difftest

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// Job is what the runner process is asked to do on one mount.
type Job struct {
	// Root is the mount; the runner chroots into it.
	Root string
	// Before asks for a snapshot of the tree before the ops.
	Before bool
	Ops    []Op
}

// Run is what the runner process observed.
type Run struct {
	Before  fstest.Tree `json:",omitempty"`
	Results []Result
	After   fstest.Tree
}

// The environment that turns the test binary into the runner.
const (
	EnvRun = "DIFFTEST_RUN" // "1"
	EnvJob = "DIFFTEST_JOB" // path of the Job (JSON)
	EnvOut = "DIFFTEST_OUT" // path the Run (JSON) is written to
)

// MergedXattrs is the xattr filter of merged-view snapshots: everything a
// user of the mount can list (the bookkeeping must not show at all), less
// security.selinux.
func MergedXattrs(name string) bool { return name != "security.selinux" }

// RunnerMain is the runner process: it reads the Job named by $DIFFTEST_JOB,
// chroots into its Root, runs it and writes the Run to $DIFFTEST_OUT. It
// returns the process exit code.
func RunnerMain() int {
	if err := runner(os.Getenv(EnvJob), os.Getenv(EnvOut)); err != nil {
		fmt.Fprintf(os.Stderr, "difftest runner: %v\n", err)
		return 1
	}
	return 0
}

func runner(jobPath, outPath string) error {
	b, err := os.ReadFile(jobPath)
	if err != nil {
		return fmt.Errorf("read job: %w", err)
	}
	var job Job
	if err := json.Unmarshal(b, &job); err != nil {
		return fmt.Errorf("decode job %s: %w", jobPath, err)
	}
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create result file: %w", err)
	}
	defer out.Close()
	x, err := NewExecutor()
	if err != nil {
		return err
	}
	defer x.Close()
	// Same umask on both sides, whatever the test process had.
	unix.Umask(0o022)
	if err := unix.Chroot(job.Root); err != nil {
		return fmt.Errorf("chroot %s: %w", job.Root, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir to the new root: %w", err)
	}
	var run Run
	if job.Before {
		if run.Before, err = fstest.Snapshot("/", fstest.XattrFilter(MergedXattrs)); err != nil {
			return fmt.Errorf("snapshot before the script: %w", err)
		}
	}
	for _, op := range job.Ops {
		run.Results = append(run.Results, x.Exec(op))
	}
	if run.After, err = fstest.Snapshot("/", fstest.XattrFilter(MergedXattrs)); err != nil {
		return fmt.Errorf("snapshot after the script: %w", err)
	}
	if err := json.NewEncoder(out).Encode(&run); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return out.Close()
}
