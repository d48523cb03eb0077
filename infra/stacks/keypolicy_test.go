package stacks

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/config"
)

// resolveForSize resolves the intrinsics of a key policy the way
// CloudFormation hands it to KMS, in the longest partition ("aws-us-gov")
// and with 12-digit account IDs, so its size is what KMS would count.
func resolveForSize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if j, ok := x["Fn::Join"].([]any); ok {
			var parts []string
			for _, p := range j[1].([]any) {
				parts = append(parts, fmt.Sprint(resolveForSize(p)))
			}
			return strings.Join(parts, j[0].(string))
		}
		if r, ok := x["Ref"].(string); ok {
			switch r {
			case "AWS::Partition":
				return "aws-us-gov"
			case "AWS::AccountId":
				return "111111111111"
			case "AWS::Region":
				return "us-gov-west-1"
			}
			return "<" + r + ">"
		}
		out := map[string]any{}
		for k, e := range x {
			out[k] = resolveForSize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = resolveForSize(e)
		}
		return out
	}
	return v
}

// TestSharedKeyPolicyBoundHoldsForTheLargestConfig: the largest sharing
// section pkg/config accepts with createKey (as many accounts as the bound
// allows, plus an organization and an OU) synthesizes a key policy within
// KMS's 32 KiB and within config's bound, and one account more is
// rejected. A change to the key's statements that outgrows the bound fails
// here, not at deploy time.
func TestSharedKeyPolicyBoundHoldsForTheLargestConfig(t *testing.T) {
	mk := func(n int) string {
		var ids []string
		for i := range n {
			ids = append(ids, fmt.Sprintf("2%011d", i))
		}
		b, _ := json.Marshal(map[string]any{"deployment": "prod",
			"policies": []any{map[string]any{"name": "nightly", "selector": map[string]any{"tagKey": "Backup"},
				"schedule": map[string]any{"expression": "cron(0 3 * * ? *)"}, "retention": map[string]any{"daily": 7}}},
			"sharing": map[string]any{"accountIds": ids, "createKey": true,
				"organizationArns":       []string{"arn:aws:organizations::111111111111:organization/o-abcdefghijklmnopqrstuvwxyz012345"},
				"organizationalUnitArns": []string{"arn:aws:organizations::111111111111:ou/o-abcdefghijklmnopqrstuvwxyz012345/ou-abcdefghijklmnopqrstuvwxyz012345-abcdefghijklmnopqrstuvwxyz012345"}}})
		return string(b)
	}
	n := 0
	for ; ; n++ {
		if _, err := config.Parse([]byte(mk(n+1)), ""); err != nil {
			if !strings.Contains(err.Error(), "sharing") {
				t.Fatalf("%d accounts rejected for another reason: %v", n+1, err)
			}
			break
		}
		if n > 200 {
			t.Fatal("no account limit with createKey")
		}
	}
	cfg, err := config.Parse([]byte(mk(n)), "")
	if err != nil {
		t.Fatal(err)
	}
	bound := cfg.Sharing.SharedKeyPolicyBound()
	_, tmpl := synth(t, mk(n))
	keys := map[string]map[string]any{}
	for id, k := range resources(tmpl, "AWS::KMS::Key") {
		if strings.Contains(flatten(k["KeyPolicy"]), "TargetAccountUse") {
			keys[id] = k
		}
	}
	if len(keys) != 1 {
		t.Fatalf("%d keys with target-account statements, want the created shared key", len(keys))
	}
	for id, k := range keys {
		doc, err := json.Marshal(resolveForSize(k["KeyPolicy"]))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d accounts: key policy %d bytes, bound %d, KMS limit %d", n, len(doc), bound, config.MaxKeyPolicyBytes)
		if len(doc) > bound || bound > config.MaxKeyPolicyBytes {
			t.Errorf("%s: key policy %d bytes, bound %d, limit %d", id, len(doc), bound, config.MaxKeyPolicyBytes)
		}
		if len(doc) < bound*9/10 {
			t.Errorf("%s: key policy %d bytes is far below the bound %d: the bound rejects configurations KMS would take", id, len(doc), bound)
		}
	}
}
