package stacks

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
)

// guardConfig is testConfig with every guardrail switched on.
var guardConfig = strings.TrimSuffix(testConfig, "}") + `,
 "guardrails":{"allowedOwners":["amazon","222222222222"],
  "attachTo":{"roles":["developers"],"users":["ci-bot"],"groups":["Operators"]},
  "configRule":{"tagKey":"AmibackupVerified","approvedAmiIds":["ami-0abc1234def567890","ami-12345678"]},
  "allowedImages":{}}}`

const account = "111111111111"

func TestGuardrailsTemplate(t *testing.T) {
	_, tmpl := synth(t, guardConfig)
	template := assertions.Template_FromJSON(&tmpl, nil)

	t.Run("deny statements: action, image resource only, condition keys", func(t *testing.T) {
		policies := resources(tmpl, "AWS::IAM::ManagedPolicy")
		if len(policies) != 1 {
			t.Fatalf("%d managed policies, want 1", len(policies))
		}
		sts := managedPolicyStatements(tmpl)
		if len(sts) != 3 {
			t.Fatalf("%d statements, want 3: %+v", len(sts), sts)
		}
		for _, s := range sts {
			action := "ec2:RunInstances"
			if s.Sid == "DenySelfApproval" {
				action = "ec2:CreateTags"
			}
			if s.Effect != "Deny" || !slices.Equal(s.Actions, []string{action}) ||
				!slices.Equal(s.Resources, []string{"arn:<AWS::Partition>:ec2:*::image/*"}) {
				t.Errorf("%s: %+v, want Deny %s on arn:<AWS::Partition>:ec2:*::image/* only", s.Sid, s, action)
			}
		}
		un := bySid(t, sts, "DenyUnapprovedImages")[0]
		if !slices.Equal(cond(un, "Null", "aws:ResourceTag/"+config.VerifiedTag), []string{"true"}) ||
			!slices.Equal(cond(un, "StringNotEquals", "ec2:Owner"), []string{"amazon", "222222222222"}) || len(un.Condition) != 2 {
			t.Errorf("DenyUnapprovedImages condition %v", un.Condition)
		}
		other := bySid(t, sts, "DenyImagesOfOtherOwners")[0]
		if !slices.Equal(cond(other, "StringNotEquals", "ec2:Owner"), []string{"<AWS::AccountId>", "amazon", "222222222222"}) || len(other.Condition) != 1 {
			t.Errorf("DenyImagesOfOtherOwners condition %v", other.Condition)
		}
		self := bySid(t, sts, "DenySelfApproval")[0]
		if !slices.Equal(cond(self, "ForAnyValue:StringEqualsIgnoreCase", "aws:TagKeys"), []string{config.VerifiedTag, "AmibackupVerified"}) || len(self.Condition) != 1 {
			t.Errorf("DenySelfApproval condition %v", self.Condition)
		}
	})

	t.Run("name, attachments and export", func(t *testing.T) {
		template.HasResourceProperties(jsii.String("AWS::IAM::ManagedPolicy"), map[string]any{
			"ManagedPolicyName": "amibackup-prod-approved-amis",
			"Roles":             []any{"developers"},
			"Users":             []any{"ci-bot"},
			"Groups":            []any{"Operators"},
		})
		out, _ := tmpl["Outputs"].(map[string]any)["ApprovedAmisPolicyArn"].(map[string]any)
		if out == nil || flatten(out["Value"]) == "" || !strings.HasPrefix(flatten(out["Value"]), "<Guardrails") ||
			out["Export"].(map[string]any)["Name"] != "amibackup-prod-approved-amis-arn" {
			t.Errorf("policy ARN output %v", out)
		}
	})

	t.Run("config rules: identifier, scope, parameters", func(t *testing.T) {
		for id, params := range map[string]map[string]any{
			"APPROVED_AMIS_BY_TAG": {"amisByTagKeyAndValue": "AmibackupVerified"},
			"APPROVED_AMIS_BY_ID":  {"amiIds": "ami-0abc1234def567890,ami-12345678"},
		} {
			template.HasResourceProperties(jsii.String("AWS::Config::ConfigRule"), map[string]any{
				"Source":          map[string]any{"Owner": "AWS", "SourceIdentifier": id},
				"Scope":           map[string]any{"ComplianceResourceTypes": []any{"AWS::EC2::Instance"}},
				"InputParameters": params,
			})
		}
		template.ResourceCountIs(jsii.String("AWS::Config::ConfigRule"), jsii.Number(2))
		// Reported, not remediated: no remediation configuration.
		template.ResourceCountIs(jsii.String("AWS::Config::RemediationConfiguration"), jsii.Number(0))
	})

	t.Run("allowed AMIs: criteria then audit mode, disabled on delete", func(t *testing.T) {
		crs := resources(tmpl, "Custom::AmibackupAllowedAmis")
		if len(crs) != 2 {
			t.Fatalf("%d Allowed AMIs custom resources, want 2", len(crs))
		}
		calls := map[string]map[string]any{}
		for id, cr := range crs {
			for _, phase := range []string{"Create", "Update", "Delete"} {
				if v, ok := cr[phase]; ok {
					var call map[string]any
					if err := json.Unmarshal([]byte(flatten(v)), &call); err != nil {
						t.Fatalf("%s %s: %v", id, phase, err)
					}
					calls[phase+" "+fmt.Sprint(call["action"])] = call
				}
			}
		}
		want := map[string]string{
			"Create ReplaceImageCriteriaInAllowedImagesSettings": `{"ImageCriteria":[{"ImageProviders":["amazon"]}]}`,
			"Update ReplaceImageCriteriaInAllowedImagesSettings": `{"ImageCriteria":[{"ImageProviders":["amazon"]}]}`,
			"Create EnableAllowedImagesSettings":                 `{"AllowedImagesSettingsState":"audit-mode"}`,
			"Update EnableAllowedImagesSettings":                 `{"AllowedImagesSettingsState":"audit-mode"}`,
			"Delete DisableAllowedImagesSettings":                `null`,
		}
		if len(calls) != len(want) {
			t.Errorf("calls %v, want %v", slices.Sorted(mapKeys(calls)), slices.Sorted(mapKeys(want)))
		}
		for k, params := range want {
			call, ok := calls[k]
			if !ok {
				t.Errorf("no %s call", k)
				continue
			}
			got, _ := json.Marshal(call["parameters"])
			if string(got) != params || call["service"] != "EC2" {
				t.Errorf("%s: service %v parameters %s, want EC2 %s", k, call["service"], got, params)
			}
		}
		// The state waits for the criteria.
		for id, r := range tmpl["Resources"].(map[string]any) {
			r := r.(map[string]any)
			if r["Type"] == "Custom::AmibackupAllowedAmis" && strings.Contains(id, "State") {
				deps := fmt.Sprint(r["DependsOn"])
				if !strings.Contains(deps, "AllowedImagesCriteria") {
					t.Errorf("state %s does not depend on the criteria: %s", id, deps)
				}
			}
		}
		// Least privilege: exactly the three setting actions, on "*" (no ARN).
		found := false
		for _, s := range statements(tmpl, "AWS::IAM::Policy") {
			if slices.ContainsFunc(s.Actions, func(a string) bool { return strings.Contains(a, "AllowedImagesSettings") }) {
				found = true
				if !slices.Equal(s.Actions, []string{"ec2:ReplaceImageCriteriaInAllowedImagesSettings", "ec2:EnableAllowedImagesSettings", "ec2:DisableAllowedImagesSettings"}) {
					t.Errorf("allowed AMIs statement actions %v", s.Actions)
				}
			}
		}
		if !found {
			t.Error("no statement for the Allowed AMIs actions")
		}
	})

	t.Run("no managed policies on any role, IAM checks still hold", func(t *testing.T) {
		checkIAM(t, tmpl, "prod", map[string][]string{"Backup": {"nightly"}, "BackupWeekly": nil})
	})
}

