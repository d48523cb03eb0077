package prune

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestReferencedReasonIsBounded: an image launched by a large fleet, or in
// SSM parameters with 2,000-character names, still gets a short reason (it
// goes into the response, the plan log pages and keptByReference).
func TestReferencedReasonIsBounded(t *testing.T) {
	long := "arn:aws:ssm:us-east-1:123456789012:parameter/" + strings.Repeat("p", 2000)
	var rs []types.ImageReference
	for range 1000 {
		rs = append(rs, types.ImageReference{ImageId: aws.String("ami-0123456789abcdef0"), ResourceType: types.ImageReferenceResourceTypeSsmParameter, Arn: aws.String(long)})
	}
	got := referencedReason(rs)
	if len(got) > maxReferenceReason || !strings.Contains(got, "and 997 more (1000 references)") || !strings.HasSuffix(got, inUse) ||
		strings.Count(got, "ssm:Parameter arn:aws:ssm:us-east-1:123456789012:parameter/ppp") != 3 {
		t.Fatalf("reason of %d bytes: %s", len(got), got)
	}
	one := referencedReason(rs[:1:1])
	if !strings.HasPrefix(one, "referenced by ssm:Parameter arn:aws:ssm:") || !strings.HasSuffix(one, inUse) || strings.Contains(one, "more") || len(one) > maxReferenceReason {
		t.Fatalf("one reference: %s", one)
	}
}
