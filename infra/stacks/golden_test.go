package stacks

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// updateGolden rewrites testdata/golden from the current synth. Only for a
// deliberate change of the templates: a refactor must leave them as they are.
var updateGolden = flag.Bool("update-golden", false, "rewrite infra/stacks/testdata/golden from the current synth")

// goldenConfigs are every configuration the suite synthesizes, by the
// name of their golden file.
func goldenConfigs(t *testing.T) map[string]string {
	t.Helper()
	longest := longestConfigs(t)
	return map[string]string{
		"default":              defaultConfig(t),
		"two-policies":         testConfig,
		"sharing":              sharingConfig,
		"guardrails":           guardConfig,
		"recovery":             recoveryConfig,
		"recovery-same-region": sameRegionRecoveryConfig,
		"waves":                wavesConfig,
		"verify":               verifyConfig,
		"longest-backup":       longest["backup"],
		"longest-recovery":     longest["recovery"],
	}
}

// TestTemplatesMatchGolden: the synthesized templates equal the committed
// ones, resource by resource (logical IDs included: a changed logical ID
// replaces the resource on deploy), property by property, after
// normaliseTemplate. It proves that a refactor of the stacks changes no
// behaviour; a deliberate change rewrites the files with -update-golden
// and shows up in review as their diff.
func TestTemplatesMatchGolden(t *testing.T) {
	configs := goldenConfigs(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	for _, f := range files {
		if _, ok := configs[strings.TrimSuffix(filepath.Base(f), ".json")]; !ok {
			t.Errorf("%s belongs to no configuration of goldenConfigs: remove it or add its configuration", f)
		}
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			_, tmpl := synthCached(t, cfg)
			got, err := normaliseTemplate(tmpl)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join("testdata", "golden", name+".json")
			if *updateGolden {
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./infra/stacks -run TestTemplatesMatchGolden -update-golden once to create it)", err)
			}
			if bytes.Equal(got, want) {
				return
			}
			diffs, err := templateDiff(want, got)
			if err != nil {
				t.Fatal(err)
			}
			t.Errorf("template of %q differs from %s (- golden, + synth); if the change is intended, rerun with -update-golden and review the files' diff:\n%s",
				name, file, strings.Join(diffs, "\n"))
		})
	}
}

// assetKey matches an asset's S3 key: the hash of its content. The
// functions' hash (SourceHash) follows every source under pkg/, which
// changes without any change to the stacks.
var assetKey = regexp.MustCompile(`^[0-9a-f]{64}\.zip$`)

// normaliseTemplate is the template as golden files hold it: asset S3 keys
// replaced by <asset-hash>.zip, the statements of every policy document
// and every DependsOn list sorted (their order has no meaning to IAM or
// CloudFormation), keys sorted, indented. Logical IDs stay as they are.
func normaliseTemplate(tmpl map[string]any) ([]byte, error) {
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	normalise(v, "")
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// normalise replaces asset keys and sorts, in place, the lists whose order
// means nothing: policy statements and DependsOn.
func normalise(v any, key string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "S3Key" && assetKey.MatchString(s) {
				x[k] = "<asset-hash>.zip"
				continue
			}
			normalise(e, k)
		}
	case []any:
		for _, e := range x {
			normalise(e, "")
		}
		if key == "Statement" || key == "DependsOn" {
			sort.SliceStable(x, func(i, j int) bool { return canonical(x[i]) < canonical(x[j]) })
		}
	}
}

func canonical(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}

// templateDiff lists where two normalised templates differ, one line per
// difference, by path (Resources.<logical ID> (<type>).Properties...).
func templateDiff(golden, synth []byte) ([]string, error) {
	var a, b any
	if err := json.Unmarshal(golden, &a); err != nil {
		return nil, fmt.Errorf("golden: %w", err)
	}
	if err := json.Unmarshal(synth, &b); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	var out []string
	diffValue(&out, "", a, b)
	return out, nil
}

