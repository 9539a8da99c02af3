package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

func init() {
	commands = append(commands, &command{
		name: "unshare", usage: "[CMD [ARG...]]", needsStore: true, endsInCommand: true,
		summary: "Run a command (default $SHELL) as root of the user namespace unionctl works in rootless (to remove a rootless store: unionctl unshare rm -rf DIR).",
		run:     cmdUnshare,
	})
}

// cmdUnshare replaces unionctl with the command. Rootless, main has
// re-executed unionctl in its user namespace already; as root it just
// runs the command.
func cmdUnshare(a *app, o *cmdOpts, args []string) error {
	if len(args) == 0 {
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		args = []string{sh}
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		return usagef("unshare: %v", err)
	}
	err = syscall.Exec(path, args, os.Environ())
	return fmt.Errorf("unshare: exec %s: %w", args[0], err)
}
