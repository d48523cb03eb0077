package ec2sim

import (
	"fmt"
	"html"
	"net/http"
	"regexp"
	"strings"
)

// api is one AWS service served on the emulator's endpoint: its actions,
// response document and error format. EC2 speaks the ec2query dialect;
// Auto Scaling and ELBv2 speak the plain Query protocol, whose responses
// wrap the result in <ActionResult> followed by <ResponseMetadata> and whose
// errors are <ErrorResponse><Error><Type/><Code/><Message/></Error>.
type api struct {
	actions    map[string]handler
	newXML     func(action, reqID string) *xmlw
	writeError func(w http.ResponseWriter, reqID string, e *apiError)
	throttled  *apiError
}

var ec2API = &api{
	actions:    actions,
	newXML:     func(action, reqID string) *xmlw { return newXML(action+"Response", reqID) },
	writeError: writeError,
	throttled:  errf("RequestLimitExceeded", "Request limit exceeded."),
}

// queryAPI builds a Query-protocol service. Auto Scaling and ELBv2 answer a
// throttled request with the common error Throttling ("Rate exceeded", HTTP
// 400), which the SDK's retryer treats as throttling.
func queryAPI(ns string, acts map[string]handler) *api {
	return &api{
		actions: acts,
		newXML: func(action, reqID string) *xmlw {
			x := &xmlw{root: action + "Response", tail: fmt.Sprintf("</%sResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata>", action, reqID)}
			fmt.Fprintf(&x.b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<%sResponse xmlns="%s"><%sResult>`, action, ns, action)
			return x
		},
		writeError: func(w http.ResponseWriter, reqID string, e *apiError) {
			typ := "Sender"
			if e.status >= 500 {
				typ = "Receiver"
			}
			writeXML(w, e.status, fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<ErrorResponse xmlns="%s"><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
				ns, typ, html.EscapeString(e.code), html.EscapeString(e.msg), reqID))
		},
		throttled: &apiError{status: http.StatusBadRequest, code: "Throttling", msg: "Rate exceeded"},
	}
}

var (
	autoScalingAPI = queryAPI("http://autoscaling.amazonaws.com/doc/2011-01-01/", autoScalingActions)
	elbv2API       = queryAPI("http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/", elbv2Actions)
)

var serviceRE = regexp.MustCompile(`Credential=[^/,\s]+/[0-9]{8}/[a-z0-9-]+/([a-z0-9-]+)/aws4_request`)

// apiFor routes a request by the service in its SigV4 credential scope
// (the SDK signs Auto Scaling as "autoscaling", ELBv2 as
// "elasticloadbalancing"), or, unsigned, by the Query API version.
func apiFor(r *http.Request, p params) *api {
	service := ""
	if m := serviceRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		service = m[1]
	}
	switch {
	case service == "autoscaling", service == "" && p.get("Version") == "2011-01-01":
		return autoScalingAPI
	case service == "elasticloadbalancing", service == "" && p.get("Version") == "2015-12-01":
		return elbv2API
	}
	return ec2API
}

// queryBuckets throttle the Auto Scaling and ELBv2 actions. ELBv2
// documents its bucket for non-mutating actions: 40 tokens, refilled 10 per
// second, per account and Region ("Request throttling for the ELB API",
// https://docs.aws.amazon.com/elasticloadbalancing/latest/userguide/elb-api-throttling.html);
// it is modelled per action, like EC2's, which is kinder than one bucket
// shared by every Describe*. Calls services make on the account's behalf
// (Auto Scaling registering a member) take none of its tokens. The sizes
// for ELBv2's registrations and for all of Auto Scaling (which publishes
// none; its API reference only names the Throttling error) are our
// assumption: reads 40 with 10 per second, changes 20 with 4 per second.
var queryBuckets = map[string]struct{ size, refill float64 }{
	"DescribeAutoScalingInstances":  {40, 10},
	"DescribeAutoScalingGroups":     {40, 10},
	"EnterStandby":                  {20, 4},
	"ExitStandby":                   {20, 4},
	"DescribeTargetGroups":          {40, 10},
	"DescribeTargetGroupAttributes": {40, 10},
	"DescribeTargetHealth":          {40, 10},
	"RegisterTargets":               {20, 4},
	"DeregisterTargets":             {20, 4},
}

// members reads a Query-protocol list such as InstanceIds.member.1.
func (p params) members(name string) []string { return p.list(name + ".member") }

// targetIDs reads Targets.member.N.Id (ELBv2).
func (p params) targetIDs() []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := p[fmt.Sprintf("Targets.member.%d.Id", i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

// validationError is the Query protocol's generic bad-input error.
func validationError(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "ValidationError", msg: fmt.Sprintf(format, args...)}
}

func quoteIDs(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = "'" + id + "'"
	}
	return strings.Join(q, ", ")
}
