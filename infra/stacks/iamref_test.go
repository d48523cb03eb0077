package stacks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
)

// synthCache holds one synth per configuration for tests that only read
// the template (a synth bundles the functions and takes seconds).
var (
	synthMu    sync.Mutex
	synthCache = map[string]*cachedSynth{}
)

// synthDirs are the cached synths' output directories, removed by TestMain.
var synthDirs []string

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range synthDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

type cachedSynth struct {
	once  sync.Once
	stack awscdk.Stack
	tmpl  map[string]any
	ok    bool
}

// synthCached is synth, shared between tests of the same configuration.
func synthCached(t *testing.T, cfgJSON string) (awscdk.Stack, map[string]any) {
	t.Helper()
	synthMu.Lock()
	c := synthCache[cfgJSON]
	if c == nil {
		c = &cachedSynth{}
		synthCache[cfgJSON] = c
	}
	synthMu.Unlock()
	c.once.Do(func() {
		// Not t.TempDir(): later tests read the stack's annotations.
		dir, err := os.MkdirTemp("", "amibackup-synth-")
		if err != nil {
			t.Fatal(err)
		}
		synthDirs = append(synthDirs, dir)
		c.stack, c.tmpl = synthIn(t, cfgJSON, dir)
		c.ok = true
	})
	if !c.ok {
		t.Fatal("synth of this configuration failed in an earlier test")
	}
	return c.stack, c.tmpl
}

// defaultConfig is cdk.json's configuration, what `cdk deploy` deploys
// without -c amibackup:config.
func defaultConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "cdk.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Context map[string]json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Context[ContextConfig] == nil {
		t.Fatalf("cdk.json has no %s: %v", ContextConfig, err)
	}
	return string(c.Context[ContextConfig])
}

// sameRegionRecoveryConfig: an existing copy key, sources in the stack's
// own Region.
const sameRegionRecoveryConfig = `{"deployment":"dr","recovery":{"sourceAccountIds":["111111111111","333333333333"],"sourceDeployment":"prod",
 "kmsKeyArn":"arn:aws:kms:eu-west-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab","retention":{"daily":14}}}`

// TestIAMReference: every action, resource ARN and condition key of the
// backup, sharing and recovery stacks is valid according to the Service
// Authorization Reference.
func TestIAMReference(t *testing.T) {
	for _, tc := range []struct{ name, cfg string }{
		{"backup default config", defaultConfig(t)},
		{"backup two policies", testConfig},
		{"backup with sharing", sharingConfig},
		{"backup with guardrails", guardConfig},
		{"backup with reboot waves", wavesConfig},
		{"recovery", recoveryConfig},
		{"recovery same Region, existing key", sameRegionRecoveryConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tmpl := synthCached(t, tc.cfg)
			findings, err := checkIAMReference(tmpl)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range findings {
				t.Error(f)
			}
			// The check read the documents it should have.
			sts, _ := policyStatements(tmpl)
			kinds := map[string]bool{}
			for _, s := range sts {
				kinds[strings.SplitN(strings.SplitN(s.where, "(", 2)[1], ")", 2)[0]] = true
			}
			for _, k := range []string{"AWS::IAM::Policy", "AWS::IAM::Role", "AWS::KMS::Key", "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy", "AWS::Lambda::Permission"} {
				if len(resources(tmpl, k)) > 0 && !kinds[k] {
					t.Errorf("no policy document of %s checked (checked %v)", k, kinds)
				}
			}
		})
	}
}

