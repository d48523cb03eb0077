package config

// MaxKeyPolicyBytes is KMS's limit on a key policy document: 32 KiB (32,768
// bytes), not adjustable (AWS KMS developer guide, "Resource quotas"; the
// PutKeyPolicy reference: "The policy size limit is 32 KiB").
const MaxKeyPolicyBytes = 32768

// Upper bounds of the created shared key's policy (sharing.createKey), by
// part, from how infra/stacks builds it (sharedKeyStatements in
// infra/stacks/recovery.go) and as CloudFormation resolves it in the
// longest partition name, "aws-us-gov". Measured on a synthesized template
// (compact JSON, resolved) and rounded up:
//
//   - base: {"Statement":[...],"Version":"2012-10-17"} and CDK's default
//     statement giving the key's own account kms:* (110 bytes): 300;
//   - per account: TargetAccountUse<i> (220 bytes: the four key-use actions,
//     Principal arn:aws-us-gov:iam::<account>:root) and TargetAccountGrants<i>
//     (207 bytes: kms:CreateGrant with kms:GrantIsForAWSResource), plus
//     commas and up to three-digit indexes: 440;
//   - organizations: TargetOrganizationsUse and ...Grants without IDs (461
//     bytes): 500, plus each organization ID (up to 34 characters, quoted,
//     in both statements) 80;
//   - OUs: TargetOUsUse and ...Grants without paths (467 bytes): 500, plus
//     each path "o-<32>/*/ou-<32>-<32>/*" (107 characters, quoted, in both
//     statements) 230.
//
// With no organizations or OUs this allows 73 accounts. Whether
// CloudFormation passes the policy to KMS with whitespace is not documented;
// the rounding leaves about 3% for it.
const (
	keyPolicyBaseBytes       = 300
	keyPolicyPerAccountBytes = 440
	keyPolicyOrgSectionBytes = 500
	keyPolicyPerOrgBytes     = 80
	keyPolicyOUSectionBytes  = 500
	keyPolicyPerOUBytes      = 230
)

// SharedKeyPolicyBound is an upper bound of the size of the key policy the
// stack generates for a created shared key (sharing.createKey); 0 when the
// stack creates no key. Validate rejects a bound above MaxKeyPolicyBytes.
func (s *Sharing) SharedKeyPolicyBound() int {
	if s == nil || !s.CreateKey {
		return 0
	}
	n := keyPolicyBaseBytes + len(s.AccountIDs)*keyPolicyPerAccountBytes
	if len(s.OrganizationARNs) > 0 {
		n += keyPolicyOrgSectionBytes + len(s.OrganizationARNs)*keyPolicyPerOrgBytes
	}
	if len(s.OrganizationalUnitARNs) > 0 {
		n += keyPolicyOUSectionBytes + len(s.OrganizationalUnitARNs)*keyPolicyPerOUBytes
	}
	return n
}
