package stacks

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// The IAM reference check: every statement of every policy document in a
// synthesized template (role, inline and managed policies, trust policies,
// key policies, topic and queue policies, Lambda permissions) is checked
// against the Service Authorization Reference (pinned in
// testdata/iamdata, see its README):
//
//   - every action exists (a wildcard must match at least one);
//   - every resource ARN matches a resource type of every action of the
//     statement; an action without resource types needs "*";
//   - every condition key is valid for every action and resource of the
//     statement: one of the keys the reference lists for the action itself
//     or for the resource types the resource matches (all of them for "*"
//     or a resource-less trust statement), or a global aws: key.
//
// aws:RequestTag/*, aws:ResourceTag/* and aws:TagKeys count as global
// keys in IAM's list, but a service supports them only where the
// reference lists them per action and resource type (e.g. CopyImage's
// snapshot has aws:RequestTag and aws:TagKeys, no aws:ResourceTag), so
// they are checked like service keys.

// iamRef is the pinned reference data.
type iamRef struct {
	services map[string]*iamService // by lower-case service prefix
	global   []*regexp.Regexp
}

type iamService struct {
	Actions       map[string]iamAction `json:"actions"`
	ResourceTypes map[string]string    `json:"resourceTypes"`
	byLower       map[string]string    // lower-case action name -> name
}

type iamAction struct {
	ResourceTypes map[string][]string `json:"resourceTypes"`
	ConditionKeys []string            `json:"conditionKeys"`
}

var (
	iamRefOnce sync.Once
	iamRefData *iamRef
	iamRefErr  error
)

const iamDataDir = "testdata/iamdata"

// serviceTagKeys are IAM's "global" keys that services support per action.
var serviceTagKeys = []string{"aws:requesttag/", "aws:resourcetag/", "aws:tagkeys"}

func loadIAMRef() (*iamRef, error) {
	iamRefOnce.Do(func() {
		ref := &iamRef{services: map[string]*iamService{}}
		files, err := filepath.Glob(filepath.Join(iamDataDir, "*.json"))
		if err != nil || len(files) == 0 {
			iamRefErr = fmt.Errorf("no reference data in %s: %v", iamDataDir, err)
			return
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				iamRefErr = err
				return
			}
			name := strings.TrimSuffix(filepath.Base(f), ".json")
			if name == "global-condition-keys" {
				var keys []string
				if iamRefErr = json.Unmarshal(b, &keys); iamRefErr != nil {
					return
				}
				for _, k := range keys {
					lk := strings.ToLower(k)
					if !strings.HasPrefix(lk, "aws:") || hasAnyPrefix(lk, serviceTagKeys) {
						continue
					}
					// "aws:PrincipalTag/tag-key": any tag key.
					ref.global = append(ref.global, keyPattern(strings.Replace(k, "/tag-key", "/${TagKey}", 1)))
				}
				continue
			}
			svc := &iamService{byLower: map[string]string{}}
			if iamRefErr = json.Unmarshal(b, svc); iamRefErr != nil {
				iamRefErr = fmt.Errorf("%s: %w", f, iamRefErr)
				return
			}
			for a := range svc.Actions {
				svc.byLower[strings.ToLower(a)] = a
			}
			ref.services[name] = svc
		}
		if len(ref.global) == 0 {
			iamRefErr = fmt.Errorf("%s: no global condition keys", iamDataDir)
			return
		}
		iamRefData = ref
	})
	return iamRefData, iamRefErr
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// keyPattern turns a reference condition key such as
// "aws:RequestTag/${TagKey}" into a case-insensitive regexp; condition
// keys are not case sensitive.
func keyPattern(k string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("(?i)^")
	for {
		i := strings.Index(k, "${")
		if i < 0 {
			break
		}
		j := strings.Index(k[i:], "}")
		if j < 0 {
			break
		}
		b.WriteString(regexp.QuoteMeta(k[:i]) + ".+")
		k = k[i+j+1:]
	}
	b.WriteString(regexp.QuoteMeta(k) + "$")
	return regexp.MustCompile(b.String())
}

func keyIn(key string, keys []string) bool {
	for _, k := range keys {
		if keyPattern(k).MatchString(key) {
			return true
		}
	}
	return false
}

func (r *iamRef) isGlobal(key string) bool {
	for _, g := range r.global {
		if g.MatchString(key) {
			return true
		}
	}
	return false
}

