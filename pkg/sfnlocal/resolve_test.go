package sfnlocal

import (
	"encoding/json"
	"strings"
	"testing"
)

// template builds a CloudFormation template with a function Fn, a bucket
// Bucket and the state machine Machine whose DefinitionString is def.
func template(def string) []byte {
	return []byte(`{"Resources":{
	  "Fn":{"Type":"AWS::Lambda::Function","Properties":{}},
	  "Bucket":{"Type":"AWS::S3::Bucket","Properties":{}},
	  "Machine":{"Type":"AWS::StepFunctions::StateMachine","Properties":{"DefinitionString":` + def + `}}}}`)
}

func TestResolve(t *testing.T) {
	joined := `{"Fn::Join":["",["{\"StartAt\":\"A\",\"States\":{\"A\":{\"Type\":\"Task\",\"Resource\":\"arn:",{"Ref":"AWS::Partition"},
	  ":states:::lambda:invoke\",\"Parameters\":{\"FunctionName\":\"",{"Fn::GetAtt":["Fn","Arn"]},"\",\"Payload.$\":\"$\"},\"Comment\":\"",
	  {"Ref":"AWS::Region"},"/",{"Ref":"AWS::AccountId"},"/",{"Fn::GetAtt":"Fn.Arn"},"\",\"End\":true}}}"]]}`
	for _, tc := range []struct {
		name, def   string
		arns        map[string]string
		wantFn, cmt string
	}{
		{"join with local ARNs", joined, nil, LocalFunctionARN("Fn"), "us-east-1/123456789012/" + LocalFunctionARN("Fn")},
		{"join with given ARNs", joined, map[string]string{"Fn": "arn:aws:lambda:eu-west-1:111122223333:function:work"},
			"arn:aws:lambda:eu-west-1:111122223333:function:work", "us-east-1/123456789012/arn:aws:lambda:eu-west-1:111122223333:function:work"},
		{"plain string", `"{\"StartAt\":\"A\",\"States\":{\"A\":{\"Type\":\"Pass\",\"Comment\":\"c\",\"Parameters\":{\"FunctionName\":\"f\"},\"End\":true}}}"`, nil, "f", "c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			def, err := Resolve(template(tc.def), "", tc.arns)
			if err != nil {
				t.Fatal(err)
			}
			var d struct {
				States map[string]struct {
					Resource, Comment string
					Parameters        struct{ FunctionName string }
				}
			}
			if err := json.Unmarshal(def, &d); err != nil {
				t.Fatalf("%v: %s", err, def)
			}
			a := d.States["A"]
			if a.Parameters.FunctionName != tc.wantFn || a.Comment != tc.cmt {
				t.Errorf("resolved %s", def)
			}
		})
	}
	if fns, err := Functions(template(joined), "Machine"); err != nil || strings.Join(fns, ",") != "Fn" {
		t.Errorf("Functions = %v, %v", fns, err)
	}
}

func TestResolveErrors(t *testing.T) {
	wrap := func(part string) string { return `{"Fn::Join":["",["{\"StartAt\":\"",` + part + `,"\"}"]]}` }
	for _, tc := range []struct{ name, tmpl, id, want string }{
		{"unknown intrinsic", string(template(wrap(`{"Fn::Sub":"x"}`))), "", "unsupported intrinsic Fn::Sub"},
		{"unknown Ref", string(template(wrap(`{"Ref":"Bucket"}`))), "", "unsupported Ref Bucket"},
		{"GetAtt of a bucket", string(template(wrap(`{"Fn::GetAtt":["Bucket","Arn"]}`))), "", "Fn::GetAtt Bucket.Arn of a AWS::S3::Bucket"},
		{"GetAtt of a missing resource", string(template(wrap(`{"Fn::GetAtt":["Gone","Arn"]}`))), "", "no resource Gone"},
		{"GetAtt of another attribute", string(template(wrap(`{"Fn::GetAtt":["Fn","Name"]}`))), "", "Fn::GetAtt Fn.Name"},
		{"not JSON", string(template(`"{not json"`)), "", "is not JSON"},
		{"no such machine", string(template(`"{}"`)), "Other", "Other is not an AWS::StepFunctions::StateMachine"},
		{"two machines", `{"Resources":{"A":{"Type":"AWS::StepFunctions::StateMachine"},"B":{"Type":"AWS::StepFunctions::StateMachine"}}}`, "", "2 state machines [A B]"},
		{"substitutions", `{"Resources":{"A":{"Type":"AWS::StepFunctions::StateMachine","Properties":{"DefinitionString":"{}","DefinitionSubstitutions":{}}}}}`, "", "DefinitionSubstitutions is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve([]byte(tc.tmpl), tc.id, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
