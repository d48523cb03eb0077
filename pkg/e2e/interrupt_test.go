package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoInterruptLeavesNoProcess runs the demo command, interrupts it
// with SIGINT while its functions run, and checks that no RIE or bootstrap
// process survives.
func TestDemoInterruptLeavesNoProcess(t *testing.T) {
	root, _ := filepath.Abs("../..")
	bin := filepath.Join(t.TempDir(), "amibackup-demo")
	build := exec.Command("go", "build", "-o", bin, "./pkg/localrun/cmd/amibackup-demo")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build demo: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-hold")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "AMIBACKUP_RIE="+prepared.RIE)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		if f, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "pids: "); ok {
			for _, p := range strings.Fields(f) {
				n, _ := strconv.Atoi(p)
				pids = append(pids, n)
			}
			break
		}
	}
	if len(pids) != 2 {
		cmd.Process.Kill()
		t.Fatalf("demo did not report its RIE pids")
	}
	children := childPIDs(pids)
	if len(children) == 0 {
		t.Fatalf("no bootstrap processes under the RIEs %v", pids)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Errorf("demo exit after SIGINT: %v, want code 130", err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, p := range append(pids, children...) {
		if syscall.Kill(p, 0) == nil && !zombie(p) {
			t.Errorf("process %d still running after SIGINT", p)
		}
	}
}

func childPIDs(parents []int) []int {
	var out []int
	for _, p := range parents {
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(p) + "/task/*/children")
		for _, t := range tasks {
			b, _ := os.ReadFile(t)
			for _, f := range strings.Fields(string(b)) {
				n, _ := strconv.Atoi(f)
				out = append(out, n)
			}
		}
	}
	return out
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err != nil || strings.Contains(string(b), ") Z ")
}
