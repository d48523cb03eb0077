package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func sharingDoc(accounts, orgs, ous int, createKey bool) string {
	s := Sharing{CreateKey: createKey}
	for i := range accounts {
		s.AccountIDs = append(s.AccountIDs, fmt.Sprintf("%012d", 100000000000+i))
	}
	for i := range orgs {
		s.OrganizationARNs = append(s.OrganizationARNs, fmt.Sprintf("arn:aws:organizations::111111111111:organization/o-%032d", i))
	}
	for i := range ous {
		s.OrganizationalUnitARNs = append(s.OrganizationalUnitARNs, fmt.Sprintf("arn:aws:organizations::111111111111:ou/o-%032d/ou-%032d-%032d", 0, i, i))
	}
	b, _ := json.Marshal(s)
	return `{"policies":[` + pol("a", `{"daily":1}`) + `],"sharing":` + string(b) + `}`
}

// TestSharedKeyPolicyLimit (issue 11, item 10): a created key's policy grows
// with every target; a configuration whose policy could exceed KMS's 32 KB
// is rejected at the boundary, naming the field and the way out.
func TestSharedKeyPolicyLimit(t *testing.T) {
	tests := []struct {
		name             string
		accounts, orgs   int
		ous              int
		createKey, valid bool
	}{
		{"73 accounts", 73, 0, 0, true, true},
		{"74 accounts", 74, 0, 0, true, false},
		{"180 accounts, existing key", 180, 0, 0, false, true},
		{"72 accounts and an organization", 72, 1, 0, true, true},
		{"73 accounts and an organization", 73, 1, 0, true, false},
		{"60 accounts, 2 organizations, 21 OUs", 60, 2, 21, true, true},
		{"60 accounts, 2 organizations, 22 OUs", 60, 2, 22, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := sharingDoc(tt.accounts, tt.orgs, tt.ous, tt.createKey)
			if !tt.createKey {
				doc = strings.Replace(doc, `"sharing":{`, `"sharing":{"kmsKeyArn":"arn:aws:kms:eu-west-1:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab",`, 1)
			}
			_, err := Parse([]byte(doc), "D")
			if tt.valid && err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tt.valid && (err == nil || !strings.Contains(err.Error(), "config: sharing: the created key's policy would need up to") ||
				!strings.Contains(err.Error(), "32768-byte key policy limit")) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// TestMaxInFlightBound (issue 11, item 10): the EC2 user guide allows 100
// concurrent AMI copies per destination Region; the default stays 20.
func TestMaxInFlightBound(t *testing.T) {
	rec := func(n int) string {
		return fmt.Sprintf(`{"recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"p","maxInFlight":%d,"retention":{"last":3}}}`, n)
	}
	for n, ok := range map[int]bool{1: true, 20: true, 21: true, 100: true, 101: false, -1: false} {
		_, err := Parse([]byte(rec(n)), "D")
		if ok != (err == nil) || !ok && !strings.Contains(err.Error(), "recovery.maxInFlight: "+fmt.Sprint(n)+" is out of range: allowed 1-100") {
			t.Errorf("maxInFlight %d: %v", n, err)
		}
	}
	c, err := Parse([]byte(strings.Replace(rec(0), `"maxInFlight":0,`, "", 1)), "D")
	if err != nil || c.Recovery.MaxInFlight != 20 {
		t.Fatalf("default: %v %+v", err, c)
	}
}
