package store

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/unionmount/unionmount/image/imagetest"
)

// configStep stores a config-only step over parent with the given key.
func configStep(t *testing.T, s *Store, parent *Image, key string) *Image {
	t.Helper()
	img, err := s.PutStep(StepOptions{Parent: parent, CacheKey: key, Config: func(diffID digest.Digest) ([]byte, error) {
		if diffID != "" {
			t.Errorf("a step without a container got diff_id %s", diffID)
		}
		return json.Marshal(map[string]any{"rootfs": map[string]any{"type": "layers", "diff_ids": []string{}}, "step": key, "parent": parent.ID})
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Layers, parent.Layers) {
		t.Errorf("a config-only step has layers %v, its parent %v", img.Layers, parent.Layers)
	}
	return img
}

// TestBuildSteps: steps are found by parent and key; rmi of a built image
// removes the unnamed steps below it up to one that has another child or
// a name, and with them their cache entries.
func TestBuildSteps(t *testing.T) {
	s := newStore(t)
	base := mustImport(t, s, imagetest.Tar(t, []imagetest.Entry{{Name: "f", Body: []byte("x")}}), "base:1")
	a := configStep(t, s, base, "a")
	b := configStep(t, s, a, "b")
	c := configStep(t, s, b, "c")
	d := configStep(t, s, a, "d") // a second child of a
	for _, q := range []struct {
		parent *Image
		key    string
		want   *Image
	}{{base, "a", a}, {a, "b", b}, {b, "c", c}, {a, "d", d}, {base, "b", nil}, {a, "c", nil}} {
		got := s.CachedStep(q.parent.ID, q.key)
		if (got == nil) != (q.want == nil) || got != nil && got.ID != q.want.ID {
			t.Errorf("CachedStep(%s, %s) = %v, want %v", q.parent.ID, q.key, got, q.want)
		}
	}
	if s.BuildParent(c) != b.ID || s.BuildParent(base) != "" {
		t.Errorf("build parents: %s of c, %q of base", s.BuildParent(c), s.BuildParent(base))
	}
	if err := s.Tag(c, "built:1"); err != nil {
		t.Fatal(err)
	}
	res, err := s.RemoveImage("built:1", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []digest.Digest{c.ID, b.ID}; !slices.Equal(res.Deleted, want) {
		t.Errorf("rmi built:1 deleted %v, want c and b (a has another child)", res.Deleted)
	}
	if s.CachedStep(a.ID, "b") != nil || s.CachedStep(base.ID, "a") == nil {
		t.Error("the cache did not go with the images, or went too far")
	}
	res, err = s.RemoveImage(d.ID.String(), false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []digest.Digest{d.ID, a.ID}; !slices.Equal(res.Deleted, want) {
		t.Errorf("rmi d deleted %v, want d and a (base has a name)", res.Deleted)
	}
	if imgs, _ := s.Images(); len(imgs) != 1 || imgs[0].ID != base.ID {
		t.Errorf("images left: %v", imgs)
	}
}
