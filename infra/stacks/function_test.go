package stacks

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/config"
)

func TestConfigSizeLimit(t *testing.T) {
	var ids []string
	for i := range 300 {
		ids = append(ids, fmt.Sprintf("%012d", 200000000000+i))
	}
	idsJSON, _ := json.Marshal(ids)
	big := `{"deployment":"huge","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},
	  "retention":{"daily":7}}],"sharing":{"accountIds":` + string(idsJSON) + `}}`
	cfg, err := config.Parse([]byte(big), "")
	if err != nil {
		t.Fatal(err)
	}
	err = checkConfigSize(cfg, "share")
	if err == nil || !strings.Contains(err.Error(), `deployment "huge"`) || !strings.Contains(err.Error(), config.EnvVar) || !strings.Contains(err.Error(), "4 KB") {
		t.Fatalf("too large configuration: %v", err)
	}
	small, _ := config.Parse([]byte(testConfig), "")
	if err := checkConfigSize(small, "backup"); err != nil {
		t.Fatalf("test configuration rejected: %v", err)
	}
	// Synth fails with that error, before bundling anything.
	wantMentions(t, buildError(t, big), "too large")
}

// TestNagFlagsNewWildcard: the IAM5 suppressions name their findings, so a
// wildcard nobody accepted still fails cdk-nag.
func TestNagFlagsNewWildcard(t *testing.T) {
	requireNode(t)
	cfg := mustParse(t, recoveryConfig)
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(t.TempDir())})
	stack := awscdk.NewStack(app, jsii.String("NagProbe"), nil)
	extra := statement("NewWildcard", []string{"ec2:DeleteVolume"}, []string{arn(stack, "volume/*")}, managedBy(cfg))
	if _, err := NewAmiFunction(stack, &AmiFunctionProps{Name: "prune", Config: cfg, Root: repoRoot(t),
		Statements: append(pruneStatements(stack, cfg), extra), Wildcards: pruneWildcards(stack), Notifications: NewNotifications(stack, cfg)}); err != nil {
		t.Fatal(err)
	}
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	errs := assertions.Annotations_FromStack(stack).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-IAM5")))
	var flagged []string
	for _, e := range *errs {
		flagged = append(flagged, fmt.Sprint(e.Entry.Data))
	}
	if len(flagged) != 1 || !strings.Contains(flagged[0], "volume/*") {
		t.Fatalf("want exactly the new volume wildcard flagged, got %v", flagged)
	}
}

// TestConfigSizeCountsResolvedKeyARN: a key the stack creates is a short
// token at synth and a full ARN at deploy; the budget counts the ARN.
func TestConfigSizeCountsResolvedKeyARN(t *testing.T) {
	requireNode(t)
	token := *awscdk.Fn_Ref(jsii.String("CopyKey"))
	for n := 1; n < 400; n++ {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("%012d", 300000000000+i)
		}
		idsJSON, _ := json.Marshal(ids)
		cfg, err := config.Parse([]byte(`{"deployment":"dr","recovery":{"sourceAccountIds":`+string(idsJSON)+`,"sourceDeployment":"prod","retention":{"last":3}}}`), "")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Recovery.KMSKeyARN = token
		raw := len(config.EnvVar) + len(cfg.JSON())
		if raw <= maxConfigEnvBytes-60 {
			continue
		}
		if raw > maxConfigEnvBytes {
			t.Fatalf("no account count puts the document just under the budget (raw %d)", raw)
		}
		if err := checkConfigSize(cfg, "copy"); err == nil {
			t.Fatalf("%d bytes with a %d-byte token accepted; the resolved ARN would exceed the budget", raw, len(token))
		}
		return
	}
	t.Fatal("budget never reached")
}

