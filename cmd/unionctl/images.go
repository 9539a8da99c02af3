package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/pflag"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/layer"
	"github.com/unionmount/unionmount/image/store"
)

func init() {
	commands = append(commands,
		&command{
			name: "import", usage: "TARBALL|- [NAME[:TAG]]", needsStore: true,
			summary: "Store a rootfs tarball (plain, gzip or zstd; - for stdin) as a one-layer image.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress")
				maxLayerSizeFlag(fs, o)
			},
			run: cmdImport,
		},
		&command{
			name: "load", usage: "-i FILE | --layout DIR", needsStore: true,
			summary: "Load images from a docker save archive, an oci-archive or an OCI image layout.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.StringVarP(&o.input, "input", "i", "", "archive to read (docker-archive or oci-archive; default stdin)")
				fs.StringVar(&o.layout, "layout", "", "OCI image layout directory to read")
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress")
				maxLayerSizeFlag(fs, o)
			},
			run: cmdLoad,
		},
		&command{
			name: "save", usage: "IMAGE... (-o FILE | --layout DIR)", needsStore: true,
			summary: "Write images to an archive (oci-archive or docker-archive) or an OCI image layout.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.StringVarP(&o.output, "output", "o", "", "archive to write (default stdout, if it is not a terminal)")
				fs.StringVar(&o.format, "format", store.FormatOCIArchive, "archive format: oci-archive or docker-archive")
				fs.StringVar(&o.layout, "layout", "", "write an OCI image layout in this directory instead")
				fs.StringVar(&o.compression, "compression", "gzip", "layer compression in OCI formats: gzip, zstd, estargz (gzip that a lazy pull reads file by file; new image IDs) or none")
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress")
			},
			run: cmdSave,
		},
		&command{
			name: "images", usage: "", needsStore: true,
			summary: "List images (not the intermediate images of builds, unless -a).",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.BoolVarP(&o.all, "all", "a", false, "also the intermediate images of builds")
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "only IDs")
				fs.BoolVar(&o.noTrunc, "no-trunc", false, "full IDs")
				fs.StringVar(&o.format, "format", "", "json: one object per line")
			},
			run: cmdImages,
		},
		&command{
			name: "history", usage: "IMAGE", needsStore: true,
			summary: "Show an image's layers: layer ID, created, created by, size, comment.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "only layer IDs")
				fs.BoolVar(&o.noTrunc, "no-trunc", false, "do not shorten")
				fs.StringVar(&o.format, "format", "", "json: one object per line")
			},
			run: cmdHistory,
		},
		&command{
			name: "inspect", usage: "NAME|ID...", needsStore: true,
			summary: "Show images, containers or volumes as JSON.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.StringVar(&o.typ, "type", "", "image, container or volume (default: whatever the name is)")
			},
			run: cmdInspect,
		},
		&command{
			name: "tag", usage: "IMAGE NAME[:TAG]", needsStore: true,
			summary: "Give an image another name.",
			run:     cmdTag,
		},
		&command{
			name: "rmi", usage: "IMAGE...", needsStore: true,
			summary: "Remove images; layers go when no image uses them any more.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.BoolVarP(&o.force, "force", "f", false, "remove an image with several names by ID")
			},
			run: cmdRmi,
		},
	)
}

func cmdImport(a *app, o *cmdOpts, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("import: give TARBALL (or - for stdin) and optionally NAME[:TAG]")
	}
	var names []string
	if len(args) == 2 {
		r, err := image.ParseReference(args[1])
		if err != nil {
			return usagef("import: %v", err)
		}
		names = []string{r.String()}
	}
	var in io.Reader = a.stdin
	source := "-"
	if args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		in, source = f, args[0]
	}
	img, err := a.st.Import(in, source, names)
	if err != nil {
		return fmt.Errorf("%w (nothing was stored%s)", err, inputHint(err))
	}
	a.prog.finish()
	fmt.Fprintln(a.stdout, img.ID)
	return nil
}

