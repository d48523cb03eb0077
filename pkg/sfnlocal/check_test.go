package sfnlocal

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

const fnARN = "arn:aws:lambda:us-east-1:123456789012:function:Work"

// base is a clean definition: a lambda:invoke task, an INLINE Map over a
// plain-ARN task, a Parallel and a Choice with a Catch.
const base = `{"StartAt":"Invoke","States":{
 "Invoke":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke","Parameters":{"FunctionName":"` + fnARN + `","Payload.$":"$"},
   "Catch":[{"ErrorEquals":["States.ALL"],"Next":"Done"}],"Next":"Each"},
 "Each":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":2,
   "ItemProcessor":{"ProcessorConfig":{"Mode":"INLINE"},"StartAt":"Item","States":{"Item":{"Type":"Task","Resource":"` + fnARN + `","End":true}}},
   "Next":"Both"},
 "Both":{"Type":"Parallel","Branches":[{"StartAt":"B1","States":{"B1":{"Type":"Pass","End":true}}}],"Next":"Which"},
 "Which":{"Type":"Choice","Choices":[{"Variable":"$.x","IsPresent":true,"Next":"Done"}],"Default":"Done"},
 "Done":{"Type":"Succeed"}}}`

// mutate applies f to the parsed base definition.
func mutate(t *testing.T, f func(d map[string]any)) []byte {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal([]byte(base), &d); err != nil {
		t.Fatal(err)
	}
	f(d)
	b, _ := json.Marshal(d)
	return b
}