// managedPolicyStatements: statements() for AWS::IAM::ManagedPolicy
// resources (same PolicyDocument property as AWS::IAM::Policy).
func managedPolicyStatements(tmpl map[string]any) []stmt {
	only := map[string]any{}
	for id, p := range resources(tmpl, "AWS::IAM::ManagedPolicy") {
		only[id] = map[string]any{"Type": "AWS::IAM::Policy", "Properties": p}
	}
	return statements(map[string]any{"Resources": only}, "AWS::IAM::Policy")
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestGuardrailsCdkNagClean(t *testing.T) {
	stack, _ := synth(t, guardConfig)
	nagErrors(t, stack)
	warns := assertions.Annotations_FromStack(stack).FindWarning(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*")))
	for _, w := range *warns {
		t.Errorf("cdk-nag warning: %s %v", *w.Id, w.Entry.Data)
	}
}

func TestGuardrailsOffWithoutSection(t *testing.T) {
	_, tmpl := synth(t, testConfig)
	for _, typ := range []string{"AWS::IAM::ManagedPolicy", "AWS::Config::ConfigRule", "Custom::AmibackupAllowedAmis"} {
		if n := len(resources(tmpl, typ)); n != 0 {
			t.Errorf("%d %s without a guardrails section", n, typ)
		}
	}
}

func TestInvalidGuardrailsFailSynth(t *testing.T) {
	bad := strings.TrimSuffix(testConfig, "}") + `,"guardrails":{"attachTo":{"roles":["arn:aws:iam::111111111111:role/dev"]}}}`
	wantMentions(t, buildError(t, bad), "guardrails.attachTo.roles[0]", "not an IAM role name", "guardrails.configRule", "amisByTagKeyAndValue")
}

// guardPolicy synthesizes only the guardrails for a guardrails section and
// returns the managed policy's statements as they appear in the template.
func guardPolicy(t *testing.T, guardrails string) []any {
	t.Helper()
	requireNode(t)
	cfg, err := config.Parse([]byte(strings.TrimSuffix(testConfig, "}")+`,"guardrails":`+guardrails+`}`), "")
	if err != nil {
		t.Fatal(err)
	}
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(t.TempDir())})
	stack := awscdk.NewStack(app, jsii.String("GuardOnly"), nil)
	NewGuardrails(stack, "Guardrails", &GuardrailsProps{Config: cfg})
	tmpl := *assertions.Template_FromStack(stack, nil).ToJSON()
	for _, p := range resources(tmpl, "AWS::IAM::ManagedPolicy") {
		return p["PolicyDocument"].(map[string]any)["Statement"].([]any)
	}
	t.Fatal("no managed policy")
	return nil
}