// actions resolves an action (or a wildcard) to the reference's actions.
func (r *iamRef) actions(action string) (*iamService, []string, error) {
	svcName, name, ok := strings.Cut(action, ":")
	if !ok {
		return nil, nil, fmt.Errorf("action %q has no service prefix", action)
	}
	svc := r.services[strings.ToLower(svcName)]
	if svc == nil {
		return nil, nil, fmt.Errorf("action %q: service %q is not in the pinned reference data (add it to %s/refresh.mjs)", action, svcName, iamDataDir)
	}
	if !strings.ContainsAny(name, "*?") {
		if a, ok := svc.byLower[strings.ToLower(name)]; ok {
			return svc, []string{a}, nil
		}
		return nil, nil, fmt.Errorf("unknown action %q", action)
	}
	var out []string
	for a := range svc.Actions {
		if globMatch(name, a, true) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("action pattern %q matches no action", action)
	}
	sort.Strings(out)
	return svc, out, nil
}

// matchingTypes are the resource types of the action whose ARN format the
// policy's resource ARN can match.
func matchingTypes(svc *iamService, act iamAction, resource string) []string {
	var out []string
	for rt := range act.ResourceTypes {
		if arnCanMatch(svc.ResourceTypes[rt], resource) {
			out = append(out, rt)
		}
	}
	sort.Strings(out)
	return out
}

var arnVar = regexp.MustCompile(`\$\{[^}]*\}`)

// arnCanMatch: some ARN matches both the reference's format (variables
// such as ${ImageId} match anything within their segment) and the policy's
// resource (a glob). Partition, service, Region and account are compared
// segment by segment, so a wildcard cannot stand for a missing account.
func arnCanMatch(format, resource string) bool {
	if format == "" {
		return false
	}
	f := strings.SplitN(arnVar.ReplaceAllString(format, "*"), ":", 6)
	r := strings.SplitN(resource, ":", 6)
	if len(f) != 6 || len(r) != 6 {
		return false
	}
	for i := range f {
		if !globsIntersect(f[i], r[i]) {
			return false
		}
	}
	return true
}

// globsIntersect: some string matches both globs (* any run, ? one character).
func globsIntersect(a, b string) bool {
	memo := map[[2]int]bool{}
	seen := map[[2]int]bool{}
	var f func(i, j int) bool
	f = func(i, j int) bool {
		k := [2]int{i, j}
		if seen[k] {
			return memo[k]
		}
		seen[k] = true
		res := false
		switch {
		case i == len(a) && j == len(b):
			res = true
		case i < len(a) && a[i] == '*':
			// a's star matches nothing, or one more character of b.
			res = f(i+1, j) || (j < len(b) && f(i, j+1))
		case j < len(b) && b[j] == '*':
			res = f(i, j+1) || (i < len(a) && f(i+1, j))
		case i < len(a) && j < len(b) && (a[i] == b[j] || a[i] == '?' || b[j] == '?'):
			res = f(i+1, j+1)
		}
		memo[k] = res
		return res
	}
	return f(0, 0)
}

// policyStatement is one statement with its resources resolved to
// example ARNs (see arnResolver).
type policyStatement struct {
	where      string
	actions    []string
	notAction  bool
	resources  []string // nil: the policy's own resource (trust policy)
	condKeys   []string
	resolveErr []string
}

// iamFinding is one problem the check found.
type iamFinding struct{ Where, Problem string }

func (f iamFinding) String() string { return f.Where + ": " + f.Problem }

// checkIAMReference checks every policy document of the template.
func checkIAMReference(tmpl map[string]any) ([]iamFinding, error) {
	ref, err := loadIAMRef()
	if err != nil {
		return nil, err
	}
	sts, unhandled := policyStatements(tmpl)
	var out []iamFinding
	for _, u := range unhandled {
		out = append(out, iamFinding{u, "resource type holds a policy document the check does not read; teach policyStatements about it"})
	}
	for _, st := range sts {
		out = append(out, ref.checkStatement(st)...)
	}
	return out, nil
}