// mustParse is the validated configuration of a test's JSON.
func mustParse(t *testing.T, cfgJSON string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgJSON), "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestAmiFunctionRejectsUnknownName: a name that is none of the functions
// is an error naming it and the known ones, before anything is bundled or
// added to the stack. The old lookup map answered "" for it, which became
// a construct ID.
func TestAmiFunctionRejectsUnknownName(t *testing.T) {
	requireNode(t)
	cfg := mustParse(t, testConfig)
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(t.TempDir())})
	stack := awscdk.NewStack(app, jsii.String("Probe"), nil)
	n := NewNotifications(stack, cfg)
	before := len(*stack.Node().Children())
	for _, name := range []string{"", "Backup", "bakup", "../functions/backup"} {
		_, err := NewAmiFunction(stack, &AmiFunctionProps{Name: name, Config: cfg, Root: repoRoot(t), Notifications: n})
		if err == nil {
			t.Errorf("%q: accepted", name)
			continue
		}
		wantMentions(t, err, fmt.Sprintf("function %q: unknown", name), "backup, copy, prune, rollout, share")
	}
	if after := len(*stack.Node().Children()); after != before {
		t.Errorf("rejected functions added %d constructs", after-before)
	}
}

// TestStacksNeedTheirConfiguration: each stack type rejects the other's
// configuration with an error saying which stack it is for, before
// creating anything (a recovery stack used to dereference the missing
// recovery section).
func TestStacksNeedTheirConfiguration(t *testing.T) {
	requireNode(t)
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(t.TempDir())})
	if _, err := NewBackupStack(app, "B", &BackupStackProps{Config: mustParse(t, recoveryConfig), Root: repoRoot(t)}); err == nil {
		t.Error("backup stack from a recovery configuration")
	} else {
		wantMentions(t, err, "no policies", "RecoveryStack")
	}
	if _, err := NewRecoveryStack(app, "R", &RecoveryStackProps{Config: mustParse(t, testConfig), Root: repoRoot(t)}); err == nil {
		t.Error("recovery stack from a backup configuration")
	} else {
		wantMentions(t, err, "no recovery section", "BackupStack")
	}
	if n := len(*app.Node().Children()); n != 0 {
		t.Errorf("rejected stacks added %d constructs", n)
	}
}

