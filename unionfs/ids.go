package unionfs

import "github.com/hanwen/go-fuse/v2/fuse"

// idMapper shifts owners between the layers (host ids) and the mount
// (container ids), as fuse-overlayfs' uidmapping=/gidmapping= and
// squash_to_* do. The zero value is the identity.
type idMapper struct {
	uids, gids           []IDMap
	squashUID, squashGID int64
}

func mapID(maps []IDMap, id uint32, toHost bool) uint32 {
	if len(maps) == 0 {
		return id
	}
	for _, m := range maps {
		from, to := m.Container, m.Host
		if !toHost {
			from, to = m.Host, m.Container
		}
		if id >= from && id-from < m.Size {
			return to + (id - from)
		}
	}
	return 65534 // overflow id, as the kernel shows unmapped ids
}

// toMount rewrites a layer's owner into the mount's ids.
func (m *idMapper) toMount(a *fuse.Attr) {
	a.Uid = mapID(m.uids, a.Uid, false)
	a.Gid = mapID(m.gids, a.Gid, false)
	if m.squashUID >= 0 {
		a.Uid = uint32(m.squashUID)
	}
	if m.squashGID >= 0 {
		a.Gid = uint32(m.squashGID)
	}
}

// toHost maps a mount owner to the ids stored in the upper.
func (m *idMapper) toHost(uid, gid uint32) (int, int) {
	return int(mapID(m.uids, uid, true)), int(mapID(m.gids, gid, true))
}
