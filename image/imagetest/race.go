//go:build race

package imagetest

const raceEnabled = true
