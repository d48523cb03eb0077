package ec2sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Step Functions on the emulator's endpoint (AWS JSON 1.0, X-Amz-Target
// AWSStepFunctions.<Action>; the SDK reaches it through
// AWS_ENDPOINT_URL_SFN): StartExecution, ListExecutions and
// DescribeExecution of Standard state machines, which is what amibackup
// calls. Nothing is executed: an execution stays RUNNING until a test
// closes it (FinishExecution); pkg/sfnlocal runs definitions. Any
// well-formed state machine ARN names a state machine. Calls are counted in
// the call log as "states:<Action>" and take the faults of that action.
//
// Semantics from the API reference:
//   - StartExecution
//     (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html):
//     a name is unique per state machine for 90 days; the same name and
//     input as an open execution answers that execution (idempotent), a
//     different input or a closed execution of that name answers
//     ExecutionAlreadyExists. Names: 1-80 characters, no white space,
//     brackets < > { } [ ], wildcards ? *, special characters
//     " # % \ ^ | ~ ` $ & , ; : / or control characters (InvalidName).
//     Input: JSON, at most 256 KiB (InvalidExecutionInput). Without a name,
//     a UUID.
//   - ListExecutions: most recent first, statusFilter, maxResults 0-1000
//     (0: the default, 100), nextToken. AWS's listing is eventually
//     consistent; the emulator's is not.
//   - DescribeExecution: ExecutionDoesNotExist for an unknown ARN.

// Execution is an execution as the emulator keeps it.
type Execution struct {
	ARN, StateMachineARN, Name, Input string
	// Status: RUNNING until FinishExecution, then SUCCEEDED, FAILED,
	// TIMED_OUT or ABORTED.
	Status      string
	Start, Stop time.Time
}

// Execution statuses.
const (
	ExecutionRunning   = "RUNNING"
	ExecutionSucceeded = "SUCCEEDED"
	ExecutionFailed    = "FAILED"
	ExecutionTimedOut  = "TIMED_OUT"
	ExecutionAborted   = "ABORTED"
)

var (
	stateMachineARNRE = regexp.MustCompile(`^arn:(aws[a-z-]*):states:([a-z0-9-]+):([0-9]{12}):stateMachine:([^:]{1,80})$`)
	executionARNRE    = regexp.MustCompile(`^arn:aws[a-z-]*:states:[a-z0-9-]+:[0-9]{12}:execution:[^:]{1,80}:[^:]{1,80}$`)
)

const maxExecutionInput = 256 * 1024

// ValidExecutionName reports why name is not a valid execution name ("" if
// it is), by the rules of StartExecution's name parameter.
func ValidExecutionName(name string) string {
	if n := utf8.RuneCountInString(name); n < 1 || n > 80 {
		return fmt.Sprintf("name must be 1-80 characters, got %d", n)
	}
	for _, r := range name {
		switch {
		case r <= 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0xfffe || r == 0xffff || (r >= 0xd800 && r <= 0xdfff):
			return fmt.Sprintf("name contains white space or the control character %U", r)
		case strings.ContainsRune("<>{}[]?*\"#%\\^|~`$&,;:/", r):
			return fmt.Sprintf("name contains the character %q", r)
		case r == utf8.RuneError:
			return "name is not valid UTF-8"
		}
	}
	return ""
}

