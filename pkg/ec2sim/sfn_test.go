package ec2sim_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

const testSM = "arn:aws:states:" + ec2sim.DefaultRegion + ":" + ec2sim.DefaultAccount + ":stateMachine:amibackup-prod-waves"

// TestSFNStartExecutionSemantics: the documented name/input rules of
// StartExecution through the real SDK client, with the SDK's typed errors.
func TestSFNStartExecutionSemantics(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	c := env.SFN("", "")
	ctx := context.Background()
	start := func(name, input string) (*sfn.StartExecutionOutput, error) {
		return c.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(testSM), Name: aws.String(name), Input: aws.String(input)})
	}
	first, err := start("nightly-20261124T030000Z", `{"a":1}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(testSM, ":stateMachine:", ":execution:", 1) + ":nightly-20261124T030000Z"; aws.ToString(first.ExecutionArn) != want {
		t.Fatalf("arn %s, want %s", aws.ToString(first.ExecutionArn), want)
	}
	again, err := start("nightly-20261124T030000Z", `{"a":1}`)
	if err != nil || aws.ToString(again.ExecutionArn) != aws.ToString(first.ExecutionArn) || !again.StartDate.Equal(*first.StartDate) {
		t.Fatalf("same name and input while running: %v %v, want the same execution", again, err)
	}
	var exists *sfntypes.ExecutionAlreadyExists
	if _, err := start("nightly-20261124T030000Z", `{"a":2}`); !errors.As(err, &exists) {
		t.Fatalf("same name, other input: %v, want ExecutionAlreadyExists", err)
	}
	if !env.Sim.FinishExecution(aws.ToString(first.ExecutionArn), ec2sim.ExecutionSucceeded) {
		t.Fatal("FinishExecution")
	}
	if _, err := start("nightly-20261124T030000Z", `{"a":1}`); !errors.As(err, &exists) {
		t.Fatalf("name of a closed execution: %v, want ExecutionAlreadyExists", err)
	}
	var invalid *sfntypes.InvalidName
	for _, bad := range []string{"nightly-2026-11-24T03:00:00Z", "a b", "a/b", strings.Repeat("x", 81), "x{1}", "x\x01"} {
		if _, err := start(bad, `{}`); !errors.As(err, &invalid) {
			t.Errorf("name %q: %v, want InvalidName", bad, err)
		}
	}
	var badInput *sfntypes.InvalidExecutionInput
	if _, err := start("ok", `{"a":`); !errors.As(err, &badInput) {
		t.Errorf("input not JSON: %v", err)
	}
	if n := len(env.Sim.Executions()); n != 1 {
		t.Errorf("%d executions started, want 1", n)
	}
	if n := env.Sim.Calls().Count("states:StartExecution"); n != 11 {
		t.Errorf("call log: %d StartExecution, want 11", n)
	}
}

// TestSFNListAndDescribe: ListExecutions filters by state machine and
// status, most recent first, in pages; DescribeExecution returns the input.
func TestSFNListAndDescribe(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	c := env.SFN("", "")
	ctx := context.Background()
	other := strings.Replace(testSM, "amibackup-prod-waves", "other", 1)
	var arns []string
	for i := range 5 {
		out, err := c.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(testSM), Name: aws.String(fmt.Sprintf("e%d", i)), Input: aws.String(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		arns = append(arns, aws.ToString(out.ExecutionArn))
		env.Sim.Advance(1e9)
	}
	if _, err := c.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(other), Name: aws.String("e0")}); err != nil {
		t.Fatal(err)
	}
	env.Sim.FinishExecution(arns[1], ec2sim.ExecutionFailed)
	var names []string
	p := sfn.NewListExecutionsPaginator(c, &sfn.ListExecutionsInput{StateMachineArn: aws.String(testSM), StatusFilter: sfntypes.ExecutionStatusRunning, MaxResults: 2})
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range out.Executions {
			names = append(names, aws.ToString(e.Name))
			if e.Status != sfntypes.ExecutionStatusRunning || e.StartDate == nil {
				t.Errorf("%s: status %s start %v", aws.ToString(e.Name), e.Status, e.StartDate)
			}
		}
	}
	if got := strings.Join(names, ","); got != "e4,e3,e2,e0" || pages != 2 {
		t.Errorf("running executions %s in %d pages, want e4,e3,e2,e0 in 2", got, pages)
	}
	d, err := c.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arns[1])})
	if err != nil || aws.ToString(d.Input) != `{"i":1}` || d.Status != sfntypes.ExecutionStatusFailed || d.StopDate == nil {
		t.Errorf("describe: %+v %v", d, err)
	}
	var missing *sfntypes.ExecutionDoesNotExist
	if _, err := c.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arns[1] + "x")}); !errors.As(err, &missing) {
		t.Errorf("unknown execution: %v", err)
	}
}

// TestSFNLostAnswer: StartExecution done but its answer lost (a 500 after
// the work): the SDK retries with the same name and input and gets the
// same execution, not a second one.
func TestSFNLostAnswer(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Sim.Inject(ec2sim.Fault{Action: "states:StartExecution", Code: "InternalServerError", HTTPStatus: http.StatusInternalServerError, Message: "lost", After: true, Times: 1})
	out, err := env.SFN("", "").StartExecution(context.Background(), &sfn.StartExecutionInput{StateMachineArn: aws.String(testSM), Name: aws.String("n"), Input: aws.String(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if ex := env.Sim.Executions(); len(ex) != 1 || ex[0].ARN != aws.ToString(out.ExecutionArn) {
		t.Errorf("executions %+v", ex)
	}
	if n := env.Sim.Calls().Count("states:StartExecution"); n != 2 {
		t.Errorf("%d calls, want 2 (the lost one and the retry)", n)
	}
}