func state(d map[string]any, path ...string) map[string]any {
	m := d
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

func TestUnsupported(t *testing.T) {
	if err := Unsupported([]byte(base)); err != nil {
		t.Fatalf("clean definition: %v", err)
	}
	invoke := func(d map[string]any) map[string]any { return state(d, "States", "Invoke") }
	each := func(d map[string]any) map[string]any { return state(d, "States", "Each") }
	item := func(d map[string]any) map[string]any {
		return state(d, "States", "Each", "ItemProcessor", "States", "Item")
	}
	for _, tc := range []struct {
		name string
		f    func(d map[string]any)
		want string
	}{
		{"JSONata machine", func(d map[string]any) { d["QueryLanguage"] = "JSONata" }, "QueryLanguage: JSONata"},
		{"JSONata state", func(d map[string]any) { invoke(d)["QueryLanguage"] = "JSONata" }, "States.Invoke.QueryLanguage"},
		{"Assign", func(d map[string]any) { invoke(d)["Assign"] = map[string]any{"x": 1} }, "States.Invoke.Assign"},
		{"Assign in a Catch", func(d map[string]any) { invoke(d)["Catch"].([]any)[0].(map[string]any)["Assign"] = map[string]any{} }, "States.Invoke.Catch[0].Assign"},
		{"Assign in a Choice rule", func(d map[string]any) {
			state(d, "States", "Which")["Choices"].([]any)[0].(map[string]any)["Assign"] = map[string]any{}
		}, "States.Which.Choices[0].Assign"},
		{"JSONata Condition", func(d map[string]any) {
			state(d, "States", "Which")["Choices"].([]any)[0].(map[string]any)["Condition"] = "{% true %}"
		}, "States.Which.Choices[0].Condition"},
		{"Arguments", func(d map[string]any) { invoke(d)["Arguments"] = map[string]any{} }, "States.Invoke.Arguments"},
		{"Output", func(d map[string]any) { invoke(d)["Output"] = "{% $states.result %}" }, "States.Invoke.Output"},
		{"nested Assign", func(d map[string]any) { item(d)["Assign"] = map[string]any{} }, "States.Each.ItemProcessor.States.Item.Assign"},
		{"Parallel branch", func(d map[string]any) {
			state(d, "States", "Both")["Branches"].([]any)[0].(map[string]any)["States"].(map[string]any)["B1"].(map[string]any)["Output"] = 1
		}, "States.Both.Branches[0].States.B1.Output"},
		{"ItemReader", func(d map[string]any) { each(d)["ItemReader"] = map[string]any{} }, "States.Each.ItemReader"},
		{"ItemBatcher", func(d map[string]any) { each(d)["ItemBatcher"] = map[string]any{} }, "States.Each.ItemBatcher"},
		{"ResultWriter", func(d map[string]any) { each(d)["ResultWriter"] = map[string]any{} }, "States.Each.ResultWriter"},
		{"DISTRIBUTED", func(d map[string]any) {
			state(d, "States", "Each", "ItemProcessor", "ProcessorConfig")["Mode"] = "DISTRIBUTED"
		}, "ProcessorConfig.Mode: Distributed Map"},
		{"ToleratedFailurePercentage", func(d map[string]any) { each(d)["ToleratedFailurePercentage"] = 10 }, "States.Each.ToleratedFailurePercentage"},
		{"ToleratedFailureCount", func(d map[string]any) { each(d)["ToleratedFailureCount"] = 1 }, "States.Each.ToleratedFailureCount"},
		{"HeartbeatSeconds", func(d map[string]any) { invoke(d)["HeartbeatSeconds"] = 60 }, "States.Invoke.HeartbeatSeconds"},
		{"HeartbeatSecondsPath", func(d map[string]any) { item(d)["HeartbeatSecondsPath"] = "$.h" }, "States.Each.ItemProcessor.States.Item.HeartbeatSecondsPath"},
		{"Credentials", func(d map[string]any) { invoke(d)["Credentials"] = map[string]any{"RoleArn": "x"} }, "States.Invoke.Credentials"},
		{".waitForTaskToken", func(d map[string]any) { invoke(d)["Resource"] = "arn:aws:states:::lambda:invoke.waitForTaskToken" }, ".waitForTaskToken is not supported"},
		{".sync", func(d map[string]any) { invoke(d)["Resource"] = "arn:aws:states:::states:startExecution.sync:2" }, ".sync integrations"},
		{"SDK integration", func(d map[string]any) { invoke(d)["Resource"] = "arn:aws:states:::aws-sdk:ec2:describeInstances" }, "only Lambda tasks"},
		{"activity", func(d map[string]any) { item(d)["Resource"] = "arn:aws:states:us-east-1:123456789012:activity:x" }, "States.Each.ItemProcessor.States.Item.Resource"},
		{"$$.State", func(d map[string]any) {
			state(d, "States", "Invoke", "Parameters")["Entered.$"] = "$$.State.EnteredTime"
		}, "States.Invoke.Parameters.Entered.$: $$.State is not in the local context"},
		{"$$.Task", func(d map[string]any) { item(d)["Parameters"] = map[string]any{"token.$": "$$.Task.Token"} }, "States.Each.ItemProcessor.States.Item.Parameters.token.$: $$.Task"},
		{"async invoke", func(d map[string]any) { state(d, "States", "Invoke", "Parameters")["InvocationType"] = "Event" }, "InvocationType: Event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Unsupported(mutate(t, tc.f))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// All findings at once.
	err := Unsupported(mutate(t, func(d map[string]any) { d["QueryLanguage"] = "JSONata"; each(d)["ItemReader"] = map[string]any{} }))
	if err == nil || !strings.Contains(err.Error(), "QueryLanguage") || !strings.Contains(err.Error(), "ItemReader") {
		t.Errorf("not all findings: %v", err)
	}
}

func TestCheck(t *testing.T) {
	eng := engine(t)
	ctx := context.Background()
	if err := eng.Check(ctx, []byte(base)); err != nil {
		t.Fatalf("clean definition: %v", err)
	}
	for _, tc := range []struct {
		name string
		def  []byte
		want []string
	}{
		{"unreachable and missing target", []byte(`{"StartAt":"A","States":{"A":{"Type":"Pass","Next":"B"},"C":{"Type":"Pass","End":true}}}`),
			[]string{"asl-validator", "State C is not reachable", "target: B"}},
		{"bad resource and ignored construct together", mutate(t, func(d map[string]any) {
			state(d, "States", "Invoke")["Resource"] = "not-an-arn"
			state(d, "States", "Invoke")["Assign"] = map[string]any{}
		}), []string{"States.Invoke.Assign", "asl-validator", "/States/Invoke/Resource"}},
		{"bad JSONPath", mutate(t, func(d map[string]any) { state(d, "States", "Each")["ItemsPath"] = "items[" }),
			[]string{"asl-validator", "ItemsPath"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := eng.Check(ctx, tc.def)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want %q", err, w)
				}
			}
		})
	}
}

func TestRunRefusesAndReportsHarnessErrors(t *testing.T) {
	eng := engine(t)
	ctx := context.Background()
	// An unsupported construct is refused before the engine starts.
	def := mutate(t, func(d map[string]any) { state(d, "States", "Invoke")["HeartbeatSeconds"] = 5 })
	if _, err := eng.Run(ctx, def, nil, Options{}); err == nil || !strings.Contains(err.Error(), "HeartbeatSeconds") {
		t.Errorf("Run of an unsupported definition: %v", err)
	}
	// A function without an endpoint is the harness's fault, not an
	// execution failure Retry or Catch could see.
	_, err := eng.Run(ctx, []byte(base), []byte(`{"items":[]}`), Options{})
	var he *HarnessError
	if !errors.As(err, &he) || !strings.Contains(he.Message, "no endpoint for function "+fnARN) {
		t.Errorf("Run without endpoints: %v", err)
	}
	// So is an endpoint that does not answer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/2015-03-31/functions/function/invocations"
	l.Close()
	_, err = eng.Run(ctx, []byte(base), []byte(`{"items":[]}`), Options{Functions: map[string][]string{fnARN: {closed}}})
	if !errors.As(err, &he) || !strings.Contains(he.Message, "invoke "+fnARN) || !strings.Contains(he.Message, "ECONNREFUSED") {
		t.Errorf("Run against a closed port: %v", err)
	}
	// A Wait longer than Node's timers would end at once unless overridden.
	long := []byte(`{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":3000000,"End":true}}}`)
	if _, err := eng.Run(ctx, long, nil, Options{}); !errors.As(err, &he) || !strings.Contains(he.Message, "WaitOverrides") {
		t.Errorf("Run of a long Wait: %v", err)
	}
	res, err := eng.Run(ctx, long, []byte(`{"a":1}`), Options{WaitOverrides: map[string]time.Duration{"W": 0}})
	if err != nil || res.Status != Succeeded || string(res.Output) != `{"a":1}` {
		t.Errorf("overridden long Wait: %v %+v", err, res)
	}
}

func TestContextObjectAndLimits(t *testing.T) {
	eng := engine(t)
	ctx := context.Background()
	def := []byte(`{"StartAt":"P","States":{"P":{"Type":"Pass","Parameters":{"name.$":"$$.Execution.Name","id.$":"$$.Execution.Id",
	  "machine.$":"$$.StateMachine.Name","input.$":"$$.Execution.Input","start.$":"$$.Execution.StartTime"},"End":true}}}`)
	res, err := eng.Run(ctx, def, []byte(`{"a":1}`), Options{Name: "backup-20261129", StateMachineName: "Waves"})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Name, ID, Machine, Start string
		Input                    struct{ A int }
	}
	json.Unmarshal(res.Output, &out)
	if out.Name != "backup-20261129" || out.ID != "arn:aws:states:us-east-1:123456789012:execution:Waves:backup-20261129" ||
		out.Machine != "Waves" || out.Input.A != 1 || out.Start == "" {
		t.Errorf("context object: %s", res.Output)
	}
	// Step Functions' 256 KiB payload limit is enforced, not ignored.
	big := []byte(`{"pad":"` + strings.Repeat("x", 262144) + `"}`)
	var he *HarnessError
	if _, err := eng.Run(ctx, def, big, Options{}); !errors.As(err, &he) || !strings.Contains(he.Message, "States.DataLimitExceeded") {
		t.Errorf("oversized input: %v", err)
	}
}

func TestFindEngineNamesTheFix(t *testing.T) {
	_, err := FindEngine(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "make node") {
		t.Fatalf("FindEngine without .tools: %v", err)
	}
}