func cmdLoad(a *app, o *cmdOpts, args []string) error {
	if len(args) > 0 {
		return usagef("load: unexpected %q: give the archive with -i FILE", args[0])
	}
	if o.input != "" && o.layout != "" {
		return usagef("load: give -i FILE or --layout DIR, not both")
	}
	var imgs []store.Loaded
	var err error
	switch {
	case o.layout != "":
		imgs, err = a.st.LoadLayout(o.layout)
	case o.input != "" && o.input != "-":
		imgs, err = a.st.LoadFile(o.input)
	default:
		if isTerminal(a.stdin) {
			return usagef("load: give the archive with -i FILE (stdin is a terminal)")
		}
		imgs, err = a.st.LoadStream(a.stdin)
	}
	if err != nil {
		return fmt.Errorf("load: %w (nothing was stored%s)", err, inputHint(err))
	}
	a.prog.finish()
	for _, img := range imgs {
		if len(img.ArchiveNames) == 0 {
			fmt.Fprintf(a.stdout, "Loaded image ID: %s\n", img.ID)
		}
		for _, n := range img.ArchiveNames {
			fmt.Fprintf(a.stdout, "Loaded image: %s\n", n)
		}
	}
	return nil
}

func cmdSave(a *app, o *cmdOpts, args []string) error {
	if len(args) == 0 {
		return usagef("save: give at least one IMAGE")
	}
	comp, err := layer.ParseCompression(o.compression)
	if err != nil {
		return usagef("save: %v", err)
	}
	opts := store.SaveOptions{Format: o.format, Compression: comp, Names: map[digest.Digest][]string{}}
	switch {
	case o.layout != "":
		opts.Format = store.FormatOCILayout
	case o.format != store.FormatOCIArchive && o.format != store.FormatDockerArchive:
		return usagef("save: --format %q: use oci-archive or docker-archive (or --layout DIR)", o.format)
	}
	var imgs []*store.Image
	for _, ref := range args {
		img, err := a.st.LookupImage(ref)
		if err != nil {
			return err
		}
		// Saved under the name asked for; by ID: all its names.
		if r, err := image.ParseReference(ref); err == nil && !strings.HasPrefix(img.ID.Encoded(), ref) {
			name := r.String()
			for _, n := range img.Names {
				if nr, _ := image.ParseReference(n); nr.Familiar() == r.Familiar() {
					name = n
				}
			}
			opts.Names[img.ID] = append(opts.Names[img.ID], name)
		} else if _, ok := opts.Names[img.ID]; !ok {
			opts.Names[img.ID] = img.Names
		}
		if !containsImage(imgs, img) {
			imgs = append(imgs, img)
		}
	}
	var ids []digest.Digest
	switch {
	case opts.Format == store.FormatOCILayout:
		ids, err = a.st.Save(imgs, nil, o.layout, opts)
	case o.output == "" || o.output == "-":
		if isTerminal(a.stdout) {
			return usagef("save: give -o FILE (stdout is a terminal)")
		}
		ids, err = a.st.Save(imgs, a.stdout, "", opts)
	default:
		ids, err = a.st.SaveToFile(imgs, o.output, opts)
	}
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	for i, img := range imgs {
		if ids[i] != img.ID {
			fmt.Fprintf(a.stderr, "unionctl: note: image %s has a layer that could not be reproduced byte for byte; it was saved as %s\n",
				img.ID.Encoded()[:12], ids[i])
		}
	}
	return nil
}

func containsImage(list []*store.Image, img *store.Image) bool {
	for _, x := range list {
		if x.ID == img.ID {
			return true
		}
	}
	return false
}

func shortID(d digest.Digest, full bool) string {
	if full {
		return d.String()
	}
	e := d.Encoded()
	if len(e) > 12 {
		return e[:12]
	}
	return e
}