func (r *iamRef) checkStatement(st policyStatement) []iamFinding {
	var out []iamFinding
	add := func(format string, args ...any) {
		out = append(out, iamFinding{st.where, fmt.Sprintf(format, args...)})
	}
	for _, e := range st.resolveErr {
		add("%s", e)
	}
	for _, action := range st.actions {
		if action == "*" {
			if !st.notAction {
				add(`action "*"`)
			}
			continue
		}
		svc, names, err := r.actions(action)
		if err != nil {
			add("%v", err)
			continue
		}
		if st.notAction {
			continue // only that the excluded actions exist
		}
		// For a wildcard action, a resource or key is valid if it is for
		// one of the actions it stands for.
		resources := st.resources
		if resources == nil {
			resources = []string{""} // the policy's own resource
		}
		for _, res := range resources {
			var resErr error
			resOK := false
			keysOK := map[string]bool{}
			for _, name := range names {
				act := svc.Actions[name]
				valid := append([]string(nil), act.ConditionKeys...)
				switch {
				case res == "" || res == "*":
					for _, keys := range act.ResourceTypes {
						valid = append(valid, keys...)
					}
				case len(act.ResourceTypes) == 0:
					resErr = fmt.Errorf("%s has no resource types and needs Resource \"*\", not %s", action, res)
					continue
				default:
					types := matchingTypes(svc, act, res)
					if len(types) == 0 {
						var want []string
						for rt := range act.ResourceTypes {
							want = append(want, svc.ResourceTypes[rt])
						}
						sort.Strings(want)
						resErr = fmt.Errorf("%s: resource %s matches none of its resource types %v", action, res, want)
						continue
					}
					for _, rt := range types {
						valid = append(valid, act.ResourceTypes[rt]...)
					}
				}
				resOK = true
				for _, k := range st.condKeys {
					if r.isGlobal(k) || keyIn(k, valid) {
						keysOK[k] = true
					}
				}
			}
			if !resOK {
				add("%v", resErr)
				continue
			}
			for _, k := range st.condKeys {
				if keysOK[k] {
					continue
				}
				if res == "" {
					add("condition key %s is not valid for %s", k, action)
				} else {
					add("condition key %s is not valid for %s on %s", k, action, res)
				}
			}
		}
	}
	return out
}

// policyStatements collects the statements of every policy document of
// the template, and the resources with a policy document it cannot read.
func policyStatements(tmpl map[string]any) ([]policyStatement, []string) {
	resolve := arnResolver(tmpl)
	var out []policyStatement
	var unhandled []string
	addDoc := func(where string, doc any) {
		d, _ := doc.(map[string]any)
		list, ok := d["Statement"].([]any)
		if !ok {
			list = []any{d["Statement"]}
		}
		for i, s := range list {
			m, _ := s.(map[string]any)
			st := policyStatement{}
			sid, _ := m["Sid"].(string)
			st.where = fmt.Sprintf("%s statement %d %s", where, i, sid)
			if a, ok := m["NotAction"]; ok {
				st.actions, st.notAction = asList(a), true
			} else {
				st.actions = asList(m["Action"])
			}
			resVal, hasRes := m["Resource"]
			if !hasRes {
				resVal, hasRes = m["NotResource"]
			}
			if hasRes {
				vals, ok := resVal.([]any)
				if !ok {
					vals = []any{resVal}
				}
				st.resources = []string{}
				for _, v := range vals {
					arn, err := resolve(v)
					if err != nil {
						st.resolveErr = append(st.resolveErr, err.Error())
						continue
					}
					st.resources = append(st.resources, arn)
				}
				if _, not := m["NotResource"]; not {
					st.resources = nil // keys and actions only
				}
			}
			cond, _ := m["Condition"].(map[string]any)
			for _, keys := range cond {
				km, _ := keys.(map[string]any)
				for k := range km {
					st.condKeys = append(st.condKeys, k)
				}
			}
			sort.Strings(st.condKeys)
			out = append(out, st)
		}
	}
	ids := make([]string, 0)
	for id := range tmpl["Resources"].(map[string]any) {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r := tmpl["Resources"].(map[string]any)[id].(map[string]any)
		typ, _ := r["Type"].(string)
		p, _ := r["Properties"].(map[string]any)
		where := id + " (" + typ + ")"
		switch typ {
		case "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy":
			addDoc(where, p["PolicyDocument"])
		case "AWS::IAM::Role":
			// A trust policy's resource is the role itself.
			addDoc(where+" trust policy", p["AssumeRolePolicyDocument"])
			if ps, ok := p["Policies"].([]any); ok {
				for _, ip := range ps {
					m, _ := ip.(map[string]any)
					addDoc(fmt.Sprintf("%s inline policy %v", where, m["PolicyName"]), m["PolicyDocument"])
				}
			}
		case "AWS::KMS::Key":
			// Resource "*" in a key policy is the key itself.
			addDoc(where+" key policy", p["KeyPolicy"])
		case "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy":
			addDoc(where, p["PolicyDocument"])
		case "AWS::Lambda::Permission":
			// A permission is one statement of the function's policy.
			cond := map[string]any{}
			if v, ok := p["SourceArn"]; ok {
				cond["ArnLike"] = map[string]any{"aws:SourceArn": v}
			}
			if v, ok := p["SourceAccount"]; ok {
				cond["StringEquals"] = map[string]any{"aws:SourceAccount": v}
			}
			stmt := map[string]any{"Action": p["Action"], "Resource": p["FunctionName"], "Condition": cond}
			addDoc(where, map[string]any{"Statement": []any{stmt}})
		default:
			b, _ := json.Marshal(p)
			if strings.Contains(string(b), `"Statement"`) {
				unhandled = append(unhandled, where)
			}
		}
	}
	return out, unhandled
}

