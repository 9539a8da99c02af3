package rootless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/testenv"
)

// Sandbox says how User.Command runs a command of the test user. Every
// command gets a private mount namespace of its own, made by root before
// it drops to the user, so that what the sandbox binds there never shows
// on the host; "/" is made shared again inside it, as rootless podman
// expects. Processes the command leaves running (a daemonized mount, a
// podman pause process) keep that namespace.
type Sandbox struct {
	// FuseMode, when not 0, binds a character device 10:229 of that mode
	// (0666 as udev makes it, or 0600) over /dev/fuse. The host's
	// /dev/fuse is left alone: on this kind of machine it is 0600, and a
	// user can mount only when it is 0666.
	FuseMode os.FileMode
	// FuseConf, when not nil, is bound over /etc/fuse.conf.
	FuseConf *string
	// Binds are files bound over others, [source, target] pairs, after
	// the above: say, a copy of fusermount3 without its setuid bit over
	// the real one.
	Binds [][2]string
	// Env is added to the user's environment (HOME, USER, LOGNAME, PATH,
	// XDG_RUNTIME_DIR).
	Env []string
}

// sandboxScript runs as root in the new mount namespace: $1 the tmpfs
// directory for the fuse node, $2 its mode ("-" for none), $3 a fuse.conf to
// bind ("-" for none), $4 $5 the uid and gid, $6 the number of further
// binds and then their source and target pairs; the command follows.
const sandboxScript = `set -e
if [ "$2" != - ]; then
	mount -t tmpfs -o mode=0755,size=64k unionmount-test-dev "$1"
	mknod -m "$2" "$1/fuse" c 10 229
	mount --bind "$1/fuse" /dev/fuse
fi
if [ "$3" != - ]; then
	mount --bind "$3" /etc/fuse.conf
fi
uid=$4 gid=$5 n=$6
shift 6
while [ "$n" -gt 0 ]; do
	mount --bind "$1" "$2"
	shift 2
	n=$((n - 1))
done
mount --make-rshared /
exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
`

// Command returns the command name args... to run as the user in a
// sandbox. Its Env is set; add to it, do not replace it.
func (u *User) Command(ctx context.Context, t testing.TB, sb Sandbox, name string, args ...string) *exec.Cmd {
	t.Helper()
	mode := "-"
	if sb.FuseMode != 0 {
		if _, err := os.Stat("/dev/fuse"); err != nil {
			testenv.Skipf(t, "needs /dev/fuse: %v (load the fuse module)", err)
		}
		mode = strconv.FormatUint(uint64(sb.FuseMode.Perm()), 8)
	}
	conf := "-"
	if sb.FuseConf != nil {
		u.nconf++
		conf = filepath.Join(u.confDir, "fuse.conf."+strconv.Itoa(u.nconf))
		if err := os.WriteFile(conf, []byte(*sb.FuseConf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	argv := []string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", sandboxScript, "sh",
		u.fuseDir, mode, conf, strconv.Itoa(u.UID), strconv.Itoa(u.GID), strconv.Itoa(len(sb.Binds))}
	for _, b := range sb.Binds {
		argv = append(argv, b[0], b[1])
	}
	argv = append(append(argv, name), args...)
	cmd := exec.CommandContext(ctx, "unshare", argv...)
	cmd.Env = append([]string{
		"HOME=" + u.Home,
		"USER=" + u.Name,
		"LOGNAME=" + u.Name,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"XDG_RUNTIME_DIR=" + u.RuntimeDir,
		"LANG=C",
	}, sb.Env...)
	cmd.Dir = "/"
	return cmd
}

// Result is what a finished command printed and how it ended.
type Result struct {
	Stdout, Stderr string
	Err            error // nil, or the *exec.ExitError
}

// ExitCode is the command's exit status, -1 if it did not exit.
func (r Result) ExitCode() int {
	if r.Err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(r.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.ExitCode(), r.Stdout, r.Stderr)
}

// commandTimeout bounds one sandboxed command; only a hang reaches it.
const commandTimeout = 3 * time.Minute

// Run runs name args... as the user in the sandbox and waits for it.
func (u *User) Run(t testing.TB, sb Sandbox, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := u.Command(ctx, t, sb, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s as %s: timed out after %v\n%s", name, strings.Join(args, " "), u.Name, commandTimeout, stderr.String())
	}
	return Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}
