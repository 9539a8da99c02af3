package build

import (
	"encoding/json"
	"strings"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// config is an image config with docker's fields beside the OCI ones
// (Healthcheck, OnBuild, Shell).
type config struct {
	dockerspec.DockerOCIImage
}

func (c *config) clone() *config {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // a config that was read from JSON marshals again
	}
	var out config
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return &out
}

// appendStep returns the config of the image a step makes: one more
// history entry (empty_layer when diffID is ""), one more diff_id.
func (c *config) appendStep(diffID digest.Digest, createdBy string, now time.Time) ([]byte, error) {
	n := c.clone()
	n.Created = &now
	n.RootFS.Type = "layers"
	if n.RootFS.DiffIDs == nil {
		n.RootFS.DiffIDs = []digest.Digest{}
	}
	h := v1.History{Created: &now, CreatedBy: createdBy, EmptyLayer: diffID == ""}
	if diffID != "" {
		n.RootFS.DiffIDs = append(n.RootFS.DiffIDs, diffID)
	}
	n.History = append(n.History, h)
	return json.Marshal(n)
}

// setEnv sets K=V in the config's Env, in place when K is there already.
func (c *config) setEnv(k, v string) {
	for i, kv := range c.Config.Env {
		if name, _, _ := strings.Cut(kv, "="); name == k {
			c.Config.Env[i] = k + "=" + v
			return
		}
	}
	c.Config.Env = append(c.Config.Env, k+"="+v)
}

// shell is the shell of shell-form instructions: SHELL's, else /bin/sh -c.
func (c *config) shell() []string {
	if len(c.Config.Shell) > 0 {
		return c.Config.Shell
	}
	return []string{"/bin/sh", "-c"}
}