// TestIAMReferenceFlags proves the check can fail: each bad statement is
// reported with its reason, the good ones are not.
func TestIAMReferenceFlags(t *testing.T) {
	join := func(parts ...any) map[string]any { return map[string]any{"Fn::Join": []any{"", parts}} }
	partition, region := map[string]any{"Ref": "AWS::Partition"}, map[string]any{"Ref": "AWS::Region"}
	image := join("arn:", partition, ":ec2:", region, "::image/*")
	snapshot := join("arn:", partition, ":ec2:", region, "::snapshot/*")
	st := func(sid string, action, resource any, cond map[string]any) map[string]any {
		m := map[string]any{"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resource}
		if cond != nil {
			m["Condition"] = cond
		}
		return m
	}
	owner := map[string]any{"StringEquals": map[string]any{"ec2:Owner": "111111111111"}}
	tmpl := map[string]any{"Resources": map[string]any{
		"Key": map[string]any{"Type": "AWS::KMS::Key", "Properties": map[string]any{"KeyPolicy": map[string]any{"Statement": []any{
			map[string]any{"Sid": "Root", "Effect": "Allow", "Principal": map[string]any{"AWS": "*"}, "Action": "kms:*", "Resource": "*",
				"Condition": map[string]any{"StringEquals": map[string]any{"aws:PrincipalOrgID": "o-abcdefghij"}}},
		}}}},
		"Queue": map[string]any{"Type": "AWS::SQS::Queue", "Properties": map[string]any{}},
		"P": map[string]any{"Type": "AWS::IAM::Policy", "Properties": map[string]any{"PolicyDocument": map[string]any{"Statement": []any{
			st("Good", "ec2:CopyImage", image, owner),
			st("GoodTags", []any{"ec2:DeregisterImage", "ec2:EnableImageDeprecation"}, image,
				map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/amibackup:managed-by": "prod"}}),
			st("GoodQueue", "sqs:SendMessage", map[string]any{"Fn::GetAtt": []any{"Queue", "Arn"}}, nil),
			st("MadeUpAction", "ec2:CreateImageNow", image, nil),
			st("UnknownService", "notaservice:DoIt", "*", nil),
			st("WrongARN", "ec2:DeregisterImage", join("arn:", partition, ":ec2:", region, ":123456789012:image/*"), nil),
			st("WrongType", "ec2:DeleteSnapshot", image, nil),
			st("DescribeOnARN", "ec2:DescribeImages", image, nil),
			st("OwnerOnCopySnapshot", "ec2:CopyImage", []any{image, snapshot}, owner),
			st("ResourceTagOnCreate", "ec2:CreateImage", snapshot, map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/x": "y"}}),
			st("UnknownKey", "kms:Decrypt", join("arn:", partition, ":kms:", region, ":111111111111:key/*"), map[string]any{"StringEquals": map[string]any{"kms:ViaServices": "ec2"}}),
			st("Unresolvable", "sqs:SendMessage", map[string]any{"Fn::ImportValue": "x"}, nil),
		}}}},
	}}
	findings, err := checkIAMReference(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range findings {
		sid := f.Where[strings.LastIndex(f.Where, " ")+1:]
		got[sid] = append(got[sid], f.Problem)
	}
	for sid, want := range map[string]string{
		"MadeUpAction":        `unknown action "ec2:CreateImageNow"`,
		"UnknownService":      `service "notaservice" is not in the pinned reference data`,
		"WrongARN":            "resource arn:aws:ec2:us-east-1:123456789012:image/* matches none of its resource types",
		"WrongType":           "ec2:DeleteSnapshot: resource arn:aws:ec2:us-east-1::image/* matches none",
		"DescribeOnARN":       `ec2:DescribeImages has no resource types and needs Resource "*"`,
		"OwnerOnCopySnapshot": "condition key ec2:Owner is not valid for ec2:CopyImage on arn:aws:ec2:us-east-1::snapshot/*",
		"ResourceTagOnCreate": "condition key aws:ResourceTag/x is not valid for ec2:CreateImage on arn:aws:ec2:us-east-1::snapshot/*",
		"UnknownKey":          "condition key kms:ViaServices is not valid for kms:Decrypt",
		"Unresolvable":        "cannot resolve resource",
	} {
		if len(got[sid]) != 1 || !strings.Contains(got[sid][0], want) {
			t.Errorf("%s: got %q, want one finding containing %q", sid, got[sid], want)
		}
		delete(got, sid)
	}
	if len(got) != 0 {
		t.Errorf("findings on valid statements: %v", got)
	}
}

func TestGlobsIntersect(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"image/*", "image/*", true},
		{"image/*", "snapshot/*", false},
		{"*", "", true},
		{"log-group:*:log-stream:*", "log-group:x:*:*", true},
		{"log-group:*", "log-group:x:*", true},
		{"key/*", "alias/*", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*x", "*y", false},
		{"*x*", "*y*", true},
	} {
		if got := globsIntersect(tc.a, tc.b); got != tc.want {
			t.Errorf("globsIntersect(%q, %q) = %v", tc.a, tc.b, got)
		}
		if got := globsIntersect(tc.b, tc.a); got != tc.want {
			t.Errorf("globsIntersect(%q, %q) = %v", tc.b, tc.a, got)
		}
	}
}
