package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// fuseOp matches a request line of go-fuse's trace ("rx 4: LOOKUP n1 ...").
var fuseOp = regexp.MustCompile(`(?m)^.*rx \d+: (LOOKUP|GETATTR) n\d+`)

// TestDebugTracesFUSEOps: `unionmount -f --debug` writes a trace of the
// FUSE requests it serves to stderr (stdout stays clean for scripts), and
// without --debug there is none.
func TestDebugTracesFUSEOps(t *testing.T) {
	skipUnlessFUSE(t)
	for _, debug := range []bool{true, false} {
		name := map[bool]string{true: "debug", false: "quiet"}[debug]
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			layers(t, fx)
			args := []string{"-f", "--timeout", "0", "--lower", fx.l1 + ":" + fx.l2, fx.mnt}
			if debug {
				args = append([]string{"--debug"}, args...)
			}
			cmd := unionmountCmd(t, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			unmountLazily(t, fx.mnt)
			waitUntil(t, "the foreground mount", func() bool {
				select {
				case err := <-exited:
					t.Fatalf("unionmount %q exited before mounting: %v", args, err)
				default:
				}
				return mounted(t, fx.mnt)
			})
			if _, err := os.Stat(filepath.Join(fx.mnt, "b")); err != nil {
				t.Fatal(err)
			}
			checkMerged(t, fx.mnt)
			if out, err := exec.Command("fusermount3", "-u", fx.mnt).CombinedOutput(); err != nil {
				t.Fatalf("fusermount3 -u: %v %s", err, out)
			}
			if err := <-exited; err != nil {
				t.Fatalf("unionmount %q: %v\n%s", args, err, stderr.String())
			}
			// The buffers are complete: the process has exited.
			traced := fuseOp.MatchString(stderr.String())
			if traced != debug {
				t.Errorf("--debug=%v: a LOOKUP or GETATTR line on stderr: %v; stderr (%d bytes) begins %.400q",
					debug, traced, stderr.Len(), stderr.String())
			}
			if fuseOp.MatchString(stdout.String()) {
				t.Errorf("the trace went to stdout: %.400q", stdout.String())
			}
		})
	}
}
