package localrun

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestTemplateEnvTokens: a function whose variables include tokens (the
// verify network's IDs: Fn::Join, Ref) still yields its plain variables,
// the tokens left to the caller; before, the whole template failed to parse.
func TestTemplateEnvTokens(t *testing.T) {
	tmpl := `{"Resources":{
	  "VerifyFunction1234":{"Type":"AWS::Lambda::Function","Properties":{
	    "Environment":{"Variables":{"AMIBACKUP_CONFIG":"{\"deployment\":\"AmiBackup\"}","PLAIN":"x",
	      "AMIBACKUP_VERIFY_SUBNETS":{"Fn::Join":[",",[{"Ref":"VerifyVpcSubnet1"},{"Ref":"VerifyVpcSubnet2"}]]},
	      "AMIBACKUP_VERIFY_SECURITY_GROUP":{"Fn::GetAtt":["VerifySg","GroupId"]}}},
	    "LoggingConfig":{"LogFormat":"JSON","ApplicationLogLevel":"INFO"}}},
	  "BackupFunction99":{"Type":"AWS::Lambda::Function","Properties":{"Environment":{"Variables":{"AMIBACKUP_CONFIG":"{}"}}}}}}`
	path := filepath.Join(t.TempDir(), "t.json")
	if err := os.WriteFile(path, []byte(tmpl), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"Verify", []string{`AMIBACKUP_CONFIG={"deployment":"AmiBackup"}`, "PLAIN=x", "AWS_LAMBDA_LOG_FORMAT=JSON", "AWS_LAMBDA_LOG_LEVEL=INFO"}},
		{"Backup", []string{"AMIBACKUP_CONFIG={}"}},
	} {
		got, err := TemplateEnv(path, c.prefix)
		if err != nil {
			t.Fatalf("%s: %v", c.prefix, err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.prefix, got, c.want)
		}
	}
}
