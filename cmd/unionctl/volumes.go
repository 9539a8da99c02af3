package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/unionmount/unionmount/image/store"
)

func init() {
	commands = append(commands, &command{
		name: "volume", usage: "create [NAME] | ls [-q] [--format json] | inspect NAME... | rm NAME...", needsStore: true,
		summary: "Manage named volumes: directories of the store that containers bind; they outlive containers.",
		flags: func(fs *pflag.FlagSet, o *cmdOpts) {
			fs.SetInterspersed(true)
			fs.BoolVarP(&o.quiet, "quiet", "q", false, "ls: only names")
			fs.StringVar(&o.format, "format", "", "ls: json, one object per line")
		},
		run: cmdVolume,
	})
}

func cmdVolume(a *app, o *cmdOpts, args []string) error {
	if len(args) == 0 {
		return usagef("volume: give create, ls, inspect or rm")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "create":
		if len(args) > 1 {
			return usagef("volume create: give at most one NAME")
		}
		name := ""
		if len(args) == 1 {
			name = args[0]
		} else {
			name = fmt.Sprintf("%x", time.Now().UnixNano())
		}
		v, err := a.st.CreateVolume(name)
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, v.Name)
		return nil
	case "ls", "list":
		vs, err := a.st.Volumes()
		if err != nil {
			return err
		}
		switch {
		case o.format == "json":
			return jsonLines(a.stdout, vs)
		case o.format != "":
			return usagef("volume ls: --format %q: only json is supported", o.format)
		case o.quiet:
			for _, v := range vs {
				fmt.Fprintln(a.stdout, v.Name)
			}
			return nil
		}
		var rows [][]string
		for _, v := range vs {
			rows = append(rows, []string{"local", v.Name})
		}
		return table(a.stdout, []string{"DRIVER", "VOLUME NAME"}, rows)
	case "inspect":
		if len(args) == 0 {
			return usagef("volume inspect: give at least one NAME")
		}
		var out []*store.Volume
		for _, n := range args {
			v, err := a.st.Volume(n)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		b, err := json.MarshalIndent(out, "", "    ")
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, string(b))
		return nil
	case "rm", "remove":
		if len(args) == 0 {
			return usagef("volume rm: give at least one NAME")
		}
		var errs []error
		for _, n := range args {
			if err := a.st.RemoveVolume(n); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintln(a.stdout, n)
		}
		return errors.Join(errs...)
	}
	return usagef("volume: unknown subcommand %q: use create, ls, inspect or rm", sub)
}
