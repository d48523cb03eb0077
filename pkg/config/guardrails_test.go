package config

import (
	"slices"
	"strings"
	"testing"
)

// withGuardrails is a valid backup configuration with the guardrails section g.
func withGuardrails(g string) string {
	return `{"policies":[` + pol("a", `{"daily":1}`) + `],"guardrails":` + g + `}`
}

func TestGuardrailsDefaults(t *testing.T) {
	c, err := Parse([]byte(withGuardrails(`{"configRule":{"tagKey":"AmibackupVerified"},"allowedImages":{}}`)), "D")
	if err != nil {
		t.Fatal(err)
	}
	g := c.Guardrails
	if tag := g.Tag(); tag.Key != VerifiedTag || tag.Value != "" {
		t.Errorf("approved tag %+v, want %s with any value", tag, VerifiedTag)
	}
	if k, v := g.ConfigRuleTag(); k != "AmibackupVerified" || v != "" {
		t.Errorf("config rule tag %q=%q", k, v)
	}
	if g.AllowedImages.State() != AllowedImagesAudit || !slices.Equal(g.AllowedImages.Providers(), []string{"amazon"}) {
		t.Errorf("allowed images %s %v, want audit-mode [amazon]", g.AllowedImages.State(), g.AllowedImages.Providers())
	}
	// Defaults are not written into the document the functions receive.
	if strings.Contains(c.JSON(), VerifiedTag) || strings.Contains(c.JSON(), AllowedImagesAudit) {
		t.Errorf("defaults leaked into AMIBACKUP_CONFIG: %s", c.JSON())
	}
	// A configured tag with a colon-free key is checked by the rule as is.
	c, err = Parse([]byte(withGuardrails(`{"approvedTag":{"key":"Approved","value":"yes"},"allowedOwners":["amazon","111111111111"],
	  "attachTo":{"roles":["developers"],"users":["ci.bot@example"],"groups":["Ops+Dev"]}}`)), "D")
	if err != nil {
		t.Fatal(err)
	}
	if k, v := c.Guardrails.ConfigRuleTag(); k != "Approved" || v != "yes" {
		t.Errorf("config rule tag %q=%q, want the approved tag", k, v)
	}
	if _, err := Parse([]byte(c.JSON()), ""); err != nil {
		t.Errorf("rendered guardrails do not re-parse: %v", err)
	}
}

func TestGuardrailsValidation(t *testing.T) {
	tests := []struct {
		name string
		g    string
		want []string
	}{
		{"unknown field", `{"approvedTags":{}}`, []string{"unknown field", "approvedTags"}},
		{"default key cannot be checked by the config rule", `{}`,
			[]string{"guardrails.configRule: tag key \"amibackup:verified\"", "amisByTagKeyAndValue", "configRule.tagKey", "disabled"}},
		{"config rule tag key with colon", `{"configRule":{"tagKey":"team:approved"}}`, []string{"guardrails.configRule.tagKey", "':'"}},
		{"config rule value with comma", `{"configRule":{"tagKey":"Approved","tagValue":"a,b"}}`, []string{"guardrails.configRule.tagValue", "','"}},
		{"approved value with colon reaches the config rule", `{"approvedTag":{"key":"Approved","value":"12:30"}}`, []string{"guardrails.configRule: tag value \"12:30\"", "disabled"}},
		{"config rule value without key", `{"approvedTag":{"key":"Approved"},"configRule":{"tagValue":"yes"}}`, []string{"guardrails.configRule.tagValue", "without configRule.tagKey"}},
		{"disabled rule with settings", `{"configRule":{"disabled":true,"approvedAmiIds":["ami-12345678"]}}`, []string{"guardrails.configRule: is disabled"}},
		{"aws prefix", `{"approvedTag":{"key":"AWS:verified"},"configRule":{"disabled":true}}`, []string{"guardrails.approvedTag.key", "aws:"}},
		{"empty key", `{"approvedTag":{"key":""},"configRule":{"disabled":true}}`, []string{"guardrails.approvedTag.key: is required"}},
		{"long key", `{"approvedTag":{"key":"` + strings.Repeat("k", 129) + `"},"configRule":{"disabled":true}}`, []string{"guardrails.approvedTag.key", "1-128"}},
		{"long value", `{"approvedTag":{"key":"k","value":"` + strings.Repeat("v", 257) + `"}}`, []string{"guardrails.approvedTag.value", "256"}},
		{"owner self and bad id", `{"allowedOwners":["self","12345"],"configRule":{"disabled":true}}`,
			[]string{"guardrails.allowedOwners[0]", "\"self\" is not an ec2:Owner value", "guardrails.allowedOwners[1]"}},
		{"duplicate owner", `{"allowedOwners":["amazon","amazon"],"configRule":{"disabled":true}}`, []string{"guardrails.allowedOwners: \"amazon\" is listed twice"}},
		{"role arn instead of name", `{"attachTo":{"roles":["arn:aws:iam::111111111111:role/dev"]},"configRule":{"disabled":true}}`,
			[]string{"guardrails.attachTo.roles[0]", "not an IAM role name", "not the ARN"}},
		{"long user and group names", `{"attachTo":{"users":["` + strings.Repeat("u", 65) + `"],"groups":["` + strings.Repeat("g", 129) + `"]},"configRule":{"disabled":true}}`,
			[]string{"guardrails.attachTo.users[0]", "1-64", "guardrails.attachTo.groups[0]", "1-128"}},
		{"bad ami ids", `{"configRule":{"tagKey":"Approved","approvedAmiIds":["ami-xyz"]}}`, []string{"guardrails.configRule.approvedAmiIds[0]"}},
		{"too many ami ids", `{"configRule":{"tagKey":"Approved","approvedAmiIds":[` + strings.Repeat(`"ami-12345678",`, 21) + `"ami-12345678"]}}`,
			[]string{"guardrails.configRule.approvedAmiIds", "at most 21"}},
		{"allowed images mode and providers", `{"configRule":{"disabled":true},"allowedImages":{"mode":"on","imageProviders":["none","amazon","me"]}}`,
			[]string{"guardrails.allowedImages.mode", "audit-mode", "guardrails.allowedImages.imageProviders[0]", "cannot be combined", "guardrails.allowedImages.imageProviders[2]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(withGuardrails(tt.g)), "D")
			if err == nil {
				t.Fatal("Parse succeeded, want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// A recovery deployment has no backup stack to carry the guardrails.
	_, err := Parse([]byte(`{"recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"prod","retention":{"last":3}},"guardrails":{"configRule":{"disabled":true}}}`), "D")
	if err == nil || !strings.Contains(err.Error(), "guardrails: is only available in a backup deployment") {
		t.Errorf("recovery with guardrails: %v", err)
	}
}

func TestGuardrailPolicyNameFitsIAM(t *testing.T) {
	longest := strings.Repeat("d", 64) // deploymentRE allows 64 characters
	if !deploymentRE.MatchString(longest) || deploymentRE.MatchString(longest+"d") {
		t.Fatal("deployment limit is no longer 64: recheck the policy name length")
	}
	if n := len(GuardrailPolicyName(longest)); n > 128 {
		t.Errorf("policy name of the longest deployment has %d characters; IAM allows 128", n)
	}
	if got := GuardrailPolicyName("prod"); got != "amibackup-prod-approved-amis" {
		t.Errorf("policy name %q", got)
	}
}