// imageJSON is a line of `images --format json`, with docker's keys.
type imageJSON struct {
	ID           string `json:"ID"`
	Repository   string `json:"Repository"`
	Tag          string `json:"Tag"`
	CreatedAt    string `json:"CreatedAt"`
	CreatedSince string `json:"CreatedSince"`
	Size         string `json:"Size"`
	VirtualSize  int64  `json:"VirtualSize"`
	// Lazy: pulled with --lazy and not complete; Fetched says how much
	// of its lazy layers' blobs the store holds ("37%").
	Lazy    bool   `json:"Lazy,omitempty"`
	Fetched string `json:"Fetched,omitempty"`
}

// lazyFraction is the fetched part of img's lazy layers as "N%", or ""
// for an image with none.
func lazyFraction(st *store.Store, img *store.Image) (string, bool) {
	fetched, total := st.LazyProgress(img)
	if len(st.LazyLayers(img)) == 0 {
		return "", false
	}
	pct := int64(100)
	if total > 0 {
		pct = fetched * 100 / total
	}
	return fmt.Sprintf("%d%%", pct), true
}

func cmdImages(a *app, o *cmdOpts, args []string) error {
	if len(args) > 0 {
		return usagef("images: unexpected %q", args[0])
	}
	imgs, err := a.st.Images()
	if err != nil {
		return err
	}
	// Intermediate images: unnamed steps of a build that a later step
	// was built on (docker images hides them too).
	parents := map[digest.Digest]bool{}
	for _, img := range imgs {
		parents[a.st.BuildParent(img)] = true
	}
	var rows [][]string
	var js []imageJSON
	for _, img := range imgs {
		if !o.all && len(img.Names) == 0 && parents[img.ID] {
			continue
		}
		cfg, _, err := a.st.Config(img)
		if err != nil {
			return err
		}
		var created time.Time
		if cfg.Created != nil {
			created = *cfg.Created
		}
		size := a.st.ImageSize(img)
		names := img.Names
		if len(names) == 0 {
			names = []string{"<none>:<none>"}
		}
		for _, n := range names {
			repo, tag := n, ""
			if i := strings.LastIndexByte(n, ':'); i > strings.LastIndexByte(n, '/') {
				repo, tag = n[:i], n[i+1:]
			}
			id := shortID(img.ID, o.noTrunc)
			sizeCol := humanSize(size)
			frac, lazy := lazyFraction(a.st, img)
			if lazy {
				sizeCol += " (lazy, " + frac + " fetched)"
			}
			rows = append(rows, []string{repo, tag, id, ago(created), sizeCol})
			js = append(js, imageJSON{ID: id, Repository: repo, Tag: tag, CreatedAt: created.Format(time.RFC3339),
				CreatedSince: ago(created), Size: humanSize(size), VirtualSize: size, Lazy: lazy, Fetched: frac})
		}
	}
	switch {
	case o.format == "json":
		return jsonLines(a.stdout, js)
	case o.format != "":
		return usagef("images: --format %q: only json is supported", o.format)
	case o.quiet:
		seen := map[string]bool{}
		for _, r := range rows {
			if !seen[r[2]] {
				seen[r[2]] = true
				fmt.Fprintln(a.stdout, r[2])
			}
		}
		return nil
	}
	return table(a.stdout, []string{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"}, rows)
}

// historyJSON is a line of `history --format json`.
type historyJSON struct {
	Layer        string `json:"Layer"`
	CreatedAt    string `json:"CreatedAt"`
	CreatedSince string `json:"CreatedSince"`
	CreatedBy    string `json:"CreatedBy"`
	Size         int64  `json:"Size"`
	Comment      string `json:"Comment"`
}

func cmdHistory(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("history: give one IMAGE")
	}
	img, err := a.st.LookupImage(args[0])
	if err != nil {
		return err
	}
	hist, err := a.st.History(img)
	if err != nil {
		return err
	}
	var rows [][]string
	var js []historyJSON
	for _, h := range hist {
		id := "<missing>"
		if h.Layer != "" {
			id = shortID(h.Layer, o.noTrunc)
		}
		by := h.CreatedBy
		if !o.noTrunc {
			by = truncate(by, 45)
		}
		rows = append(rows, []string{id, ago(h.Created), by, humanSize(h.Size), h.Comment})
		js = append(js, historyJSON{Layer: id, CreatedAt: h.Created.Format(time.RFC3339), CreatedSince: ago(h.Created),
			CreatedBy: h.CreatedBy, Size: h.Size, Comment: h.Comment})
	}
	switch {
	case o.format == "json":
		return jsonLines(a.stdout, js)
	case o.format != "":
		return usagef("history: --format %q: only json is supported", o.format)
	case o.quiet:
		for _, r := range rows {
			fmt.Fprintln(a.stdout, r[0])
		}
		return nil
	}
	return table(a.stdout, []string{"LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"}, rows)
}

// imageInspect is `inspect` of an image, with docker's main keys.
type imageInspect struct {
	ID           string          `json:"Id"`
	RepoTags     []string        `json:"RepoTags"`
	RepoDigests  []string        `json:"RepoDigests"`
	Created      string          `json:"Created"`
	Author       string          `json:"Author,omitempty"`
	Architecture string          `json:"Architecture"`
	Os           string          `json:"Os"`
	Size         int64           `json:"Size"`
	Config       any             `json:"Config"`
	RootFS       any             `json:"RootFS"`
	GraphDriver  graphDriver     `json:"GraphDriver"`
	Layers       []layerInspect  `json:"Layers"`
	RawConfig    json.RawMessage `json:"RawConfig"`
	// Lazy is there for an image pulled with --lazy and not complete.
	Lazy *lazyInspect `json:"Lazy,omitempty"`
}

// lazyInspect is how far a lazily pulled image is fetched.
type lazyInspect struct {
	Layers       int    `json:"Layers"`       // layers not complete
	FetchedBytes int64  `json:"FetchedBytes"` // file bytes of their cached chunks
	TotalBytes   int64  `json:"TotalBytes"`   // their file bytes (Size)
	Fetched      string `json:"Fetched"`      // FetchedBytes/TotalBytes as "N%"
}

type graphDriver struct {
	Name string            `json:"Name"`
	Data map[string]string `json:"Data"`
}

type layerInspect struct {
	ID      string `json:"Id"`
	DiffID  string `json:"DiffID"`
	Size    int64  `json:"Size"`
	Path    string `json:"Path"`
	TarSize int64  `json:"TarSize"`
	Lazy    bool   `json:"Lazy,omitempty"` // not fetched yet: no Path
}

func (a *app) inspectImage(img *store.Image) (imageInspect, error) {
	cfg, raw, err := a.st.Config(img)
	if err != nil {
		return imageInspect{}, err
	}
	out := imageInspect{
		ID: img.ID.String(), RepoTags: img.Names, Author: cfg.Author,
		Architecture: cfg.Architecture, Os: cfg.OS, Size: a.st.ImageSize(img),
		Config: cfg.Config, RootFS: cfg.RootFS, RawConfig: raw,
		GraphDriver: graphDriver{Name: "unionmount", Data: map[string]string{}},
	}
	if out.RepoTags == nil {
		out.RepoTags = []string{}
	}
	out.RepoDigests = append([]string{}, img.RepoDigests...)
	if cfg.Created != nil {
		out.Created = cfg.Created.Format(time.RFC3339Nano)
	}
	var lowers []string
	for i := len(img.Layers) - 1; i >= 0; i-- {
		lowers = append(lowers, a.st.LayerDiff(img.Layers[i]))
	}
	out.GraphDriver.Data["LowerDir"] = strings.Join(lowers, ":")
	if frac, ok := lazyFraction(a.st, img); ok {
		fetched, total := a.st.LazyProgress(img)
		out.Lazy = &lazyInspect{Layers: len(a.st.LazyLayers(img)), FetchedBytes: fetched, TotalBytes: total, Fetched: frac}
	}
	for _, id := range img.Layers {
		l, err := a.st.Layer(id)
		if err != nil {
			ll, lerr := a.st.LazyLayer(id)
			if lerr != nil {
				return out, err
			}
			out.Layers = append(out.Layers, layerInspect{ID: ll.ID.String(), DiffID: ll.DiffID.String(), Size: ll.Size, Lazy: true})
			continue
		}
		out.Layers = append(out.Layers, layerInspect{ID: l.ID.String(), DiffID: l.DiffID.String(), Size: l.Size,
			Path: a.st.LayerDiff(l.ID), TarSize: l.TarSize})
	}
	return out, nil
}

func cmdInspect(a *app, o *cmdOpts, args []string) error {
	if len(args) == 0 {
		return usagef("inspect: give at least one image, container or volume")
	}
	var out []any
	for _, ref := range args {
		var found any
		var err error
		if o.typ == "" || o.typ == "image" {
			var img *store.Image
			if img, err = a.st.LookupImage(ref); err == nil {
				info, err := a.inspectImage(img)
				if err != nil {
					return fmt.Errorf("inspect %s: image %s is damaged: %w; remove it (rmi -f) and load it again",
						ref, img.ID.Encoded()[:12], err)
				}
				found = info
			}
		}
		if found == nil && (o.typ == "" || o.typ == "container") {
			var c *store.Container
			if c, err = a.st.LookupContainer(ref); err == nil {
				found = a.inspectContainer(c)
			}
		}
		if found == nil && (o.typ == "" || o.typ == "volume") {
			var v *store.Volume
			if v, err = a.st.Volume(ref); err == nil {
				found = v
			}
		}
		if found == nil {
			if o.typ == "" && errors.Is(err, image.ErrNotFound) {
				return fmt.Errorf("%w: no image, container or volume %q", image.ErrNotFound, ref)
			}
			return err
		}
		out = append(out, found)
	}
	b, err := json.MarshalIndent(out, "", "    ")
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, string(b))
	return nil
}