func short(v any) string {
	s := canonical(v)
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func resourceType(rs ...any) string {
	for _, r := range rs {
		if m, ok := r.(map[string]any); ok {
			if typ, ok := m["Type"].(string); ok {
				return typ
			}
		}
	}
	return "?"
}

func diffValue(out *[]string, path string, a, b any) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		slices.Sort(sorted)
		for _, k := range sorted {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if path == "Resources" {
				p += " (" + resourceType(am[k], bm[k]) + ")"
			}
			av, ina := am[k]
			bv, inb := bm[k]
			switch {
			case !inb:
				*out = append(*out, fmt.Sprintf("- %s: %s", p, short(av)))
			case !ina:
				*out = append(*out, fmt.Sprintf("+ %s: %s", p, short(bv)))
			default:
				diffValue(out, p, av, bv)
			}
		}
		return
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok {
		if len(al) == len(bl) {
			for i := range al {
				diffValue(out, fmt.Sprintf("%s[%d]", path, i), al[i], bl[i])
			}
			return
		}
		// Different lengths: the elements one side has and the other lacks.
		count := map[string]int{}
		for _, e := range bl {
			count[canonical(e)]++
		}
		for _, e := range al {
			if c := canonical(e); count[c] > 0 {
				count[c]--
			} else {
				*out = append(*out, fmt.Sprintf("- %s[]: %s", path, short(e)))
			}
		}
		for _, e := range bl {
			if c := canonical(e); count[c] > 0 {
				count[c]--
				*out = append(*out, fmt.Sprintf("+ %s[]: %s", path, short(e)))
			}
		}
		return
	}
	if canonical(a) != canonical(b) {
		*out = append(*out, fmt.Sprintf("- %s: %s", path, short(a)), fmt.Sprintf("+ %s: %s", path, short(b)))
	}
}

// TestTemplateDiffReports proves the golden comparison can fail and says
// where: a renamed logical ID, a changed IAM statement, an added statement
// and a changed property are each reported; statement order and asset
// hashes are not differences.
func TestTemplateDiffReports(t *testing.T) {
	tmpl := func(fnID, action string, extra bool, memory float64, hash string) []byte {
		sts := []any{
			map[string]any{"Sid": "B", "Effect": "Allow", "Action": action, "Resource": "*"},
			map[string]any{"Sid": "A", "Effect": "Allow", "Action": "ec2:DescribeImages", "Resource": "*"},
		}
		if extra {
			sts = append(sts, map[string]any{"Sid": "C", "Effect": "Allow", "Action": "ec2:DeleteVolume", "Resource": "*"})
		}
		b, err := normaliseTemplate(map[string]any{"Resources": map[string]any{
			"PolicyX": map[string]any{"Type": "AWS::IAM::Policy", "Properties": map[string]any{"PolicyDocument": map[string]any{"Statement": sts}}},
			fnID: map[string]any{"Type": "AWS::Lambda::Function", "Properties": map[string]any{"MemorySize": memory,
				"Code": map[string]any{"S3Key": hash + ".zip"}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	h1, h2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	golden := tmpl("Backup1234", "ec2:CreateImage", false, 256, h1)
	for _, tc := range []struct {
		name  string
		synth []byte
		want  []string
	}{
		{"same but asset hash", tmpl("Backup1234", "ec2:CreateImage", false, 256, h2), nil},
		{"logical ID", tmpl("Backup5678", "ec2:CreateImage", false, 256, h1),
			[]string{"- Resources.Backup1234 (AWS::Lambda::Function)", "+ Resources.Backup5678 (AWS::Lambda::Function)"}},
		{"statement changed", tmpl("Backup1234", "ec2:CreateImages", false, 256, h1),
			[]string{`- Resources.PolicyX (AWS::IAM::Policy).Properties.PolicyDocument.Statement[0].Action: "ec2:CreateImage"`,
				`+ Resources.PolicyX (AWS::IAM::Policy).Properties.PolicyDocument.Statement[0].Action: "ec2:CreateImages"`}},
		{"statement added", tmpl("Backup1234", "ec2:CreateImage", true, 256, h1),
			[]string{`+ Resources.PolicyX (AWS::IAM::Policy).Properties.PolicyDocument.Statement[]: {"Action":"ec2:DeleteVolume"`}},
		{"property", tmpl("Backup1234", "ec2:CreateImage", false, 512, h1),
			[]string{"- Resources.Backup1234 (AWS::Lambda::Function).Properties.MemorySize: 256", "+ Resources.Backup1234 (AWS::Lambda::Function).Properties.MemorySize: 512"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diffs, err := templateDiff(golden, tc.synth)
			if err != nil {
				t.Fatal(err)
			}
			if (tc.want == nil) != bytes.Equal(golden, tc.synth) {
				t.Errorf("normalised templates equal: %v, want %v", bytes.Equal(golden, tc.synth), tc.want == nil)
			}
			if len(diffs) != len(tc.want) {
				t.Fatalf("diff %q, want %d lines %q", diffs, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(diffs[i], w) {
					t.Errorf("diff line %d = %q, want prefix %q", i, diffs[i], w)
				}
			}
		})
	}
}
