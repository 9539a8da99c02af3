// Package rootless tests unionmount without root, and holds the helpers
// other test packages (internal/podman) use to run things as a non-root
// user.
//
// # Helpers
//
// NewUser creates a throwaway user with useradd, with 65536 subordinate
// ids in /etc/subuid and /etc/subgid, and deletes it after the test. Its
// cleanup is also the leak check: a process the user still runs then (a
// mount daemon, a podman pause process) fails the test.
//
// User.Command and User.Run run a command as that user in a Sandbox: a
// private mount namespace made by root, in which a /dev/fuse node of a
// chosen mode (0666, as udev makes it, or 0600) and optionally an
// /etc/fuse.conf are bound over the host's, before setpriv drops to the
// user. The host's /dev/fuse, 0600 on this kind of machine, is never
// changed, and nothing the command mounts shows outside.
//
// # What the tests check
//
//   - A user mounts through the setuid fusermount3 (no DirectMount), and
//     writes land in the upper as kernel overlayfs with userxattr leaves
//     them: same names, types, modes, owners, user.overlay.opaque, char
//     0/0 whiteouts, and no trusted.* xattr.
//   - The namespace root of `unshare --user --map-root-user --map-auto
//     --mount` (rootless podman's setup) mounts directly with allow_other;
//     files made by namespace root and by other mapped ids, copy-ups and
//     chowns land in the upper with the host ids the kernel gives them.
//     FUSE passthrough is refused there (EPERM): the daemon's --debug log
//     says it fell back, and the mount keeps serving (TestPassthroughAsRoot
//     checks the other side: root keeps passthrough).
//   - The host requirements (a 0666 /dev/fuse, a setuid fusermount3,
//     user_allow_other, a mount namespace owned by the user namespace):
//     without each, unionmount exits 1 with a message that names the fix.
package rootless