// authz is one resource of a request as IAM evaluates it: its ARN and the
// condition keys EC2 supplies for it.
type authz struct {
	arn  string
	keys map[string]string
	// multi are multivalued keys such as aws:TagKeys.
	multi map[string][]string
}

// denies evaluates the policy's Deny statements the way IAM does for one
// action and resource: the statement applies when action and resource
// match and every condition holds; it returns the denying Sid or "".
// Pseudo parameters resolve to partition aws and account 111111111111.
func denies(t *testing.T, statements []any, action string, r authz) string {
	t.Helper()
	keys := map[string]string{}
	for k, v := range r.keys {
		keys[strings.ToLower(k)] = v // condition key names are case-insensitive
	}
	resolve := strings.NewReplacer("<AWS::Partition>", "aws", "<AWS::AccountId>", account).Replace
	for _, s := range statements {
		st := s.(map[string]any)
		if st["Effect"] != "Deny" {
			t.Fatalf("statement %v is not a Deny", st["Sid"])
		}
		if !slices.ContainsFunc(asList(st["Action"]), func(a string) bool { return globMatch(a, action, true) }) {
			continue
		}
		rs, ok := st["Resource"].([]any)
		if !ok {
			rs = []any{st["Resource"]}
		}
		if !slices.ContainsFunc(rs, func(p any) bool { return globMatch(resolve(flatten(p)), r.arn, false) }) {
			continue
		}
		all := true
		for op, block := range st["Condition"].(map[string]any) {
			for key, want := range block.(map[string]any) {
				var wants []string
				if list, ok := want.([]any); ok {
					for _, w := range list {
						wants = append(wants, resolve(flatten(w)))
					}
				} else {
					wants = []string{resolve(flatten(want))}
				}
				got, present := keys[strings.ToLower(key)]
				var holds bool
				if strings.HasPrefix(op, "ForAnyValue:") {
					// Multivalued key: true when any request value matches
					// any policy value; false when the key is absent.
					if op != "ForAnyValue:StringEqualsIgnoreCase" {
						t.Fatalf("evaluator does not know condition operator %s", op)
					}
					for _, v := range r.multi[key] {
						holds = holds || slices.ContainsFunc(wants, func(w string) bool { return strings.EqualFold(w, v) })
					}
					all = all && holds
					continue
				}
				switch op {
				case "StringEquals":
					holds = present && slices.Contains(wants, got)
				case "StringNotEquals":
					// Negated operators are true when the key is absent.
					holds = !present || !slices.Contains(wants, got)
				case "Null":
					holds = (wants[0] == "true") != present
				default:
					t.Fatalf("evaluator does not know condition operator %s", op)
				}
				all = all && holds
			}
		}
		if all {
			return fmt.Sprint(st["Sid"])
		}
	}
	return ""
}

// globMatch matches IAM's * and ? wildcards (actions case-insensitively).
func globMatch(pattern, s string, fold bool) bool {
	re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(pattern)) + "$"
	if fold {
		re = "(?i)" + re
	}
	return regexp.MustCompile(re).MatchString(s)
}

func image(region, owner string, tags map[string]string) authz {
	keys := map[string]string{"ec2:Owner": owner}
	for k, v := range tags {
		keys["aws:ResourceTag/"+k] = v
	}
	return authz{arn: "arn:aws:ec2:" + region + "::image/ami-0abc1234def567890", keys: keys}
}

// tagging is CreateTags on one of this account's images adding keys.
func tagging(keys ...string) authz {
	r := image("eu-west-1", account, nil)
	r.multi = map[string][]string{"aws:TagKeys": keys}
	return r
}

