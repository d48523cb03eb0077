package stacks

import (
	"slices"
	"strings"
	"testing"
)

// TestPruneReferenceCheckPermissions: the prune role can call
// DescribeImageReferences, and reads launch templates and SSM parameters
// only when EC2 does so for that call (aws:CalledVia), in both kinds of
// stack; nothing for Image Builder, which prune does not check.
func TestPruneReferenceCheckPermissions(t *testing.T) {
	for name, cfg := range map[string]string{"backup": defaultConfig(t), "recovery": recoveryConfig} {
		t.Run(name, func(t *testing.T) {
			_, tmpl := synthCached(t, cfg)
			var prune []stmt
			for _, s := range statements(tmpl, "AWS::IAM::Policy") {
				if strings.HasPrefix(s.Policy, "PrunePolicy") {
					prune = append(prune, s)
				}
			}
			viaEC2 := map[string]bool{"ec2:DescribeLaunchTemplates": false, "ec2:DescribeLaunchTemplateVersions": false,
				"ssm:DescribeParameters": false, "ssm:GetParameters": false}
			references := false
			for _, s := range prune {
				for _, a := range s.Actions {
					if strings.HasPrefix(a, "imagebuilder:") {
						t.Errorf("%s: %s granted", s.Sid, a)
					}
					if a == "ec2:DescribeImageReferences" && slices.Equal(s.Resources, []string{"*"}) && s.Condition == nil {
						references = true
					}
					if _, ok := viaEC2[a]; !ok {
						continue
					}
					if via := cond(s, "ForAnyValue:StringEquals", "aws:CalledVia"); !slices.Equal(via, []string{"ec2-images.amazonaws.com"}) || len(s.Condition) != 1 {
						t.Errorf("%s: %s without (only) aws:CalledVia ec2-images.amazonaws.com: %v", s.Sid, a, s.Condition)
					}
					if a == "ssm:GetParameters" && !slices.Equal(s.Resources, []string{"arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter/*"}) {
						t.Errorf("ssm:GetParameters on %v, want this account's parameters in the Region", s.Resources)
					}
					viaEC2[a] = true
				}
			}
			if !references {
				t.Error("ec2:DescribeImageReferences not granted on *")
			}
			for a, ok := range viaEC2 {
				if !ok {
					t.Errorf("%s not granted", a)
				}
			}
		})
	}
}
