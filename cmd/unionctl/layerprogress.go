package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image/registry"
	"github.com/unionmount/unionmount/image/store"
)

// layerLines shows one line per layer on a terminal, Docker's way: the
// block is redrawn in place (cursor up, clear line) when a layer changes
// state, and at most ten times a second for byte counts.
type layerLines struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	labels []string
	text   map[string]string
	drawn  int
	last   time.Time
}

func newLayerLines(w io.Writer, quiet, tty bool) *layerLines {
	return &layerLines{w: w, tty: tty && !quiet, text: map[string]string{}}
}

func (l *layerLines) set(label, text string, force bool) {
	if !l.tty {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.text[label]; !ok {
		l.labels = append(l.labels, label)
		force = true
	}
	if l.text[label] == text {
		return
	}
	l.text[label] = text
	now := time.Now()
	if !force && now.Sub(l.last) < 100*time.Millisecond {
		return
	}
	l.last = now
	l.redrawLocked()
}

func (l *layerLines) redrawLocked() {
	var b strings.Builder
	if l.drawn > 0 {
		fmt.Fprintf(&b, "\033[%dA", l.drawn)
	}
	for _, label := range l.labels {
		fmt.Fprintf(&b, "\r\033[2K%s: %s\n", label, l.text[label])
	}
	l.drawn = len(l.labels)
	io.WriteString(l.w, b.String())
}

// finish draws the final state of every line.
func (l *layerLines) finish() {
	if !l.tty {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.redrawLocked()
}

// bar is Docker's progress bar: [=====>    ] 1.2MB/3.4MB.
func bar(done, total int64) string {
	const width = 40
	if total <= 0 {
		return humanSize(done)
	}
	n := int(done * width / total)
	if n > width {
		n = width
	}
	s := strings.Repeat("=", n)
	if n < width {
		s += ">" + strings.Repeat(" ", width-n-1)
	}
	return fmt.Sprintf("[%s] %s/%s", s, humanSize(done), humanSize(total))
}

func shortDigest(d digest.Digest) string {
	if e := d.Encoded(); len(e) > 12 {
		return e[:12]
	}
	return d.String()
}

// pullProgress renders store.PullEvents.
type pullProgress struct {
	*layerLines
}

func newPullProgress(w io.Writer, quiet, tty bool) *pullProgress {
	return &pullProgress{newLayerLines(w, quiet, tty)}
}

func (p *pullProgress) event(e store.PullEvent) {
	text := e.State.String()
	force := true
	switch e.State {
	case store.PullDownloading, store.PullExtracting:
		if e.Done > 0 {
			text += " " + bar(e.Done, e.Total)
			force = false
		}
	}
	p.set(shortDigest(e.Digest), text, force)
}

// pushProgress renders registry.PushEvents.
type pushProgress struct {
	*layerLines
	mu   sync.Mutex
	sent map[digest.Digest]bool
}

func newPushProgress(w io.Writer, quiet, tty bool) *pushProgress {
	return &pushProgress{layerLines: newLayerLines(w, quiet, tty), sent: map[digest.Digest]bool{}}
}

func (p *pushProgress) event(e registry.PushEvent) {
	if e.Layer < 0 {
		return
	}
	var text string
	switch e.State {
	case registry.PushPreparing:
		text = "Preparing"
	case registry.PushUploading:
		p.mu.Lock()
		p.sent[e.Digest] = true
		p.mu.Unlock()
		text = "Pushing"
	case registry.PushDone:
		p.mu.Lock()
		sent := p.sent[e.Digest]
		p.mu.Unlock()
		text = "Layer already exists"
		if sent {
			text = "Pushed"
		}
	}
	p.set(shortDigest(e.Digest), text, true)
}
