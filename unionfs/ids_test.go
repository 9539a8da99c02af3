package unionfs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The mappings of these tests, as parseIDMapping in cmd/unionmount builds
// them from uidmapping=:0:1000:1:1:100000:65536 and
// gidmapping=:1000:3000:1:0:300000:1000 (LAYER:MOUNT:COUNT triples).
var (
	multiUIDs = []IDMap{
		{Host: 0, Container: 1000, Size: 1},
		{Host: 1, Container: 100000, Size: 65536},
	}
	// Not in id order, and not starting at 0: the first range that holds
	// an id decides.
	multiGIDs = []IDMap{
		{Host: 1000, Container: 3000, Size: 1},
		{Host: 0, Container: 300000, Size: 1000},
	}
)

func TestMapID(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maps   []IDMap
		id     uint32
		toHost bool
		want   uint32
	}{
		{"no mapping is the identity", nil, 70000, false, 70000},
		{"no mapping is the identity to the host", nil, 70000, true, 70000},

		{"layer 0 in the one-id range", multiUIDs, 0, false, 1000},
		{"layer 1: first id of the second range", multiUIDs, 1, false, 100000},
		{"layer 1000 in the second range", multiUIDs, 1000, false, 100999},
		{"layer 65536: last id of the second range", multiUIDs, 65536, false, 165535},
		{"layer 65537: one past every range", multiUIDs, 65537, false, 65534},
		{"layer 4294967295: the largest id", multiUIDs, 1<<32 - 1, false, 65534},

		{"mount 1000 back to layer 0", multiUIDs, 1000, true, 0},
		{"mount 100000 back to layer 1", multiUIDs, 100000, true, 1},
		{"mount 165535 back to layer 65536", multiUIDs, 165535, true, 65536},
		{"mount 165536: past every range", multiUIDs, 165536, true, 65534},
		{"mount 99999: just below the second range", multiUIDs, 99999, true, 65534},
		{"mount 0: in no range (the mount's root is not mapped)", multiUIDs, 0, true, 65534},
		{"mount 1001: just past the one-id range", multiUIDs, 1001, true, 65534},
		{"mount 999: just below the one-id range", multiUIDs, 999, true, 65534},

		{"gid layer 1000 takes the one-id range, not the second", multiGIDs, 1000, false, 3000},
		{"gid layer 999: last of the second range", multiGIDs, 999, false, 300999},
		{"gid layer 1001: past every range", multiGIDs, 1001, false, 65534},
		{"gid mount 3000 back to layer 1000", multiGIDs, 3000, true, 1000},
		{"gid mount 300000 back to layer 0", multiGIDs, 300000, true, 0},
		{"gid mount 301000: past the second range", multiGIDs, 301000, true, 65534},
	} {
		if got := mapID(tc.maps, tc.id, tc.toHost); got != tc.want {
			t.Errorf("%s: mapID(%d, toHost=%v) = %d; want %d", tc.name, tc.id, tc.toHost, got, tc.want)
		}
	}
}

// TestMapIDRoundTrip: every mapped id comes back to itself, in both
// directions, at both ends of every range.
func TestMapIDRoundTrip(t *testing.T) {
	for _, maps := range [][]IDMap{multiUIDs, multiGIDs} {
		for _, m := range maps {
			for _, off := range []uint32{0, m.Size / 2, m.Size - 1} {
				layer, mount := m.Host+off, m.Container+off
				if got := mapID(maps, layer, false); got != mount {
					t.Errorf("%v: layer %d shows as %d; want %d", maps, layer, got, mount)
				}
				if got := mapID(maps, mapID(maps, layer, false), true); got != layer {
					t.Errorf("%v: layer %d comes back as %d", maps, layer, got)
				}
				if got := mapID(maps, mapID(maps, mount, true), false); got != mount {
					t.Errorf("%v: mount %d comes back as %d", maps, mount, got)
				}
			}
		}
	}
}

func TestIDMapperToMount(t *testing.T) {
	none := idMapper{squashUID: -1, squashGID: -1}
	mapped := idMapper{uids: multiUIDs, gids: multiGIDs, squashUID: -1, squashGID: -1}
	for _, tc := range []struct {
		name             string
		m                idMapper
		uid, gid         uint32
		wantUID, wantGID uint32
	}{
		{"no options", none, 1000, 70000, 1000, 70000},
		// uid and gid go through their own mappings: the same id 1000
		// becomes 100999 as a uid and 3000 as a gid.
		{"uid and gid mapped apart", mapped, 1000, 1000, 100999, 3000},
		{"root", mapped, 0, 0, 1000, 300000},
		{"uid mapped, gid in no range", mapped, 5, 1001, 100004, 65534},
		{"both in no range", mapped, 70000, 70000, 65534, 65534},
		{"squash_to_uid= and squash_to_gid=", idMapper{squashUID: 5, squashGID: 6}, 1000, 70000, 5, 6},
		{"squash_to_root", idMapper{}, 1000, 70000, 0, 0},
		{"squash_to_uid= alone keeps the gid", idMapper{squashUID: 5, squashGID: -1}, 1000, 70000, 5, 70000},
		// Squashing wins over a mapping: containers-storage sends one or
		// the other, never both, but an id out of range still shows as the
		// squash id, not 65534.
		{"squash over a mapping", idMapper{uids: multiUIDs, gids: multiGIDs, squashUID: 7, squashGID: 8}, 70000, 1000, 7, 8},
	} {
		a := fuse.Attr{Owner: fuse.Owner{Uid: tc.uid, Gid: tc.gid}}
		tc.m.toMount(&a)
		if a.Uid != tc.wantUID || a.Gid != tc.wantGID {
			t.Errorf("%s: %d:%d shows as %d:%d; want %d:%d", tc.name, tc.uid, tc.gid, a.Uid, a.Gid, tc.wantUID, tc.wantGID)
		}
	}
}

func TestIDMapperToHost(t *testing.T) {
	mapped := idMapper{uids: multiUIDs, gids: multiGIDs, squashUID: -1, squashGID: -1}
	for _, tc := range []struct {
		name             string
		m                idMapper
		uid, gid         uint32
		wantUID, wantGID int
	}{
		{"no options: stored as the caller", idMapper{squashUID: -1, squashGID: -1}, 1000, 70000, 1000, 70000},
		{"mapped apart", mapped, 100999, 3000, 1000, 1000},
		{"the mount's view of layer root", mapped, 1000, 300000, 0, 0},
		{"caller in no range: the overflow id", mapped, 0, 0, 65534, 65534},
		{"uid in range, gid not", mapped, 100004, 3001, 5, 65534},
		// Squashing only changes what the mount shows: a new file is
		// stored with the caller's ids (mapped back, when mapped).
		{"squash stores the caller's ids", idMapper{squashUID: 5, squashGID: 6}, 0, 0, 0, 0},
		{"squash over a mapping maps back", idMapper{uids: multiUIDs, gids: multiGIDs, squashUID: 7, squashGID: 8}, 100999, 3000, 1000, 1000},
	} {
		uid, gid := tc.m.toHost(tc.uid, tc.gid)
		if uid != tc.wantUID || gid != tc.wantGID {
			t.Errorf("%s: caller %d:%d stored as %d:%d; want %d:%d", tc.name, tc.uid, tc.gid, uid, gid, tc.wantUID, tc.wantGID)
		}
	}
}
