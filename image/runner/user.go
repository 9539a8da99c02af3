package runner

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// resolveUser turns the container's user spec (name, uid, name:group,
// uid:gid; "" is root) into ids, supplementary groups and home, reading
// the container's /etc/passwd and /etc/group. Numeric ids need no entry.
func resolveUser(spec string) (uid, gid int, groups []int, home string, err error) {
	return ResolveUser(spec, "/etc/passwd", "/etc/group")
}

// ResolveUser is resolveUser with the passwd and group files named ("":
// none).
func ResolveUser(spec, passwdPath, groupPath string) (uid, gid int, groups []int, home string, err error) {
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	passwd := readColonFile(passwdPath)
	home = "/"
	found := false
	if n, err := strconv.Atoi(userPart); err == nil && n >= 0 {
		uid, gid = n, n
		if n == 0 {
			gid = 0
		}
		for _, f := range passwd {
			if len(f) >= 6 && f[2] == userPart {
				gid, _ = strconv.Atoi(f[3])
				home, found = f[5], true
				break
			}
		}
		if !found && n != 0 {
			gid = 0 // as runc: a uid without an entry gets gid 0
		}
		if n == 0 && !found {
			home = "/root"
		}
	} else {
		for _, f := range passwd {
			if len(f) >= 6 && f[0] == userPart {
				uid, _ = strconv.Atoi(f[2])
				gid, _ = strconv.Atoi(f[3])
				home, found = f[5], true
				break
			}
		}
		if !found {
			return 0, 0, nil, "", fmt.Errorf("user %q: no such user in the container's /etc/passwd; use a uid", userPart)
		}
	}
	grp := readColonFile(groupPath)
	if hasGroup {
		if n, err := strconv.Atoi(groupPart); err == nil && n >= 0 {
			gid = n
		} else {
			ok := false
			for _, f := range grp {
				if len(f) >= 3 && f[0] == groupPart {
					gid, _ = strconv.Atoi(f[2])
					ok = true
					break
				}
			}
			if !ok {
				return 0, 0, nil, "", fmt.Errorf("group %q: no such group in the container's /etc/group; use a gid", groupPart)
			}
		}
	}
	// Supplementary groups: those that list the user by name.
	name := userPart
	for _, f := range passwd {
		if len(f) >= 3 && f[2] == strconv.Itoa(uid) {
			name = f[0]
			break
		}
	}
	groups = []int{}
	for _, f := range grp {
		if len(f) < 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == name {
				if g, err := strconv.Atoi(f[2]); err == nil && g != gid {
					groups = append(groups, g)
				}
			}
		}
	}
	return uid, gid, groups, home, nil
}

func readColonFile(p string) [][]string {
	if p == "" {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}