func cmdTag(a *app, o *cmdOpts, args []string) error {
	if len(args) != 2 {
		return usagef("tag: give IMAGE and NAME[:TAG]")
	}
	if _, err := image.ParseReference(args[1]); err != nil {
		return usagef("tag: %v", err)
	}
	img, err := a.st.LookupImage(args[0])
	if err != nil {
		return err
	}
	return a.st.Tag(img, args[1])
}

func cmdRmi(a *app, o *cmdOpts, args []string) error {
	if len(args) == 0 {
		return usagef("rmi: give at least one IMAGE")
	}
	var errs []error
	for _, ref := range args {
		res, err := a.st.RemoveImage(ref, o.force)
		for _, n := range res.Untagged {
			fmt.Fprintf(a.stdout, "Untagged: %s\n", n)
		}
		for _, d := range res.Deleted {
			fmt.Fprintf(a.stdout, "Deleted: %s\n", d)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// inputHint says what to do about a refused archive or tarball.
func inputHint(err error) string {
	switch {
	case errors.Is(err, image.ErrDigestMismatch), errors.Is(err, image.ErrCorrupt):
		return "; the file is damaged or incomplete: save or download it again"
	case errors.Is(err, image.ErrUnsafePath), errors.Is(err, image.ErrDuplicateEntry):
		return "; the layer is malformed or hostile: do not use it"
	case errors.Is(err, image.ErrTooLarge):
		return "; if the layer is genuine, free space in the store or raise --max-layer-size"
	case errors.Is(err, image.ErrDeviceNode):
		return "; device nodes need real root"
	case errors.Is(err, image.ErrUnsupported):
		return "; convert it first (skopeo copy can)"
	}
	return ""
}
