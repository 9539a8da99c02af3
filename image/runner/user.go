package runner

import (
	"bufio"
	"errors"
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
	if n, ok := parseID(userPart); ok {
		uid, gid = n, n
		if n == 0 {
			gid = 0
		}
		for _, f := range passwd {
			if len(f) >= 6 && f[2] == userPart {
				if gid, ok = parseID(f[3]); !ok {
					return 0, 0, nil, "", badEntry("user", userPart, "gid", f[3], "/etc/passwd")
				}
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
	} else if isNumber(userPart) {
		return 0, 0, nil, "", fmt.Errorf("uid %s is out of range: use 0 to %d", userPart, maxID)
	} else {
		for _, f := range passwd {
			if len(f) >= 6 && f[0] == userPart {
				var ok1, ok2 bool
				uid, ok1 = parseID(f[2])
				gid, ok2 = parseID(f[3])
				if !ok1 || !ok2 {
					return 0, 0, nil, "", badEntry("user", userPart, "uid or gid", f[2]+":"+f[3], "/etc/passwd")
				}
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
		if n, ok := parseID(groupPart); ok {
			gid = n
		} else if isNumber(groupPart) {
			return 0, 0, nil, "", fmt.Errorf("gid %s is out of range: use 0 to %d", groupPart, maxID)
		} else {
			ok := false
			for _, f := range grp {
				if len(f) >= 3 && f[0] == groupPart {
					if gid, ok = parseID(f[2]); !ok {
						return 0, 0, nil, "", badEntry("group", groupPart, "gid", f[2], "/etc/group")
					}
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
				if g, ok := parseID(f[2]); ok && g != gid {
					groups = append(groups, g)
				}
			}
		}
	}
	return uid, gid, groups, home, nil
}

// maxID is the largest uid or gid: uid_t is 32 bits and (uid_t)-1 means
// "leave unchanged" to setresuid and chown.
const maxID = 1<<32 - 2

// parseID reads a uid or gid, refusing what is not one (a negative or
// too large number in an image's passwd would otherwise become uid -1 or
// wrap around when runc casts it).
func parseID(s string) (int, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxID {
		return 0, false
	}
	return int(n), true
}

// isNumber reports whether s is a decimal integer, perhaps negative.
func isNumber(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil || errors.Is(err, strconv.ErrRange)
}

func badEntry(kind, name, field, value, file string) error {
	return fmt.Errorf("%s %q: the container's %s gives it %s %.20q, which is not 0 to %d: fix the image's %s or use numeric ids",
		kind, name, file, field, value, maxID, file)
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