func (s *Sim) serveSFN(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	account, region := identity(r)
	action := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AWSStepFunctions.")
	fail := func(e *apiError) {
		w.Header().Set("X-Amzn-ErrorType", e.code)
		w.WriteHeader(e.status)
		json.NewEncoder(w).Encode(map[string]string{"__type": e.code, "message": e.msg})
	}
	body, err := readAll(r)
	if err != nil {
		fail(&apiError{status: http.StatusBadRequest, code: "SerializationException", msg: err.Error()})
		return
	}
	s.mu.Lock()
	s.record(account, "states:"+action, false)
	delay, fault, after := s.matchFault("states:"+action, params{})
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if fault != nil && !after {
		s.mu.Lock()
		s.calls.Faults["states:"+action]++
		s.mu.Unlock()
		fail(fault)
		return
	}
	s.mu.Lock()
	out, e := s.sfnAction(account, region, action, body)
	if fault != nil {
		// The work is done, the answer is lost.
		s.calls.Faults["states:"+action]++
		out, e = nil, fault
	}
	s.mu.Unlock()
	if e != nil {
		fail(e)
		return
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func readAll(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

func sfnErr(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

// epoch is a timestamp as AWS JSON protocols send it: seconds since the
// epoch with a fraction.
func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

func (s *Sim) sfnAction(account, region, action string, body []byte) (any, *apiError) {
	switch action {
	case "StartExecution":
		var in struct {
			StateMachineArn, Name, TraceHeader string
			Input                              *string
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, sfnErr("SerializationException", "%v", err)
		}
		m := stateMachineARNRE.FindStringSubmatch(in.StateMachineArn)
		if m == nil {
			return nil, sfnErr("InvalidArn", "Invalid Arn: 'Resource type not valid in this context: %s'", in.StateMachineArn)
		}
		if m[3] != account || m[2] != region {
			return nil, sfnErr("StateMachineDoesNotExist", "State Machine Does Not Exist: '%s'", in.StateMachineArn)
		}
		name := in.Name
		if name == "" {
			s.nextID++
			name = fmt.Sprintf("%08x-0000-4000-8000-%012x", s.nextID, s.nextID)
		}
		if why := ValidExecutionName(name); why != "" {
			return nil, sfnErr("InvalidName", "Invalid Name: '%s' (%s)", name, why)
		}
		input := "{}"
		if in.Input != nil {
			input = *in.Input
		}
		if len(input) > maxExecutionInput {
			return nil, sfnErr("InvalidExecutionInput", "Invalid Execution Input: the input is %d bytes, at most %d", len(input), maxExecutionInput)
		}
		if !json.Valid([]byte(input)) {
			return nil, sfnErr("InvalidExecutionInput", "Invalid Execution Input: not JSON")
		}
		arn := fmt.Sprintf("arn:%s:states:%s:%s:execution:%s:%s", m[1], m[2], m[3], m[4], name)
		if old := s.executions[arn]; old != nil {
			if old.Status == ExecutionRunning && old.Input == input {
				return map[string]any{"executionArn": arn, "startDate": epoch(old.Start)}, nil
			}
			return nil, sfnErr("ExecutionAlreadyExists", "Execution Already Exists: '%s'", arn)
		}
		ex := &Execution{ARN: arn, StateMachineARN: in.StateMachineArn, Name: name, Input: input, Status: ExecutionRunning, Start: s.now()}
		s.addExecution(ex)
		return map[string]any{"executionArn": arn, "startDate": epoch(ex.Start)}, nil
	case "ListExecutions":
		var in struct {
			StateMachineArn, StatusFilter, NextToken, MapRunArn string
			MaxResults                                          int
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, sfnErr("SerializationException", "%v", err)
		}
		if in.MapRunArn != "" {
			return nil, sfnErr("ValidationException", "the emulator lists the executions of a state machine, not of a Map Run")
		}
		if !stateMachineARNRE.MatchString(in.StateMachineArn) {
			return nil, sfnErr("InvalidArn", "Invalid Arn: '%s'", in.StateMachineArn)
		}
		switch in.StatusFilter {
		case "", ExecutionRunning, ExecutionSucceeded, ExecutionFailed, ExecutionTimedOut, ExecutionAborted, "PENDING_REDRIVE":
		default:
			return nil, sfnErr("ValidationException", "1 validation error detected: Value '%s' at 'statusFilter' failed to satisfy constraint: Member must satisfy enum value set", in.StatusFilter)
		}
		if in.MaxResults < 0 || in.MaxResults > 1000 {
			return nil, sfnErr("ValidationException", "maxResults must be 0-1000, got %d", in.MaxResults)
		}
		limit := in.MaxResults
		if limit == 0 {
			limit = 100
		}
		var list []*Execution
		for _, arn := range slices.Backward(s.executionOrder) {
			ex := s.executions[arn]
			if ex.StateMachineARN == in.StateMachineArn && (in.StatusFilter == "" || ex.Status == in.StatusFilter) {
				list = append(list, ex)
			}
		}
		from := 0
		if in.NextToken != "" {
			// The token is the ARN of the first execution of the next page.
			from = slices.IndexFunc(list, func(ex *Execution) bool { return ex.ARN == in.NextToken })
			if from < 0 {
				return nil, sfnErr("InvalidToken", "Invalid Token: '%s'", in.NextToken)
			}
		}
		out := map[string]any{}
		items := []map[string]any{}
		for i := from; i < len(list); i++ {
			if len(items) == limit {
				out["nextToken"] = list[i].ARN
				break
			}
			items = append(items, list[i].item(false))
		}
		out["executions"] = items
		return out, nil
	case "DescribeExecution":
		var in struct{ ExecutionArn string }
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, sfnErr("SerializationException", "%v", err)
		}
		if !executionARNRE.MatchString(in.ExecutionArn) {
			return nil, sfnErr("InvalidArn", "Invalid Arn: '%s'", in.ExecutionArn)
		}
		ex := s.executions[in.ExecutionArn]
		if ex == nil {
			return nil, sfnErr("ExecutionDoesNotExist", "Execution Does Not Exist: '%s'", in.ExecutionArn)
		}
		return ex.item(true), nil
	}
	return nil, sfnErr("UnknownOperationException", "the emulator implements StartExecution, ListExecutions and DescribeExecution, not %s", action)
}

func (ex *Execution) item(withInput bool) map[string]any {
	m := map[string]any{"executionArn": ex.ARN, "stateMachineArn": ex.StateMachineARN, "name": ex.Name,
		"status": ex.Status, "startDate": epoch(ex.Start)}
	if !ex.Stop.IsZero() {
		m["stopDate"] = epoch(ex.Stop)
	}
	if withInput {
		m["input"] = ex.Input
	}
	return m
}

func (s *Sim) addExecution(ex *Execution) {
	if s.executions == nil {
		s.executions = map[string]*Execution{}
	}
	s.executions[ex.ARN] = ex
	s.executionOrder = append(s.executionOrder, ex.ARN)
}

// Executions returns the executions started so far, in start order.
func (s *Sim) Executions() []Execution {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Execution, 0, len(s.executionOrder))
	for _, arn := range s.executionOrder {
		out = append(out, *s.executions[arn])
	}
	return out
}

// SeedExecution adds an execution as if started at ex.Start (the current
// simulated time if zero) with status ex.Status (RUNNING if empty); ARN
// and StateMachineARN must be consistent with Name.
func (s *Sim) SeedExecution(ex Execution) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ex.Start.IsZero() {
		ex.Start = s.now()
	}
	if ex.Status == "" {
		ex.Status = ExecutionRunning
	}
	if ex.Input == "" {
		ex.Input = "{}"
	}
	s.addExecution(&ex)
}

// FinishExecution closes a running execution with status (SUCCEEDED,
// FAILED, TIMED_OUT or ABORTED); false if there is no running execution
// of that ARN.
func (s *Sim) FinishExecution(arn, status string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ex := s.executions[arn]
	if ex == nil || ex.Status != ExecutionRunning || status == ExecutionRunning {
		return false
	}
	ex.Status, ex.Stop = status, s.now()
	return true
}
