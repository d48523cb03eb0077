package stacks

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3assets"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/lambdabuild"
)

// goBundler builds a function's bootstrap locally during synth; no Docker.
// Methods have pointer receivers: jsii calls back into the Go value through
// the ILocalBundling interface.
type goBundler struct {
	root, function string
}

// TryBundle implements awscdk.ILocalBundling.
func (b *goBundler) TryBundle(outputDir *string, _ *awscdk.BundlingOptions) *bool {
	args := append([]string{"build"}, lambdabuild.Flags...)
	args = append(args, "-o", filepath.Join(*outputDir, "bootstrap"), "./functions/"+b.function)
	cmd := exec.Command("go", args...)
	cmd.Dir = b.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+lambdabuild.GOOS, "GOARCH="+lambdabuild.GOARCH)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "amibackup: go build of functions/%s failed: %v\n", b.function, err)
		return jsii.Bool(false)
	}
	return jsii.Bool(true)
}

// functionCode is the asset of one function, bundled locally and hashed
// over the Go sources it is built from, so the same source always gives the
// same asset hash and a re-deploy without code changes updates nothing.
func functionCode(root, function string) (awslambda.Code, error) {
	hash, err := SourceHash(root, function)
	if err != nil {
		return nil, err
	}
	return awslambda.Code_FromAsset(jsii.String(filepath.Join(root, "functions", function)), &awss3assets.AssetOptions{
		AssetHash:     jsii.String(hash),
		AssetHashType: awscdk.AssetHashType_CUSTOM,
		Bundling: &awscdk.BundlingOptions{
			// Docker is never used: the local bundler always succeeds or fails synth.
			Image: awscdk.DockerImage_FromRegistry(jsii.String("public.ecr.aws/docker/library/golang:1.26")),
			Local: &goBundler{root: root, function: function},
		},
	}), nil
}

// SourceHash hashes go.mod, go.sum, the function's package and all non-test
// Go files under pkg/ (paths and contents, in sorted order).
func SourceHash(root, function string) (string, error) {
	var files []string
	for _, dir := range []string{filepath.Join("functions", function), "pkg"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("hash sources of %s: %w", function, err)
		}
	}
	files = append(files, filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		fmt.Fprintf(h, "%s\x00", filepath.ToSlash(rel))
		fh, err := os.Open(f)
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", rel, err)
		}
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", rel, err)
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
