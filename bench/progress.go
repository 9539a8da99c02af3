package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// progress is the status line on stderr: rewritten in place on a
// terminal, one line per step otherwise (logs, CI).
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	width int
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now()}
	if w == nil {
		p.w = io.Discard
	}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.tty = true
		}
	}
	return p
}

func (p *progress) elapsed() string {
	return time.Since(p.start).Truncate(time.Second).String()
}

// step shows which run is under way.
func (p *progress) step(i, n int, format string, a ...any) {
	line := fmt.Sprintf("[%d/%d %s] %s", i, n, p.elapsed(), fmt.Sprintf(format, a...))
	if p.tty {
		pad := ""
		if p.width > len(line) {
			pad = strings.Repeat(" ", p.width-len(line))
		}
		fmt.Fprintf(p.w, "\r%s%s", line, pad)
		p.width = len(line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// say prints a message on a line of its own.
func (p *progress) say(format string, a ...any) {
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
		p.width = 0
	}
	fmt.Fprintf(p.w, "[%s] %s\n", p.elapsed(), fmt.Sprintf(format, a...))
}

// done ends the status line.
func (p *progress) done() {
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
		p.width = 0
	}
}