// TestWavesGetWorkflow: every policy that reboots goes to the workflow
// unless it says "all-at-once" (a policy without an availability section
// too: pkg/config's safe default), through the backup function: every
// schedule and the manual rule invoke the backup function, which starts
// the execution named for the slot (states:StartExecution on this state
// machine only, its ARN in the function's environment). The state
// machine's role only invokes the rollout function; the rollout role may
// list and describe this state machine's executions (start guard), which
// Start gets from the context object.
func TestWavesGetWorkflow(t *testing.T) {
	requireNode(t)
	stack, tmpl := synthCached(t, wavesConfig)
	// cdk-nag clean: the state machine (SF1/SF2 suppressed with reasons),
	// its role and the rollout function's wildcards (each accepted by name).
	nagErrors(t, stack)
	if warns := assertions.Annotations_FromStack(stack).FindWarning(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*"))); len(*warns) > 0 {
		t.Errorf("%d cdk-nag warnings", len(*warns))
	}
	sms := resources(tmpl, "AWS::StepFunctions::StateMachine")
	if len(sms) != 1 {
		t.Fatalf("%d state machines", len(sms))
	}
	var smID string
	for id, props := range sms {
		smID = id
		if props["StateMachineName"] != StateMachineName("prod") {
			t.Errorf("state machine name %v, want %s", props["StateMachineName"], StateMachineName("prod"))
		}
		raw, _ := json.Marshal(props["DefinitionString"])
		for _, want := range []string{`$$.Execution.Id`, `$$.StateMachine.Id`} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("the definition does not pass %s to Start", want)
			}
		}
	}
	// Both policies (the one without a section by default) reboot in waves.
	for _, id := range []string{"GroupsHaltedAlarm0", "GroupsHaltedAlarm1"} {
		if len(resourcesWithPrefix(tmpl, "AWS::CloudWatch::Alarm", id)) != 1 {
			t.Errorf("no %s: both policies should reboot in waves", id)
		}
	}
	for _, props := range resources(tmpl, "AWS::Scheduler::Schedule") {
		if !strings.HasPrefix(props["Name"].(string), "backup-") {
			continue
		}
		target := props["Target"].(map[string]any)
		raw, _ := json.Marshal(target["Arn"])
		if strings.Contains(string(raw), smID) || !strings.Contains(string(raw), "Backup") ||
			target["RetryPolicy"] == nil || target["DeadLetterConfig"] == nil {
			t.Errorf("schedule: %v, want the backup function with retry policy and dead-letter queue", props)
		}
	}
	manual := 0
	for _, r := range resources(tmpl, "AWS::Events::Rule") {
		raw, _ := json.Marshal(r)
		s := string(raw)
		if strings.Contains(s, smID) {
			t.Errorf("a rule starts the state machine directly: %s", s)
		}
		if strings.Contains(s, `"Backup Requested"`) {
			manual++
			if strings.Contains(s, "anything-but") || !strings.Contains(s, "Backup") {
				t.Errorf("manual rule: %s", s)
			}
		}
	}
	if manual != 1 {
		t.Errorf("%d Backup Requested rules, want 1 (the backup function)", manual)
	}
	fns := resourcesWithPrefix(tmpl, "AWS::Lambda::Function", "Backup")
	for _, f := range fns {
		env, _ := json.Marshal(f["Environment"])
		if !strings.Contains(string(env), `"`+backup.WorkflowEnvVar+`":{"Ref":"`+smID+`"}`) {
			t.Errorf("backup function environment %s lacks %s = the state machine's ARN", env, backup.WorkflowEnvVar)
		}
	}
	policies := map[string]string{}
	for id, p := range resources(tmpl, "AWS::IAM::Policy") {
		raw, _ := json.Marshal(p["PolicyDocument"])
		policies[id] = string(raw)
	}
	for id, s := range policies {
		switch {
		case strings.HasPrefix(id, "WorkflowPolicy"):
			// The state machine's role: lambda:InvokeFunction on the rollout function only.
			if strings.Count(s, `"Action"`) != 1 || !strings.Contains(s, `"lambda:InvokeFunction"`) || !strings.Contains(s, "Rollout") || strings.Contains(s, ":*") {
				t.Errorf("workflow role policy: %s", s)
			}
		case strings.HasPrefix(id, "BackupPolicy"):
			want := `{"Action":"states:StartExecution","Effect":"Allow","Resource":{"Ref":"` + smID + `"},"Sid":"StartWorkflow"}`
			if !strings.Contains(s, want) || strings.Count(s, "states:") != 1 {
				t.Errorf("backup policy: want only %s for states, got %s", want, s)
			}
		case strings.HasPrefix(id, "RolloutPolicy"):
			for _, want := range []string{`"states:ListExecutions"`, `:stateMachine:` + StateMachineName("prod") + `"`, `"states:DescribeExecution"`, `:execution:` + StateMachineName("prod") + `:*"`} {
				if !strings.Contains(s, want) {
					t.Errorf("rollout policy lacks %s: %s", want, s)
				}
			}
		}
	}
	// all-at-once and reboot:false keep the backup function and add no
	// workflow; a policy without a section next to them gets one.
	for _, c := range []struct {
		name, cfg string
		workflow  bool
	}{
		{"all-at-once", strings.ReplaceAll(testConfig, `"retention"`, `"availability":{"mode":"all-at-once"},"retention"`), false},
		{"reboot false", strings.ReplaceAll(testConfig, `"retention"`, `"reboot":false,"retention"`), false},
		{"one without a section", strings.Replace(testConfig, `"retention"`, `"reboot":false,"retention"`, 1), true},
	} {
		app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(t.TempDir())})
		s, err := NewBackupStack(app, "A", &BackupStackProps{Config: mustParse(t, c.cfg), Root: repoRoot(t)})
		if err != nil || (s.Workflow != nil) != c.workflow {
			t.Errorf("%s: %v, workflow %v, want %v", c.name, err, s != nil && s.Workflow != nil, c.workflow)
		}
	}
}

// resourcesWithPrefix: the resources of a type whose logical ID starts with prefix.
func resourcesWithPrefix(tmpl map[string]any, typ, prefix string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, r := range resources(tmpl, typ) {
		if strings.HasPrefix(id, prefix) {
			out[id] = r
		}
	}
	return out
}
