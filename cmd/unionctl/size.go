package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// maxLayerSizeFlag defines --max-layer-size, the bound on the bytes one
// layer may expand to (the defence against decompression bombs).
func maxLayerSizeFlag(fs *pflag.FlagSet, o *cmdOpts) {
	fs.Var(&o.maxLayerSize, "max-layer-size",
		"most bytes one layer may expand to, e.g. 20G (default: the free space of the store less a reserve: 1% of it, at most 1G)")
}

// sizeValue is a byte count flag: 4096, 64K, 512M, 20G, 1T (powers of
// 1024; a trailing B or iB is allowed). 0 means unset.
type sizeValue int64

func (v *sizeValue) String() string {
	if *v == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*v), 10)
}

func (v *sizeValue) Type() string { return "SIZE" }

func (v *sizeValue) Set(s string) error {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := 0
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			shift, t = 10*(i+1), t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)>>shift {
		return fmt.Errorf("%q is not a size: use a positive number of bytes, or 64K, 512M, 20G", s)
	}
	*v = sizeValue(n << shift)
	return nil
}