// Example values the check puts in for the template's tokens.
const (
	examplePartition = "aws"
	exampleRegion    = "us-east-1"
	exampleAccount   = "123456789012"
)

// arnResolver resolves a policy's Resource value (a string or an
// intrinsic function) to an example ARN: pseudo parameters become example
// values, Ref and Fn::GetAtt of the template's resources the ARN their
// type would have.
func arnResolver(tmpl map[string]any) func(v any) (string, error) {
	resources := tmpl["Resources"].(map[string]any)
	pseudo := map[string]string{"AWS::Partition": examplePartition, "AWS::Region": exampleRegion,
		"AWS::AccountId": exampleAccount, "AWS::URLSuffix": "amazonaws.com"}
	prefix := "arn:" + examplePartition + ":%s:" + exampleRegion + ":" + exampleAccount + ":%s"
	arnOf := func(id, attr string) (string, error) {
		r, ok := resources[id].(map[string]any)
		if !ok {
			return "", fmt.Errorf("reference to unknown resource %s", id)
		}
		typ, _ := r["Type"].(string)
		type key struct{ typ, attr string }
		formats := map[key][2]string{
			{"AWS::SNS::Topic", "Ref"}:                  {"sns", "%s"},
			{"AWS::SNS::Topic", "TopicArn"}:             {"sns", "%s"},
			{"AWS::SQS::Queue", "Arn"}:                  {"sqs", "%s"},
			{"AWS::KMS::Key", "Arn"}:                    {"kms", "key/%s"},
			{"AWS::Logs::LogGroup", "Arn"}:              {"logs", "log-group:%s:*"}, // CloudFormation's Arn ends in :*
			{"AWS::Lambda::Function", "Arn"}:            {"lambda", "function:%s"},
			{"AWS::Events::Rule", "Arn"}:                {"events", "rule/%s"},
			{"AWS::CloudWatch::Alarm", "Arn"}:           {"cloudwatch", "alarm:%s"},
			{"AWS::Scheduler::ScheduleGroup", "Arn"}:    {"scheduler", "schedule-group/%s"},
			{"AWS::Scheduler::Schedule", "Arn"}:         {"scheduler", "schedule/default/%s"},
			{"AWS::StepFunctions::StateMachine", "Ref"}: {"states", "stateMachine:%s"},
			{"AWS::StepFunctions::StateMachine", "Arn"}: {"states", "stateMachine:%s"},
		}
		// EC2 network resources resolve to their IDs, which policies put
		// into ARNs themselves (the verification network).
		if idPrefix, ok := map[key]string{{"AWS::EC2::Subnet", "Ref"}: "subnet-", {"AWS::EC2::SecurityGroup", "GroupId"}: "sg-",
			{"AWS::EC2::VPC", "Ref"}: "vpc-", {"AWS::EC2::VPC", "DefaultSecurityGroup"}: "sg-"}[key{typ, attr}]; ok {
			return idPrefix + "0123456789abcdef0", nil
		}
		if typ == "AWS::IAM::Role" && attr == "Arn" {
			return "arn:" + examplePartition + ":iam::" + exampleAccount + ":role/" + id, nil
		}
		f, ok := formats[key{typ, attr}]
		if !ok {
			return "", fmt.Errorf("cannot resolve %s of %s (%s) to an ARN", attr, id, typ)
		}
		return fmt.Sprintf(prefix, f[0], fmt.Sprintf(f[1], id)), nil
	}
	var resolve func(v any) (string, error)
	resolve = func(v any) (string, error) {
		switch x := v.(type) {
		case string:
			return x, nil
		case map[string]any:
			if r, ok := x["Ref"].(string); ok {
				if p, ok := pseudo[r]; ok {
					return p, nil
				}
				return arnOf(r, "Ref")
			}
			if g, ok := x["Fn::GetAtt"].([]any); ok && len(g) == 2 {
				return arnOf(fmt.Sprint(g[0]), fmt.Sprint(g[1]))
			}
			if j, ok := x["Fn::Join"].([]any); ok && len(j) == 2 {
				parts, _ := j[1].([]any)
				var s []string
				for _, p := range parts {
					r, err := resolve(p)
					if err != nil {
						return "", err
					}
					s = append(s, r)
				}
				return strings.Join(s, fmt.Sprint(j[0])), nil
			}
		}
		b, _ := json.Marshal(v)
		return "", fmt.Errorf("cannot resolve resource %s", b)
	}
	return resolve
}
