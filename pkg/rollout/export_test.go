package rollout

// SetMaxResultBytes lowers the state limit for a test; the returned
// function restores it.
func SetMaxResultBytes(n int) (restore func()) {
	old := maxResultBytes
	maxResultBytes = n
	return func() { maxResultBytes = old }
}

// CheckPeak is checkPeak.
var CheckPeak = checkPeak
