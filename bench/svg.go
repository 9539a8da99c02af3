package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"time"
)

// The charts are hand-written SVG: no dependency, readable diffs, and any
// browser or rsvg-convert shows them.

// driverColors is a colour-blind-safe palette (Okabe–Ito), fixed per driver
// so that every chart agrees.
var driverColors = map[string]string{
	"plain":                    "#999999",
	"kernel":                   "#000000",
	"fuse-overlayfs":           "#E69F00",
	"unionmount":               "#0072B2",
	"unionmount-nopassthrough": "#56B4E9",
	"unionfs-fuse":             "#009E73",
}

func colorOf(d string) string {
	if c, ok := driverColors[d]; ok {
		return c
	}
	return "#CC79A7"
}

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

const svgFont = `font-family="DejaVu Sans, Helvetica, Arial, sans-serif"`

// niceTicks returns 1-2-5 values covering [lo, hi] on a log scale.
func niceTicks(lo, hi float64) []float64 {
	var ticks []float64
	for e := math.Floor(math.Log10(lo)) - 1; e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= lo*0.999 && v <= hi*1.001 {
				ticks = append(ticks, v)
			}
		}
	}
	return ticks
}

// barChart draws, for each metric, one bar per driver: its median time
// divided by the reference's (kernel overlayfs when it ran), on a log
// scale centred on 1, so slower goes right and faster goes left.
func barChart(w io.Writer, title string, rows []*Row, order []string) error {
	ref := ""
	for _, cand := range []string{refKernel, refFuse} {
		for _, r := range rows {
			if st := r.Stats[cand]; st != nil && st.N > 0 {
				ref = cand
			}
		}
		if ref != "" {
			break
		}
	}
	var bars []string
	for _, d := range order {
		if d != ref {
			bars = append(bars, d)
		}
	}
	lo, hi := 1.0, 1.0
	for _, r := range rows {
		for _, d := range bars {
			if x := r.Ratio(d, ref); x > 0 {
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
		}
	}
	lo, hi = lo/1.25, hi*1.25
	lo = math.Min(lo, 0.5)
	hi = math.Max(hi, 2)

	const (
		width, left, right, top = 960, 230, 70, 78
		barH, gap               = 13, 14
	)
	plotW := float64(width - left - right)
	blockH := len(bars)*barH + gap
	height := top + len(rows)*blockH + 40
	xOf := func(v float64) float64 {
		return float64(left) + (math.Log(v)-math.Log(lo))/(math.Log(hi)-math.Log(lo))*plotW
	}

	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s font-size="12">`+"\n",
		width, height, width, height, svgFont)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", 10, esc(title))
	if ref == "" {
		p(`<text x="10" y="40">no reference driver (kernel or fuse-overlayfs) ran: no ratios to draw</text>`)
	} else {
		p(`<text x="10" y="38" fill="#444">median time ÷ %s's (log scale): right of 1 is slower, left is faster</text>`+"\n", esc(refTitle(ref)))
	}
	// Legend.
	lx := 10
	for _, d := range bars {
		p(`<rect x="%d" y="50" width="12" height="12" fill="%s"/><text x="%d" y="60">%s</text>`+"\n", lx, colorOf(d), lx+16, esc(d))
		lx += 24 + 7*len(d)
	}
	// Grid and axis.
	bottom := top + len(rows)*blockH
	for _, t := range niceTicks(lo, hi) {
		x := xOf(t)
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, top-4, x, bottom)
		p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#444">%s</text>`+"\n", x, bottom+16, esc(strconv.FormatFloat(t, 'g', -1, 64)+"×"))
	}
	for i, r := range rows {
		y0 := top + i*blockH
		p(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y0+len(bars)*barH/2+4, esc(r.Metric))
		for j, d := range bars {
			y := y0 + j*barH
			x := r.Ratio(d, ref)
			if x == 0 {
				p(`<text x="%.1f" y="%d" font-size="10" fill="#888">%s: n/a</text>`+"\n", xOf(1)+4, y+barH-3, esc(d))
				continue
			}
			x0, x1 := xOf(1), xOf(x)
			if x1 < x0 {
				x0, x1 = x1, x0
			}
			p(`<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %.2f×</title></rect>`+"\n",
				x0, y+1, math.Max(x1-x0, 1), barH-2, colorOf(d), esc(d+" "+r.Metric), x)
			if x >= 1 {
				p(`<text x="%.1f" y="%d" font-size="10">%.2f</text>`+"\n", x1+3, y+barH-3, x)
			} else {
				p(`<text x="%.1f" y="%d" font-size="10" text-anchor="end">%.2f</text>`+"\n", x0-3, y+barH-3, x)
			}
		}
	}
	p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-width="1.5"/>`+"\n", xOf(1), top-4, xOf(1), bottom)
	p("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// lineChart draws a scaling curve per driver: time per operation (log)
// against the rows' X (log).
func lineChart(w io.Writer, title, xlabel string, rows []*Row, order []string) error {
	rows = append([]*Row(nil), rows...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].X < rows[j].X })
	val := func(st *Stat) float64 {
		if st == nil || st.N == 0 {
			return 0
		}
		if st.Ops > 0 {
			return st.PerOp().Seconds()
		}
		return st.Median.Seconds()
	}
	xlo, xhi := math.Inf(1), math.Inf(-1)
	ylo, yhi := math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		if r.X > 0 {
			xlo, xhi = math.Min(xlo, r.X), math.Max(xhi, r.X)
		}
		for _, d := range order {
			if v := val(r.Stats[d]); v > 0 {
				ylo, yhi = math.Min(ylo, v), math.Max(yhi, v)
			}
		}
	}
	if math.IsInf(xlo, 0) || math.IsInf(ylo, 0) {
		xlo, xhi, ylo, yhi = 1, 10, 1e-6, 1e-3
	}
	xlo, xhi = xlo/1.3, xhi*1.3
	ylo, yhi = ylo/1.5, yhi*1.5

	const (
		width, height            = 960, 520
		left, right, top, bottom = 90, 240, 50, 60
	)
	pw, ph := float64(width-left-right), float64(height-top-bottom)
	xOf := func(v float64) float64 {
		return float64(left) + (math.Log(v)-math.Log(xlo))/(math.Log(xhi)-math.Log(xlo))*pw
	}
	yOf := func(v float64) float64 {
		return float64(top) + ph - (math.Log(v)-math.Log(ylo))/(math.Log(yhi)-math.Log(ylo))*ph
	}

	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s font-size="12">`+"\n",
		width, height, width, height, svgFont)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="10" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", esc(title))
	p(`<text x="10" y="38" fill="#444">median time per operation (log scale) against %s (log scale)</text>`+"\n", esc(xlabel))
	p(`<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", left, top, pw, ph)
	for _, t := range niceTicks(ylo, yhi) {
		y := yOf(t)
		p(`<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", left, y, float64(left)+pw, y)
		p(`<text x="%d" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n", left-6, y+4, esc(fmtDur(time.Duration(t*1e9))))
	}
	for _, r := range rows {
		if r.X <= 0 {
			continue
		}
		x := xOf(r.X)
		label := strconv.FormatFloat(r.X, 'g', -1, 64)
		if r.Series == "copy-up" {
			label = sizeLabel(int64(r.X))
		}
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%.0f" stroke="#e4e4e4"/>`+"\n", x, top, x, float64(top)+ph)
		p(`<text x="%.1f" y="%.0f" text-anchor="middle" fill="#444">%s</text>`+"\n", x, float64(top)+ph+16, esc(label))
	}
	p(`<text x="%.0f" y="%d" text-anchor="middle">%s</text>`+"\n", float64(left)+pw/2, height-14, esc(xlabel))
	ly := top + 10
	for _, d := range order {
		var pts []string
		var dots bytes.Buffer
		for _, r := range rows {
			v := val(r.Stats[d])
			if v <= 0 || r.X <= 0 {
				continue
			}
			x, y := xOf(r.X), yOf(v)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			fmt.Fprintf(&dots, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s %s: %s</title></circle>`+"\n",
				x, y, colorOf(d), esc(d), esc(r.Metric), esc(fmtDur(time.Duration(v*1e9))))
		}
		if len(pts) == 0 {
			continue
		}
		p(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colorOf(d), joinSpace(pts))
		b.Write(dots.Bytes())
		p(`<line x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="%s" stroke-width="3"/><text x="%.0f" y="%d">%s</text>`+"\n",
			float64(left)+pw+14, ly, float64(left)+pw+34, ly, colorOf(d), float64(left)+pw+40, ly+4, esc(d))
		ly += 20
	}
	p("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

func joinSpace(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x)
	}
	return b.String()
}