// TestApprovedAMIPolicyEvaluation evaluates the generated policy document
// for RunInstances with approved, unapproved and allowed-owner images.
func TestApprovedAMIPolicyEvaluation(t *testing.T) {
	verified := map[string]string{config.VerifiedTag: "2026-11-24T04:10:00Z"}
	run := "ec2:RunInstances"
	tests := []struct {
		guardrails string
		cases      []struct {
			name, action string
			r            authz
			want         string // denying Sid, "" = not denied
		}
	}{
		{`{"allowedOwners":["amazon","222222222222"],"configRule":{"disabled":true}}`, []struct {
			name, action string
			r            authz
			want         string
		}{
			{"own image with the verified tag", run, image("eu-west-1", account, verified), ""},
			{"own verified image in another Region", run, image("us-east-1", account, verified), ""},
			{"own image without the tag", run, image("eu-west-1", account, nil), "DenyUnapprovedImages"},
			{"own image with another tag", run, image("eu-west-1", account, map[string]string{"amibackup:verified-by": "x"}), "DenyUnapprovedImages"},
			{"Amazon's image (alias owner), untagged", run, image("eu-west-1", "amazon", nil), ""},
			{"allowed account's image, untagged", run, image("eu-west-1", "222222222222", nil), ""},
			{"other account's image carrying the verified tag", run, image("eu-west-1", "333333333333", verified), "DenyImagesOfOtherOwners"},
			{"other account's image, untagged", run, image("eu-west-1", "333333333333", nil), "DenyUnapprovedImages"},
			{"the instance resource of the same launch", run, authz{arn: "arn:aws:ec2:eu-west-1:" + account + ":instance/*"}, ""},
			{"the subnet resource of the same launch", run, authz{arn: "arn:aws:ec2:eu-west-1:" + account + ":subnet/subnet-0abc", keys: map[string]string{"ec2:Vpc": "vpc-1"}}, ""},
			{"a snapshot of an unapproved image (CreateVolume path)", run, authz{arn: "arn:aws:ec2:eu-west-1::snapshot/snap-1", keys: map[string]string{"ec2:Owner": "333333333333"}}, ""},
			{"other actions on unapproved images", "ec2:CreateImage", image("eu-west-1", account, nil), ""},
			{"tagging an image approved", "ec2:CreateTags", tagging(config.VerifiedTag), "DenySelfApproval"},
			{"tagging an image approved, other letter case", "ec2:CreateTags", tagging("Name", "AMIBACKUP:Verified"), "DenySelfApproval"},
			{"tagging an image with other tags", "ec2:CreateTags", tagging("Name", "amibackup:verified-by"), ""},
		}},
		{`{"approvedTag":{"key":"Approved","value":"yes"}}`, []struct {
			name, action string
			r            authz
			want         string
		}{
			{"own image with the configured value", run, image("eu-west-1", account, map[string]string{"Approved": "yes"}), ""},
			{"own image with another value", run, image("eu-west-1", account, map[string]string{"Approved": "no"}), "DenyUnapprovedImages"},
			{"own image without the tag", run, image("eu-west-1", account, nil), "DenyUnapprovedImages"},
			{"Amazon's image when no owner is allowed", run, image("eu-west-1", "amazon", nil), "DenyUnapprovedImages"},
			{"other account's image with the value", run, image("eu-west-1", "333333333333", map[string]string{"Approved": "yes"}), "DenyImagesOfOtherOwners"},
			{"instance resource", run, authz{arn: "arn:aws:ec2:eu-west-1:" + account + ":instance/*"}, ""},
			{"tagging an image approved", "ec2:CreateTags", tagging("Approved"), "DenySelfApproval"},
			{"tagging an image with the verified tag the rule does not use", "ec2:CreateTags", tagging(config.VerifiedTag), ""},
		}},
	}
	for _, tt := range tests {
		sts := guardPolicy(t, tt.guardrails)
		for _, c := range tt.cases {
			t.Run(tt.guardrails+"/"+c.name, func(t *testing.T) {
				if got := denies(t, sts, c.action, c.r); got != c.want {
					t.Errorf("denied by %q, want %q", got, c.want)
				}
			})
		}
	}
}

// TestEvaluatorSeesUnscopedDeny: the evaluator does deny non-image
// resources when a statement is not scoped to images, so the "instance
// resource" cases above test the scoping, not a blind evaluator.
func TestEvaluatorSeesUnscopedDeny(t *testing.T) {
	unscoped := []any{map[string]any{"Sid": "Unscoped", "Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "*",
		"Condition": map[string]any{"StringNotEquals": map[string]any{"ec2:Owner": []any{account}}}}}
	if got := denies(t, unscoped, "ec2:RunInstances", authz{arn: "arn:aws:ec2:eu-west-1:" + account + ":instance/*"}); got != "Unscoped" {
		t.Fatalf("an unscoped owner deny does not deny the instance resource (which has no ec2:Owner): %q", got)
	}
}
