package sfnlocal

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// Local values of the pseudo parameters, the same account and Region the
// functions get from localrun.Env.
const (
	Partition = "aws"
	Region    = ec2sim.DefaultRegion
	Account   = ec2sim.DefaultAccount
)

// LocalFunctionARN is the ARN Resolve gives a function of the template that
// the caller did not name: the function's logical ID as its name.
func LocalFunctionARN(logicalID string) string {
	return fmt.Sprintf("arn:%s:lambda:%s:%s:function:%s", Partition, Region, Account, logicalID)
}

type resource struct {
	Type       string
	Properties map[string]any
}

// Resolve returns the plain ASL JSON of the AWS::StepFunctions::StateMachine
// logicalID ("" when the template has exactly one) in a synthesized
// CloudFormation template. Its DefinitionString (a string or an Fn::Join of
// strings and references) is resolved with Ref AWS::Partition, AWS::Region,
// AWS::AccountId and AWS::URLSuffix and Fn::GetAtt [function, Arn] of the
// template's AWS::Lambda::Function resources: arns[logicalID] when given,
// LocalFunctionARN otherwise. Any other intrinsic or reference is an error
// naming it.
func Resolve(template []byte, logicalID string, arns map[string]string) ([]byte, error) {
	def, _, err := resolve(template, logicalID, arns)
	return def, err
}

func resolve(template []byte, logicalID string, arns map[string]string) ([]byte, []string, error) {
	var t struct{ Resources map[string]resource }
	if err := json.Unmarshal(template, &t); err != nil {
		return nil, nil, fmt.Errorf("sfnlocal: parse template: %w", err)
	}
	if logicalID == "" {
		var ids []string
		for id, r := range t.Resources {
			if r.Type == "AWS::StepFunctions::StateMachine" {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		if len(ids) != 1 {
			return nil, nil, fmt.Errorf("sfnlocal: template has %d state machines %v: name one by its logical ID", len(ids), ids)
		}
		logicalID = ids[0]
	}
	sm, ok := t.Resources[logicalID]
	if !ok || sm.Type != "AWS::StepFunctions::StateMachine" {
		return nil, nil, fmt.Errorf("sfnlocal: %s is not an AWS::StepFunctions::StateMachine in the template", logicalID)
	}
	for _, p := range []string{"DefinitionSubstitutions", "DefinitionS3Location"} {
		if _, ok := sm.Properties[p]; ok {
			return nil, nil, fmt.Errorf("sfnlocal: %s.Properties.%s is not supported: use DefinitionString (CDK's default)", logicalID, p)
		}
	}
	r := resolver{resources: t.Resources, arns: arns, used: map[string]bool{}}
	var def string
	if d, ok := sm.Properties["Definition"]; ok {
		b, err := json.Marshal(d)
		if err != nil {
			return nil, nil, fmt.Errorf("sfnlocal: %s.Properties.Definition: %w", logicalID, err)
		}
		def = string(b)
	} else {
		ds, ok := sm.Properties["DefinitionString"]
		if !ok {
			return nil, nil, fmt.Errorf("sfnlocal: %s has no DefinitionString", logicalID)
		}
		s, err := r.str(ds, logicalID+".Properties.DefinitionString")
		if err != nil {
			return nil, nil, err
		}
		def = s
	}
	if !json.Valid([]byte(def)) {
		return nil, nil, fmt.Errorf("sfnlocal: resolved definition of %s is not JSON: %.200s", logicalID, def)
	}
	used := make([]string, 0, len(r.used))
	for id := range r.used {
		used = append(used, id)
	}
	sort.Strings(used)
	return []byte(def), used, nil
}

type resolver struct {
	resources map[string]resource
	arns      map[string]string
	used      map[string]bool
}

// str resolves v, found at path, to a string.
func (r resolver) str(v any, path string) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case map[string]any:
		if len(v) != 1 {
			return "", fmt.Errorf("sfnlocal: %s: expected a string or one intrinsic function, got %d keys", path, len(v))
		}
		for fn, arg := range v {
			switch fn {
			case "Fn::Join":
				return r.join(arg, path+".Fn::Join")
			case "Ref":
				return r.ref(arg, path+".Ref")
			case "Fn::GetAtt":
				return r.getAtt(arg, path+".Fn::GetAtt")
			default:
				return "", fmt.Errorf("sfnlocal: %s: unsupported intrinsic %s (supported: Fn::Join, Ref of pseudo parameters, Fn::GetAtt of a Lambda function's Arn)", path, fn)
			}
		}
	}
	return "", fmt.Errorf("sfnlocal: %s: expected a string, got %T", path, v)
}

func (r resolver) join(arg any, path string) (string, error) {
	a, ok := arg.([]any)
	if !ok || len(a) != 2 {
		return "", fmt.Errorf("sfnlocal: %s: expected [delimiter, [values]]", path)
	}
	sep, ok := a[0].(string)
	parts, ok2 := a[1].([]any)
	if !ok || !ok2 {
		return "", fmt.Errorf("sfnlocal: %s: expected [delimiter, [values]]", path)
	}
	out := make([]string, len(parts))
	for i, p := range parts {
		s, err := r.str(p, fmt.Sprintf("%s[1][%d]", path, i))
		if err != nil {
			return "", err
		}
		out[i] = s
	}
	return strings.Join(out, sep), nil
}

func (r resolver) ref(arg any, path string) (string, error) {
	name, _ := arg.(string)
	switch name {
	case "AWS::Partition":
		return Partition, nil
	case "AWS::Region":
		return Region, nil
	case "AWS::AccountId":
		return Account, nil
	case "AWS::URLSuffix":
		return "amazonaws.com", nil
	}
	return "", fmt.Errorf("sfnlocal: %s: unsupported Ref %v (supported: AWS::Partition, AWS::Region, AWS::AccountId, AWS::URLSuffix)", path, arg)
}

func (r resolver) getAtt(arg any, path string) (string, error) {
	var id, attr string
	switch a := arg.(type) {
	case []any:
		if len(a) == 2 {
			id, _ = a[0].(string)
			attr, _ = a[1].(string)
		}
	case string:
		id, attr, _ = strings.Cut(a, ".")
	}
	if id == "" || attr == "" {
		return "", fmt.Errorf("sfnlocal: %s: expected [logicalId, attribute], got %v", path, arg)
	}
	res, ok := r.resources[id]
	if !ok {
		return "", fmt.Errorf("sfnlocal: %s: no resource %s in the template", path, id)
	}
	if res.Type != "AWS::Lambda::Function" || attr != "Arn" {
		return "", fmt.Errorf("sfnlocal: %s: unsupported Fn::GetAtt %s.%s of a %s (supported: Arn of an AWS::Lambda::Function)", path, id, attr, res.Type)
	}
	r.used[id] = true
	if arn, ok := r.arns[id]; ok {
		return arn, nil
	}
	return LocalFunctionARN(id), nil
}

// Functions returns the logical IDs of the Lambda functions the state
// machine's definition references with Fn::GetAtt, sorted: the functions a
// test must start and list in Options.Functions.
func Functions(template []byte, logicalID string) ([]string, error) {
	_, used, err := resolve(template, logicalID, nil)
	return used, err
}
