// Package localrun runs the real Lambda bootstrap binaries under the AWS
// Lambda Runtime Interface Emulator (RIE), with the configuration taken from
// the synthesized CloudFormation template, against an EC2 endpoint given by
// the standard AWS_ENDPOINT_URL_EC2. The demo command and the end-to-end
// tests share it.
package localrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/lambdabuild"
)

// Build compiles functions/<name> into dir/<name>/bootstrap for goarch
// (runtime.GOARCH to run under the local RIE; the stacks deploy arm64).
func Build(ctx context.Context, root, dir, goarch, name string) (string, error) {
	out := filepath.Join(dir, goarch, name, "bootstrap")
	// The flags the stacks bundle with (pkg/lambdabuild), for goarch.
	args := append([]string{"build"}, lambdabuild.Flags...)
	args = append(args, "-o", out, "./functions/"+name)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+lambdabuild.GOOS, "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s for %s: %w\n%s", name, goarch, err, b)
	}
	return out, nil
}

// Synth runs `cdk synth` (the real CLI, reading cdk.json) into outDir and
// returns the path of the stack's template.
func Synth(ctx context.Context, root, outDir, stack string) (string, error) {
	return SynthConfig(ctx, root, outDir, stack, "")
}

// SynthConfig is Synth with cfgJSON (one line) as the amibackup:config
// context instead of cdk.json's ("" keeps cdk.json's).
func SynthConfig(ctx context.Context, root, outDir, stack, cfgJSON string) (string, error) {
	if _, err := exec.LookPath("cdk"); err != nil {
		return "", errors.New("cdk CLI not on PATH: run `make tools` (installs Node 22 and the CDK CLI into .tools) and use the Makefile targets")
	}
	args := []string{"synth", "--quiet", "--no-notices", "-o", outDir}
	if cfgJSON != "" {
		args = append(args, "-c", "amibackup:config="+cfgJSON)
	}
	cmd := exec.CommandContext(ctx, "cdk", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cdk synth: %w\n%s", err, b)
	}
	return filepath.Join(outDir, stack+".template.json"), nil
}

