package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/bench"
)

func TestParseArgsQuickThenOverride(t *testing.T) {
	cfg, _, help, err := parseArgs([]string{"--quick", "--churn-files", "77", "--file-size", "32M", "--out", "/x"})
	if err != nil || help {
		t.Fatalf("err=%v help=%v", err, help)
	}
	q := bench.QuickConfig()
	if !cfg.Quick || cfg.Reps != q.Reps || cfg.Sizes.TreeFiles != q.Sizes.TreeFiles {
		t.Errorf("quick base not used: %+v", cfg)
	}
	if cfg.Sizes.ChurnFiles != 77 || cfg.Sizes.FileSize != 32<<20 || cfg.OutDir != "/x" {
		t.Errorf("overrides lost: churn=%d size=%d out=%q", cfg.Sizes.ChurnFiles, cfg.Sizes.FileSize, cfg.OutDir)
	}
}

func TestParseArgsDefaults(t *testing.T) {
	cfg, _, _, err := parseArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := bench.DefaultConfig()
	if cfg.Quick || cfg.Sizes.FileSize != d.Sizes.FileSize || len(cfg.Sizes.CopyUpSizes) != len(d.Sizes.CopyUpSizes) {
		t.Errorf("defaults changed by parsing: %+v", cfg.Sizes)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4K": 4096, "64KiB": 64 << 10, "1M": 1 << 20, "1g": 1 << 30, "2GB": 2 << 30} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "K", "-1", "1T", "x"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"extra"}, {"--file-size", "lots"}, {"--format", "xml"}, {"--reps", "0"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
		if !strings.HasPrefix(errb.String(), "unionbench: ") || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: stderr %q, want one line", args, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "--quick") {
		t.Errorf("--help: exit %d, out %q", code, out.String())
	}
}
