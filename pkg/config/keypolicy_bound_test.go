package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestSharedKeyPolicyBoundHolds: the bound is at least the size of the
// policy as infra/stacks generates it (statement shapes copied from a
// synthesized template, resolved in the longest partition, with the longest
// organization IDs and OU paths the configuration accepts).
func TestSharedKeyPolicyBoundHolds(t *testing.T) {
	useActions := []string{"kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:GenerateDataKeyWithoutPlaintext"}
	grant := map[string]any{"Bool": map[string]any{"kms:GrantIsForAWSResource": "true"}}
	type st = map[string]any
	for _, n := range [][3]int{{1, 0, 0}, {73, 0, 0}, {10, 3, 0}, {5, 0, 20}, {60, 2, 21}, {0, 1, 1}} {
		doc := sharingDoc(n[0], n[1], n[2], true)
		c, err := Parse([]byte(doc), "D")
		if err != nil {
			t.Fatal(err)
		}
		s := c.Sharing
		stmts := []st{{"Action": "kms:*", "Effect": "Allow", "Principal": st{"AWS": "arn:aws-us-gov:iam::999999999999:root"}, "Resource": "*"}}
		for i, a := range s.AccountIDs {
			p := st{"AWS": "arn:aws-us-gov:iam::" + a + ":root"}
			stmts = append(stmts,
				st{"Action": useActions, "Effect": "Allow", "Principal": p, "Resource": "*", "Sid": fmt.Sprintf("TargetAccountUse%d", i)},
				st{"Action": "kms:CreateGrant", "Condition": grant, "Effect": "Allow", "Principal": p, "Resource": "*", "Sid": fmt.Sprintf("TargetAccountGrants%d", i)})
		}
		if len(s.OrganizationARNs) > 0 {
			var ids []string
			for _, a := range s.OrganizationARNs {
				ids = append(ids, a[strings.LastIndex(a, "/")+1:])
			}
			cond := st{"StringEquals": st{"aws:PrincipalOrgID": ids}}
			stmts = append(stmts,
				st{"Action": useActions, "Condition": cond, "Effect": "Allow", "Principal": st{"AWS": "*"}, "Resource": "*", "Sid": "TargetOrganizationsUse"},
				st{"Action": "kms:CreateGrant", "Condition": st{"Bool": grant["Bool"], "StringEquals": cond["StringEquals"]}, "Effect": "Allow", "Principal": st{"AWS": "*"}, "Resource": "*", "Sid": "TargetOrganizationsGrants"})
		}
		if len(s.OrganizationalUnitARNs) > 0 {
			var paths []string
			for _, a := range s.OrganizationalUnitARNs {
				parts := strings.Split(a[strings.Index(a, ":ou/")+4:], "/")
				paths = append(paths, parts[0]+"/*/"+parts[len(parts)-1]+"/*")
			}
			cond := st{"ForAnyValue:StringLike": st{"aws:PrincipalOrgPaths": paths}}
			stmts = append(stmts,
				st{"Action": useActions, "Condition": cond, "Effect": "Allow", "Principal": st{"AWS": "*"}, "Resource": "*", "Sid": "TargetOUsUse"},
				st{"Action": "kms:CreateGrant", "Condition": st{"Bool": grant["Bool"], "ForAnyValue:StringLike": cond["ForAnyValue:StringLike"]}, "Effect": "Allow", "Principal": st{"AWS": "*"}, "Resource": "*", "Sid": "TargetOUsGrants"})
		}
		b, _ := json.Marshal(st{"Statement": stmts, "Version": "2012-10-17"})
		bound := s.SharedKeyPolicyBound()
		if len(b) > bound {
			t.Errorf("%v: policy %d bytes, bound %d", n, len(b), bound)
		}
		// The bound is conservative, not wasteful: within 10% (+ 200 bytes).
		if float64(bound) > float64(len(b))*1.1+200 {
			t.Errorf("%v: bound %d far above the policy's %d bytes", n, bound, len(b))
		}
	}
}
