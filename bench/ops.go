package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// The operations the cases time. They run in this process (or in a tool
// it starts), never in a FUSE daemon.

// walkTree lstats every entry below dir as find -ls and du do: getdents64,
// then lstat each name. It returns the number of entries.
func walkTree(dir string) (int64, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("readdir %s: %w", dir, err)
	}
	var n int64
	for _, e := range ents {
		p := dir + "/" + e.Name()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return n, fmt.Errorf("lstat %s: %w", p, err)
		}
		n++
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			m, err := walkTree(p)
			n += m
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// statDir lists one directory and lstats every entry (ls -l without the
// output). It returns the number of entries.
func statDir(dir string) (int64, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("readdir %s: %w", dir, err)
	}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Lstat(dir+"/"+name, &st); err != nil {
			return 0, fmt.Errorf("lstat %s/%s: %w", dir, name, err)
		}
	}
	return int64(len(names)), nil
}

// readAll reads a file to its end in 1 MiB reads and returns the bytes read.
func readAll(path string) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, mib)
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, fmt.Errorf("read %s: %w", path, err)
		}
		if n == 0 {
			return total, nil
		}
		total += int64(n)
	}
}

// randomReads does n 4 KiB preads at seeded, 4 KiB-aligned offsets of a
// file of the given size and returns the bytes read.
func randomReads(path string, size int64, n int, seed uint64) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	rng := rand.New(rand.NewPCG(seed, 4096))
	buf := make([]byte, 4096)
	blocks := size / 4096
	var total int64
	for i := 0; i < n; i++ {
		m, err := unix.Pread(fd, buf, rng.Int64N(blocks)*4096)
		if err != nil {
			return total, fmt.Errorf("pread %s: %w", path, err)
		}
		if m != len(buf) {
			return total, fmt.Errorf("pread %s: short read of %d bytes", path, m)
		}
		total += int64(m)
	}
	return total, nil
}

// writeFile creates path and writes size seeded random bytes in 1 MiB
// writes, then fsyncs and closes it.
func writeFile(path string, size int64, seed uint64) (int64, error) {
	buf := make([]byte, mib)
	rand.NewChaCha8(seed32(seed, 1)).Read(buf)
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", path, err)
	}
	var total int64
	for total < size {
		chunk := buf[:min(int64(len(buf)), size-total)]
		n, err := unix.Write(fd, chunk)
		if err != nil {
			unix.Close(fd)
			return total, fmt.Errorf("write %s: %w", path, err)
		}
		total += int64(n)
	}
	if err := unix.Fsync(fd); err != nil {
		unix.Close(fd)
		return total, fmt.Errorf("fsync %s: %w", path, err)
	}
	return total, unix.Close(fd)
}

// appendByte opens a file for appending, writes one byte and closes it: the
// open for write copies a lower file up. It returns the new size.
func appendByte(path string) (int64, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s for append: %w", path, err)
	}
	if _, err := unix.Write(fd, []byte{'\n'}); err != nil {
		unix.Close(fd)
		return 0, fmt.Errorf("append to %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return st.Size, unix.Close(fd)
}

// churn creates n small files in directories of 1000 under w/churn,
// renames every other one within its directory, then deletes everything.
func churn(r *Run, n int) error {
	root := r.Path("w/churn")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	content := bytes.Repeat([]byte("churn\n"), 86)[:512]
	name := func(prefix string, i int) string { return fmt.Sprintf("%s/d%03d/%s%06d", root, i/1000, prefix, i) }
	err := r.Time(Sample{Metric: "churn: create", Ops: int64(n)}, func(s *Sample) error {
		for i := 0; i < n; i++ {
			if i%1000 == 0 {
				if err := unix.Mkdir(fmt.Sprintf("%s/d%03d", root, i/1000), 0o755); err != nil {
					return err
				}
			}
			fd, err := unix.Open(name("f", i), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			_, err = unix.Write(fd, content)
			if cerr := unix.Close(fd); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = r.Time(Sample{Metric: "churn: rename half", Ops: int64((n + 1) / 2)}, func(s *Sample) error {
		for i := 0; i < n; i += 2 {
			if err := unix.Rename(name("f", i), name("r", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return r.Time(Sample{Metric: "churn: delete all", Ops: int64(n)}, func(s *Sample) error {
		for i := 0; i < n; i++ {
			prefix := "f"
			if i%2 == 0 {
				prefix = "r"
			}
			if err := unix.Unlink(name(prefix, i)); err != nil {
				return err
			}
			if i%1000 == 999 || i == n-1 {
				if err := unix.Rmdir(fmt.Sprintf("%s/d%03d", root, i/1000)); err != nil {
					return err
				}
			}
		}
		left, err := statDir(root)
		s.Check = fmt.Sprintf("%d left", left)
		return err
	})
}

// goTree untars the tree into the upper, greps it and removes it.
func goTree(r *Run, tarPath, top string) error {
	dir := r.Path("w")
	if err := r.Time(Sample{Metric: "untar"}, func(s *Sample) error {
		return r.tool("tar", "-xf", tarPath, "-C", dir)
	}); err != nil {
		return err
	}
	if err := r.Time(Sample{Metric: "grep -r"}, func(s *Sample) error {
		n, err := grepCount(r.command("grep", "-r", "-l", "-F", "func (", dir+"/"+top))
		s.Check = fmt.Sprintf("%d files match", n)
		return err
	}); err != nil {
		return err
	}
	return r.Time(Sample{Metric: "rm -rf"}, func(s *Sample) error {
		if err := r.tool("rm", "-rf", dir+"/"+top); err != nil {
			return err
		}
		left, err := statDir(dir)
		s.Check = fmt.Sprintf("%d left", left)
		return err
	})
}

// grepCount runs a grep -l and counts the files it names.
func grepCount(cmd *exec.Cmd) (int, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n++
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		err = nil // no match is an answer, not a failure
	}
	if err != nil {
		return n, fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return n, nil
}
