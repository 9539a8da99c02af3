package build

import (
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// FuzzDockerfile feeds Dockerfiles to the parse and substitution the
// builder does before it touches the store: BuildKit's parser, the ARGs
// before FROM, and every instruction's word substitution and command
// line. None may panic, and every refusal says something.
func FuzzDockerfile(f *testing.F) {
	for _, s := range []string{
		"FROM busybox\nRUN echo hi\n",
		"ARG B=busybox\nFROM ${B:-x} AS a\nENV A=${B:+y} C=$B\nCOPY --from=a --chown=1:2 x* /d/\nCMD [\"sh\"]\n",
		"# escape=`\nFROM scratch\nRUN echo `\n  hi\nWORKDIR a\nUSER ${U}\nEXPOSE 80/udp ${P}\n",
		"FROM a\nONBUILD RUN x\nHEALTHCHECK --interval=1s CMD true\nSHELL [\"sh\",\"-c\"]\nRUN <<EOF\nx\nEOF\n",
		"FROM a\nLABEL \"k\"=\"v\" x=${y:-z}\nVOLUME [\"/a\"]\nSTOPSIGNAL 9\nADD http://x/y /z\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b := &builder{o: Options{Dockerfile: data, BuildArgs: map[string]string{"B": "busybox"}},
			meta: map[string]string{}, used: map[string]bool{}, fileName: "Dockerfile"}
		stages, err := b.parse()
		if err != nil {
			if msg := err.Error(); msg == "" {
				t.Fatal("an empty error")
			}
			return
		}
		for _, st := range stages {
			b.lex.ProcessWordWithMatches(st.BaseName, envGetter(b.meta))
			s := &stage{cfg: &config{}, args: map[string]string{"A": "1"}}
			for _, cmd := range st.Commands {
				env := s.expandEnv()
				expand := func(w string) (string, error) {
					v, _, err := b.lex.ProcessWord(w, envGetter(env))
					return v, err
				}
				if e, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
					if err := e.Expand(expand); err != nil {
						continue
					}
				}
				switch c := cmd.(type) {
				case *instructions.RunCommand:
					b.commandLine(s, c.ShellDependantCmdLine)
				case *instructions.CmdCommand:
					b.commandLine(s, c.ShellDependantCmdLine)
				case *instructions.ArgCommand:
					for _, kv := range c.Args {
						b.argValue(kv, env)
					}
				}
			}
		}
	})
}
