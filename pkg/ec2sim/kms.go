package ec2sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

var keyARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:kms:([a-z0-9-]+):([0-9]{12}):key/([A-Za-z0-9-]+)$`)

// serveKMS answers KMS DescribeKey (JSON 1.1 protocol, X-Amz-Target
// TrentService.DescribeKey) so callers can tell the AWS-managed EBS key
// from customer-managed keys; any other well-formed key ARN is a customer
// key. Calls are counted in the call log as "kms:DescribeKey".
func (s *Sim) serveKMS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	account, _ := identity(r)
	fail := func(status int, typ, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
	}
	action := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	s.mu.Lock()
	s.record(account, "kms:"+action, false)
	s.mu.Unlock()
	if action != "DescribeKey" {
		fail(http.StatusBadRequest, "UnknownOperationException", fmt.Sprintf("the emulator implements only DescribeKey, not %s", action))
		return
	}
	var in struct{ KeyId string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.KeyId == "" {
		fail(http.StatusBadRequest, "ValidationException", "KeyId is required")
		return
	}
	m := keyARNRE.FindStringSubmatch(in.KeyId)
	if m == nil {
		fail(http.StatusBadRequest, "NotFoundException", fmt.Sprintf("Key '%s' does not exist", in.KeyId))
		return
	}
	manager := "CUSTOMER"
	if isAWSManagedKey(in.KeyId) {
		manager = "AWS"
	}
	json.NewEncoder(w).Encode(map[string]any{"KeyMetadata": map[string]any{
		"KeyId": m[3], "Arn": in.KeyId, "AWSAccountId": m[2], "KeyManager": manager, "KeyState": "Enabled",
		"Enabled": true, "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT",
	}})
}
