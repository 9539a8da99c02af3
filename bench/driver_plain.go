package bench

import (
	"fmt"
	"os/exec"
	"strings"
)

// plain is the physical limit: no union at all, just a directory that holds
// the merged content. Cases that write get their own copy (made before the
// clock starts), so a copy-up here costs what the write alone costs.
type plain struct{}

func init() { register(plain{}) }

func (plain) Name() string        { return "plain" }
func (plain) Check(*Env) error    { return nil }
func (plain) Version(*Env) string { return "" }
func (plain) Mount(_ *Env, st Stack, _ string) (*Mount, error) {
	if !st.Writes {
		return &Mount{Dir: st.Merged}, nil
	}
	flags := "-a"
	if st.NamesOnly {
		flags = "-al"
	}
	out, err := exec.Command("cp", flags, st.Merged+"/.", st.Upper+"/").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("plain: copy the merged tree: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return &Mount{Dir: st.Upper}, nil
}
