package sfnlocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

var (
	lambdaInvoke   = regexp.MustCompile(`^arn:[^:]+:states:::lambda:invoke$`)
	lambdaFunction = regexp.MustCompile(`^arn:[^:]+:lambda:[^:]+:\d{12}:function:[^:]+(:[^:]+)?$`)
)

// Unsupported reports every construct of def that aws-local-stepfunctions
// 3.0.0 silently ignores or cannot run, so an execution of def would differ
// from AWS: JSONata, variables (Assign) and JSONata fields (Arguments,
// Output), Distributed Map (ItemReader, ItemBatcher, ResultWriter,
// ProcessorConfig.Mode DISTRIBUTED, ToleratedFailure*, Label), task
// heartbeats, .sync and .waitForTaskToken integrations, Credentials, and any
// task that is not a synchronous Lambda invocation, and paths into the
// context object's State and Task fields. nil when def is clean.
func Unsupported(def []byte) error {
	var d map[string]any
	if err := json.Unmarshal(def, &d); err != nil {
		return fmt.Errorf("sfnlocal: definition is not a JSON object: %w", err)
	}
	var found []string
	add := func(path, what string) { found = append(found, path+": "+what) }
	if ql, ok := d["QueryLanguage"]; ok && ql != "JSONPath" {
		add("QueryLanguage", fmt.Sprintf("%v is not supported (JSONPath only)", ql))
	}
	walkStates(d, "", add)
	if len(found) == 0 {
		return nil
	}
	sort.Strings(found)
	return fmt.Errorf("sfnlocal: the local engine would not run this definition as AWS does:\n  %s", strings.Join(found, "\n  "))
}

// ignoredEverywhere are fields of states (and of Catch and Choice rules)
// that the engine ignores without a word.
var ignoredEverywhere = map[string]string{
	"Assign":    "variables are not supported (the engine ignores Assign)",
	"Arguments": "JSONata Arguments are ignored (use Parameters)",
	"Output":    "JSONata Output is ignored (use ResultSelector/ResultPath/OutputPath)",
}

var ignoredInTask = map[string]string{
	"HeartbeatSeconds":     "task heartbeats are ignored",
	"HeartbeatSecondsPath": "task heartbeats are ignored",
	"Credentials":          "cross-account Credentials are ignored",
}

var ignoredInMap = map[string]string{
	"ItemReader":                     "Distributed Map ItemReader is not supported",
	"ItemBatcher":                    "Distributed Map ItemBatcher is not supported",
	"ResultWriter":                   "Distributed Map ResultWriter is not supported",
	"ToleratedFailurePercentage":     "ToleratedFailurePercentage is ignored (any failed iteration fails the Map)",
	"ToleratedFailurePercentagePath": "ToleratedFailurePercentagePath is ignored",
	"ToleratedFailureCount":          "ToleratedFailureCount is ignored (any failed iteration fails the Map)",
	"ToleratedFailureCountPath":      "ToleratedFailureCountPath is ignored",
	"Label":                          "Distributed Map Label is not supported",
}