// AllAtOnce returns cdk.json's amibackup:config (one line) with
// "availability":{"mode":"all-at-once"} on every policy that reboots and
// has no availability section: by default such a policy reboots in waves
// through the workflow, handed over by the backup function; all at once it
// keeps the backup function's one-call run, which the nights of the demo
// and the end-to-end tests of the backup function play. It returns the
// names of the policies it changed.
func AllAtOnce(root string) (string, []string, error) {
	b, err := os.ReadFile(filepath.Join(root, "cdk.json"))
	if err != nil {
		return "", nil, err
	}
	var cdk struct {
		Context map[string]json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(b, &cdk); err != nil {
		return "", nil, fmt.Errorf("cdk.json: %w", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(cdk.Context["amibackup:config"], &cfg); err != nil {
		return "", nil, fmt.Errorf("cdk.json amibackup:config: %w", err)
	}
	var changed []string
	pols, _ := cfg["policies"].([]any)
	for _, p := range pols {
		pol, _ := p.(map[string]any)
		if pol == nil || pol["availability"] != nil || pol["reboot"] == false {
			continue
		}
		pol["availability"] = map[string]any{"mode": config.ModeAllAtOnce}
		changed = append(changed, fmt.Sprint(pol["name"]))
	}
	out, err := json.Marshal(cfg)
	return string(out), changed, err
}

// TemplateEnv returns the environment Lambda gives the function whose
// logical ID starts with prefix ("Backup", "Prune") in a template: its
// variables (AMIBACKUP_CONFIG, and the backup's AMIBACKUP_WORKFLOW_ARN: a
// reference to the state machine, resolved to its ARN in ec2sim's account
// and Region from the state machine's fixed name, as $$.StateMachine.Id
// of a local run with that name: StateMachineName) and the variables
// Lambda derives from its LoggingConfig (AWS_LAMBDA_LOG_FORMAT,
// AWS_LAMBDA_LOG_LEVEL), so the local run cannot drift from the deployed
// function.
func TemplateEnv(templatePath, prefix string) ([]string, error) {
	t, err := readTemplate(templatePath)
	if err != nil {
		return nil, err
	}
	for id, r := range t.Resources {
		p := r.Properties
		if r.Type != "AWS::Lambda::Function" || !strings.HasPrefix(id, prefix) {
			continue
		}
		if _, ok := p.Environment.Variables[config.EnvVar]; !ok {
			continue
		}
		var env []string
		for _, k := range slices.Sorted(maps.Keys(p.Environment.Variables)) {
			raw := p.Environment.Variables[k]
			var v string
			if json.Unmarshal(raw, &v) != nil {
				// A token: a reference to the named state machine is
				// resolved here; others (the verify network's subnet and
				// security group IDs, Fn::Join and Ref) are left to the
				// caller, which supplies local values (PrepareVerify
				// checks that the template sets the ones it supplies).
				var ref struct{ Ref string }
				if json.Unmarshal(raw, &ref) != nil || t.Resources[ref.Ref].Type != "AWS::StepFunctions::StateMachine" {
					continue
				}
				name := t.Resources[ref.Ref].Properties.StateMachineName
				if name == "" {
					return nil, fmt.Errorf("state machine %s has no StateMachineName", ref.Ref)
				}
				v = StateMachineARN(name)
			}
			env = append(env, k+"="+v)
		}
		if p.LoggingConfig.LogFormat != "" {
			env = append(env, "AWS_LAMBDA_LOG_FORMAT="+p.LoggingConfig.LogFormat)
		}
		if p.LoggingConfig.ApplicationLogLevel != "" {
			env = append(env, "AWS_LAMBDA_LOG_LEVEL="+p.LoggingConfig.ApplicationLogLevel)
		}
		return env, nil
	}
	return nil, fmt.Errorf("no function %s* with %s in %s", prefix, config.EnvVar, templatePath)
}

type template struct {
	Resources map[string]struct {
		Type       string
		Properties struct {
			Environment      struct{ Variables map[string]json.RawMessage }
			LoggingConfig    struct{ LogFormat, ApplicationLogLevel string }
			StateMachineName string
		}
	}
}

func readTemplate(path string) (*template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	var t template
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("parse template %s: %w", path, err)
	}
	return &t, nil
}

// StateMachineName is the name of the template's one state machine with
// a fixed name (the reboot-wave workflow; the verification's is generated).
func StateMachineName(templatePath string) (string, error) {
	t, err := readTemplate(templatePath)
	if err != nil {
		return "", err
	}
	var names []string
	for _, r := range t.Resources {
		if r.Type == "AWS::StepFunctions::StateMachine" && r.Properties.StateMachineName != "" {
			names = append(names, r.Properties.StateMachineName)
		}
	}
	if len(names) != 1 {
		return "", fmt.Errorf("%s: %d state machines with a fixed name (%v), want 1", templatePath, len(names), names)
	}
	return names[0], nil
}

// StateMachineARN is the ARN of the state machine named name in ec2sim's
// default account and Region (where the functions run locally).
func StateMachineARN(name string) string {
	return fmt.Sprintf("arn:aws:states:%s:%s:stateMachine:%s", ec2sim.DefaultRegion, ec2sim.DefaultAccount, name)
}

// Report is the RIE's REPORT line of one invocation.
type Report struct {
	InitMS, DurationMS float64
	MemorySizeMB       int
	// MaxRSSMB is the bootstrap process's peak resident memory, read from
	// /proc: the RIE prints the configured size as "Max Memory Used".
	MaxRSSMB float64
}

// Function is one bootstrap running under its own RIE.
type Function struct {
	Name string
	URL  string
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs bootstrap under the RIE at riePath with env added to a clean
// environment (PATH and HOME only, so nothing leaks from the caller's AWS
// setup). The RIE runs in its own process group; Stop kills the group.
func Start(ctx context.Context, riePath, name, bootstrap string, env []string) (*Function, error) {
	// A free port is free when freePort closes it, not necessarily when the
	// RIE binds it: with several RIEs starting in parallel (tests of several
	// packages, concurrent invocations) another process can take it first.
	// The RIE then exits with "address already in use"; try other ports.
	for attempt := 1; ; attempt++ {
		f, err := startOnce(ctx, riePath, name, bootstrap, env)
		if err == nil || attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			return f, err
		}
	}
}

func startOnce(ctx context.Context, riePath, name, bootstrap string, env []string) (*Function, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(riePath, "--runtime-interface-emulator-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", apiPort), bootstrap)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"AWS_LAMBDA_FUNCTION_NAME=" + name, "AWS_LAMBDA_FUNCTION_TIMEOUT=900", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	f := &Function{Name: name, URL: fmt.Sprintf("http://127.0.0.1:%d/2015-03-31/functions/function/invocations", port), cmd: cmd, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start RIE for %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			f.mu.Lock()
			f.logs.Write(sc.Bytes())
			f.logs.WriteByte('\n')
			f.mu.Unlock()
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(f.done) }()
	// Wait until the RIE accepts connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return f, nil
		}
		select {
		case <-f.done:
			return nil, fmt.Errorf("RIE for %s exited: %s", name, f.Logs())
		case <-ctx.Done():
			f.Stop()
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			f.Stop()
			return nil, fmt.Errorf("RIE for %s did not listen within 10s: %s", name, f.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logs returns everything the RIE and the function printed.
func (f *Function) Logs() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.String()
}

// PID of the RIE process (the group leader).
func (f *Function) PID() int { return f.cmd.Process.Pid }

// Stop kills the RIE and the bootstrap it started (the process group).
func (f *Function) Stop() {
	if f.cmd.Process == nil {
		return
	}
	syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
	}
}

// FunctionError is an error returned by the handler.
type FunctionError struct {
	Message, Type string
}

func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

var (
	reportRE = regexp.MustCompile(`REPORT RequestId: \S+\s+(?:Init Duration: ([0-9.]+) ms\s+)?Duration: ([0-9.]+) ms.*Memory Size: ([0-9]+) MB`)
	// This RIE's REPORT line prints a near-zero Init Duration; the runtime
	// init is measured by its "INIT REPORT(durationMs: ...)" line.
	initRE = regexp.MustCompile(`INIT REPORT\(durationMs: ([0-9.]+)\)`)
)

// Invoke sends payload and returns the handler's response. A handler error
// comes back as *FunctionError.
func (f *Function) Invoke(ctx context.Context, payload []byte) (json.RawMessage, Report, error) {
	before := strings.Count(f.Logs(), "REPORT RequestId")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL, bytes.NewReader(payload))
	if err != nil {
		return nil, Report{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, Report{}, fmt.Errorf("invoke %s: %w", f.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, Report{}, fmt.Errorf("invoke %s: read response: %w", f.Name, err)
	}
	rep := f.waitReport(before)
	var fe struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
	}
	if json.Unmarshal(body, &fe) == nil && fe.ErrorMessage != "" {
		return body, rep, &FunctionError{Message: fe.ErrorMessage, Type: fe.ErrorType}
	}
	if resp.StatusCode != http.StatusOK {
		return body, rep, fmt.Errorf("invoke %s: HTTP %d: %s", f.Name, resp.StatusCode, body)
	}
	return body, rep, nil
}

// waitReport waits briefly for the REPORT line after an invocation and
// samples the bootstrap's peak memory.
func (f *Function) waitReport(before int) Report {
	var rep Report
	for i := 0; i < 100; i++ {
		logs := f.Logs()
		if strings.Count(logs, "REPORT RequestId") > before {
			ms := reportRE.FindAllStringSubmatch(logs, -1)
			m := ms[len(ms)-1]
			rep.InitMS, _ = strconv.ParseFloat(m[1], 64)
			if im := initRE.FindStringSubmatch(logs); im != nil && before == 0 {
				rep.InitMS, _ = strconv.ParseFloat(im[1], 64)
			}
			rep.DurationMS, _ = strconv.ParseFloat(m[2], 64)
			rep.MemorySizeMB, _ = strconv.Atoi(m[3])
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep.MaxRSSMB = peakRSS(f.cmd.Process.Pid)
	return rep
}

// peakRSS returns the largest VmHWM (peak RSS) among the RIE's child
// processes, i.e. the bootstrap, in MB; 0 where /proc is unavailable.
func peakRSS(riePID int) float64 {
	if runtime.GOOS != "linux" {
		return 0
	}
	// The bootstrap is started from one of the RIE's threads, so look at
	// the children of every task.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", riePID))
	var children []string
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		children = append(children, strings.Fields(string(b))...)
	}
	best := 0.0
	for _, c := range children {
		status, err := os.ReadFile("/proc/" + c + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				best = max(best, kb/1024)
			}
		}
	}
	return best
}

// Env is the environment a function needs to reach the EC2 endpoint as the
// given account and Region, through the SDK's standard variables only,
// plus the function's own environment (TemplateEnv).
func Env(endpoint, account, region string, fnEnv []string) []string {
	return append([]string{
		"AWS_ENDPOINT_URL_EC2=" + endpoint,
		// Step Functions (the backup's hand-off, the rollout's start
		// guard) on the same emulator (ec2sim/sfn.go).
		"AWS_ENDPOINT_URL_SFN=" + endpoint,
		"AWS_ACCESS_KEY_ID=" + account,
		"AWS_SECRET_ACCESS_KEY=local",
		"AWS_REGION=" + region,
		"AWS_EC2_METADATA_DISABLED=true",
	}, fnEnv...)
}

// EnvValue returns the value of key in env ("" when absent).
func EnvValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}
