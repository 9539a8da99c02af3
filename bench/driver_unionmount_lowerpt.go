package bench

// unionmount-lowerpt is unionmount with --lower-passthrough: the kernel
// reads lower files itself. A file open for reading across its copy-up
// then keeps reading the lower file (docs/semantics.md), which is why it
// is not the default.
func init() {
	// Only the cases that read lower files through open handles: the
	// others would repeat unionmount's figures at the time budget's cost.
	register(unionmount{name: "unionmount-lowerpt", extra: []string{"--lower-passthrough"},
		cases: []string{"seq-read", "rand-read", "go-tree"}})
}
