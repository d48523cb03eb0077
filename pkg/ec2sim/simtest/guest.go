package simtest

import (
	"slices"
	"sync"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// HaltWhenImpaired plays the guest of every instance launched from one of
// imageIDs (ec2sim.UnbootableImage: its instance check goes impaired and
// never ok): once the check has been impaired for after (real time), the
// operating system halts (ShutdownFromOS; with shutdown behavior terminate
// the instance terminates). A restore verification then ends that image
// without waiting for its boot timeout (minutes, on the real clock of a
// function under the RIE). Polls every 50 ms until stop is called.
func HaltWhenImpaired(sim *ec2sim.Sim, after time.Duration, imageIDs ...string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		impairedAt := map[string]time.Time{}
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			for _, in := range sim.Instances("", "") {
				if !slices.Contains(imageIDs, in.ImageID) || in.State != "running" || in.InstanceStatus != "impaired" {
					continue
				}
				if at, ok := impairedAt[in.ID]; !ok {
					impairedAt[in.ID] = time.Now()
				} else if time.Since(at) >= after {
					sim.ShutdownFromOS(in.Account, in.Region, in.ID)
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
