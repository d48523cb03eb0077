package awsclient

import (
	"errors"

	"github.com/aws/smithy-go"
)

// EC2 error codes amibackup acts on. The codes are EC2's contract
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html);
// callers ask the predicates below, which say what an answer means, instead
// of comparing codes inline.
const (
	codeDryRunOperation       = "DryRunOperation"
	codeDuplicateImageName    = "InvalidAMIName.Duplicate"
	codeImageNotFound         = "InvalidAMIID.NotFound"
	codeImageUnavailable      = "InvalidAMIID.Unavailable"
	codeSnapshotNotFound      = "InvalidSnapshot.NotFound"
	codeSnapshotInUse         = "InvalidSnapshot.InUse"
	codeRequestLimitExceeded  = "RequestLimitExceeded"
	codeResourceLimitExceeded = "ResourceLimitExceeded"
	codeUnauthorizedOperation = "UnauthorizedOperation"
)

// ErrorCode returns the AWS API error code of err ("InvalidAMIName.Duplicate",
// "RequestLimitExceeded", ...), or "" when err is not an API error.
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// ImageGone reports whether err says the image no longer exists; cleanup
// treats these answers as already done.
func ImageGone(err error) bool {
	switch ErrorCode(err) {
	case codeImageNotFound, codeImageUnavailable:
		return true
	}
	return false
}

// SnapshotGone reports whether err says the snapshot no longer exists
// (deleting it counts as done).
func SnapshotGone(err error) bool { return ErrorCode(err) == codeSnapshotNotFound }

// SnapshotInUse reports whether err says an image still uses the snapshot,
// so it cannot be deleted.
func SnapshotInUse(err error) bool { return ErrorCode(err) == codeSnapshotInUse }

// DuplicateName reports whether err says an image of that name already
// exists in the account and Region (AMI names are unique there).
func DuplicateName(err error) bool { return ErrorCode(err) == codeDuplicateImageName }

// DryRunOK reports whether err is EC2's answer to a DryRun call that would
// have succeeded: the caller has the permission.
func DryRunOK(err error) bool { return ErrorCode(err) == codeDryRunOperation }

// Throttled reports whether err is EC2's throttling answer (a token bucket
// is empty; EC2 refuses before acting, although it answers HTTP 503).
func Throttled(err error) bool { return ErrorCode(err) == codeRequestLimitExceeded }

// LimitExceeded reports whether err says an account limit is reached (e.g.
// concurrent AMI copies per destination Region): retry in a later run.
func LimitExceeded(err error) bool { return ErrorCode(err) == codeResourceLimitExceeded }

// Unauthorized reports whether err says the caller lacks the IAM permission.
func Unauthorized(err error) bool { return ErrorCode(err) == codeUnauthorizedOperation }