func walkStates(machine map[string]any, prefix string, add func(path, what string)) {
	states, _ := machine["States"].(map[string]any)
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s, ok := states[name].(map[string]any)
		if !ok {
			continue
		}
		p := prefix + "States." + name
		if ql, ok := s["QueryLanguage"]; ok && ql != "JSONPath" {
			add(p+".QueryLanguage", fmt.Sprintf("%v is not supported (JSONPath only)", ql))
		}
		flag(s, p, ignoredEverywhere, add)
		contextPaths(s, p, add)
		for _, list := range []string{"Catch", "Choices"} {
			items, _ := s[list].([]any)
			for i, it := range items {
				if m, ok := it.(map[string]any); ok {
					flag(m, fmt.Sprintf("%s.%s[%d]", p, list, i), ignoredEverywhere, add)
					if _, ok := m["Condition"]; ok {
						add(fmt.Sprintf("%s.%s[%d].Condition", p, list, i), "JSONata conditions are not supported")
					}
				}
			}
		}
		switch s["Type"] {
		case "Task":
			flag(s, p, ignoredInTask, add)
			checkResource(s, p, add)
		case "Map":
			flag(s, p, ignoredInMap, add)
			inner, _ := s["ItemProcessor"].(map[string]any)
			if inner == nil {
				inner, _ = s["Iterator"].(map[string]any)
			}
			if inner != nil {
				if pc, ok := inner["ProcessorConfig"].(map[string]any); ok && pc["Mode"] == "DISTRIBUTED" {
					add(p+".ItemProcessor.ProcessorConfig.Mode", "Distributed Map is not supported (use INLINE)")
				}
				walkStates(inner, p+".ItemProcessor.", add)
			}
		case "Parallel":
			branches, _ := s["Branches"].([]any)
			for i, b := range branches {
				if m, ok := b.(map[string]any); ok {
					walkStates(m, fmt.Sprintf("%s.Branches[%d].", p, i), add)
				}
			}
		}
	}
}

// contextPaths flags references to the context object's State and Task
// fields, which the engine does not fill ($$.Execution and $$.StateMachine
// come from Options, $$.Map from the engine).
func contextPaths(v any, path string, add func(path, what string)) {
	switch v := v.(type) {
	case string:
		for _, f := range []string{"$$.State.", "$$.Task."} {
			if strings.Contains(v, f) {
				add(path, fmt.Sprintf("%s is not in the local context object (%q)", strings.TrimSuffix(f, "."), v))
			}
		}
	case map[string]any:
		for k, x := range v {
			// Nested states are walked by walkStates with their own paths.
			if k == "ItemProcessor" || k == "Iterator" || k == "Branches" {
				continue
			}
			contextPaths(x, path+"."+k, add)
		}
	case []any:
		for i, x := range v {
			contextPaths(x, fmt.Sprintf("%s[%d]", path, i), add)
		}
	}
}

func flag(s map[string]any, path string, fields map[string]string, add func(path, what string)) {
	for f, what := range fields {
		if _, ok := s[f]; ok {
			add(path+"."+f, what)
		}
	}
}

func checkResource(s map[string]any, p string, add func(path, what string)) {
	res, _ := s["Resource"].(string)
	switch {
	case strings.HasSuffix(res, ".waitForTaskToken"):
		add(p+".Resource", res+": .waitForTaskToken is not supported")
	case strings.Contains(res, ".sync"):
		add(p+".Resource", res+": .sync integrations are not supported")
	case lambdaInvoke.MatchString(res):
		params, _ := s["Parameters"].(map[string]any)
		if it, ok := params["InvocationType"]; ok && it != "RequestResponse" {
			add(p+".Parameters.InvocationType", fmt.Sprintf("%v is not supported (RequestResponse only)", it))
		}
		if _, ok := params["InvocationType.$"]; ok {
			add(p+".Parameters.InvocationType.$", "a dynamic InvocationType is not supported (RequestResponse only)")
		}
	case lambdaFunction.MatchString(res):
	default:
		add(p+".Resource", fmt.Sprintf("%q is not a Lambda function ARN or arn:aws:states:::lambda:invoke (only Lambda tasks run locally)", res))
	}
}

// Check fails when def uses a construct the local engine would run
// differently from AWS (Unsupported) or when asl-validator 4.0.0 rejects it
// (schema, missing or unreachable states, bad paths and ARNs). All problems
// are reported at once.
func (e *Engine) Check(ctx context.Context, def []byte) error {
	errs := []error{Unsupported(def)}
	if json.Valid(def) {
		var out struct {
			Valid  bool
			Errors []string
		}
		if err := e.call(ctx, map[string]any{"mode": "validate", "definition": json.RawMessage(def)}, &out); err != nil {
			return err
		}
		if !out.Valid {
			errs = append(errs, fmt.Errorf("sfnlocal: asl-validator:\n  %s", strings.Join(out.Errors, "\n  ")))
		}
	}
	return errors.Join(errs...)
}
