package build

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/unionmount/unionmount/image/store"
)

// newContainer makes a step's container on the stage's image, to run args
// with env over the image's. remove unmounts and removes it.
func (b *builder) newContainer(s *stage, args, env []string) (c *store.Container, remove func(), err error) {
	wd := s.cfg.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	c, err = b.o.Store.CreateContainer(store.CreateOptions{
		Image: s.img.ID.String(), Cmd: args, Entrypoint: []string{}, Env: env,
		WorkingDir: wd, User: s.cfg.Config.User,
	})
	if err != nil {
		return nil, nil, err
	}
	return c, func() {
		st := b.o.Store
		st.Unmount(c)
		if cur, err := st.LookupContainer(c.ID); err == nil {
			st.RemoveContainer(cur, true)
		}
	}, nil
}

// finish stores what the step's container changed (a layer, or an
// empty_layer history entry when it changed nothing).
func (b *builder) finish(s *stage, c *store.Container, createdBy, cacheKey string) error {
	if err := b.o.Store.Unmount(c); err != nil {
		return err
	}
	changes, err := b.o.Store.Diff(c)
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		c = nil
	}
	return b.commitStep(s, c, createdBy, cacheKey)
}

// inContainer runs write on the merged root of a container over the
// stage's image and stores the result as the step's image.
func (b *builder) inContainer(s *stage, env []string, createdBy, cacheKey string, write func(*rootFS) error) error {
	c, remove, err := b.newContainer(s, []string{"true"}, env)
	if err != nil {
		return err
	}
	defer remove()
	if _, err := b.o.Store.Mount(c); err != nil {
		return err
	}
	r, err := openRoot(b.o.Store.Merged(c))
	if err != nil {
		return err
	}
	err = write(r)
	r.close()
	if err != nil {
		return err
	}
	return b.finish(s, c, createdBy, cacheKey)
}

// runStep runs args in a container over the stage's image, with the
// RUN's ARG values in its environment.
func (b *builder) runStep(s *stage, args, argEnv []string, createdBy, cacheKey string) error {
	if b.o.Run == nil {
		return errors.New("this builder cannot run containers")
	}
	// The proxy ARGs reach every RUN without a declaration, and stay
	// out of the history and the cache key, as docker's.
	env := slices.Clone(argEnv)
	for k, v := range b.o.BuildArgs {
		if isPredefined(k) && !s.declared(k) {
			env = append(env, k+"="+v)
		}
	}
	c, remove, err := b.newContainer(s, args, env)
	if err != nil {
		return err
	}
	defer remove()
	fmt.Fprintf(b.out, " ---> Running in %s\n", c.ID[:12])
	code, err := b.o.Run(b.ctx, c, b.out, b.out)
	if cerr := b.ctx.Err(); cerr != nil {
		return fmt.Errorf("interrupted: %w", cerr)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Cmd: strings.Join(args, " "), Code: code}
	}
	fmt.Fprintf(b.out, "Removing intermediate container %s\n", c.ID[:12])
	return b.finish(s, c, createdBy, cacheKey)
}

// declared reports whether the stage declared ARG k.
func (s *stage) declared(k string) bool {
	_, ok := s.args[k]
	return ok
}
