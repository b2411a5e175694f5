package store

import (
	"strings"
	"testing"
)

// crc16 is Redis Cluster's key hash (CRC-16/XMODEM), bit by bit: slow, but
// independent of any client library's table.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slot is the cluster slot of a key: the CRC16 of its hash tag (the part
// between the first '{' and the next '}', if not empty), mod 16384.
func slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % 16384
}

func TestSlotFunction(t *testing.T) {
	// Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
	for key, want := range map[string]uint16{
		"123456789":            0x31C3 % 16384, // the CRC16/XMODEM check value
		"foo":                  12182,
		"{user1000}.following": slot("user1000"),
		"foo{}{bar}":           slot("foo{}{bar}"),
		"{c:abc}:st":           slot("c:abc"),
	} {
		if got := slot(key); got != want {
			t.Errorf("slot(%q) = %d, want %d", key, got, want)
		}
	}
}

// TestCampaignKeysShareSlot: every key of one campaign must hash to the same
// Redis Cluster slot, or the Lua scripts that touch several of them fail
// with CROSSSLOT in a cluster.
func TestCampaignKeysShareSlot(t *testing.T) {
	k := keys{p: "osh"}
	for _, id := range []string{"r3x72fnmrykca", "a", "campaign-with-dashes", "{weird}"} {
		ck := k.campaign(id)
		all := append(ck.everything(), ck.scriptKeys()...)
		want := slot(ck.state)
		for _, key := range all {
			if !strings.Contains(key, "{c:") {
				t.Errorf("key %q has no campaign hash tag", key)
			}
			if got := slot(key); got != want {
				t.Errorf("campaign %q: key %q is in slot %d, %q in %d", id, key, got, ck.state, want)
			}
		}
	}
}
